"""Clients of a TF Serving deployment of the pushed model: REST and gRPC.

    client = RestClient("http://localhost:8501", "fer2013-dcnn")     # or
    client = GrpcClient("localhost:8500", "fer2013-dcnn")
    client.model_status()                     # [{'version': '1795…', 'state': 'AVAILABLE'}]
    client.predict_images([jpeg_bytes, ...])  # [Prediction(label='happy', probabilities={...})]

Both speak TF Serving's documented APIs (REST: /v1/models/<name>[/versions/<v>]
with `:predict` and `/metadata`; gRPC: tensorflow.serving.PredictionService and
ModelService). Signature and tensor names come from `pipeline.features`.

Errors: `ModelNotFound` (unknown model or version), `BadRequest` (the server
rejected the payload), `ServerError` (any other non-success answer),
`Unavailable` (could not reach the server after the retries). Only transient
failures are retried (connection errors, timeouts, HTTP 429/502/503/504, gRPC
UNAVAILABLE/RESOURCE_EXHAUSTED/DEADLINE_EXCEEDED), with exponential backoff.
Nothing here logs image bytes: errors carry the server's message, truncated.
"""
import base64
import dataclasses
import json
import time
import urllib.error
import urllib.request
from typing import Callable, Dict, List, Optional, Sequence

from pipeline import features

DEFAULT_TIMEOUT_S = 10.0
_TRANSIENT_HTTP = (429, 502, 503, 504)
_MAX_MESSAGE = 300


class ServingError(RuntimeError):
    """Any failure talking to TF Serving."""


class ModelNotFound(ServingError):
    """The model (or the requested version) is not served."""


class BadRequest(ServingError):
    """The server rejected the request (bad payload, bad signature or tensor name)."""


class ServerError(ServingError):
    """The server answered with an error that is not the client's fault."""


class Unavailable(ServingError):
    """The server could not be reached, or stayed overloaded, through every retry."""


class _Transient(ServingError):
    """An answer worth retrying (HTTP 429/502/503/504)."""


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One face: the most likely emotion and every class's probability."""
    label: str
    probabilities: Dict[str, float]

    def to_dict(self) -> Dict:
        return {"label": self.label,
                "probabilities": {k: round(v, 4) for k, v in self.probabilities.items()}}


def predictions_from_outputs(outputs: Dict[str, Sequence]) -> List[Prediction]:
    """Predictions from the three output tensors (as nested lists), in input order."""
    probabilities = outputs[features.PROBABILITIES_OUTPUT]
    labels = outputs[features.LABEL_OUTPUT]
    classes = outputs[features.CLASSES_OUTPUT]
    return [Prediction(_text(label), {_text(c): float(p) for c, p in zip(names, row)})
            for label, names, row in zip(labels, classes, probabilities)]


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _describe(error: Exception) -> str:
    """An error as a person reads it: a gRPC error's status and details (its str is a
    multi-line dump with a debug string), anything else as it prints."""
    code, details = getattr(error, "code", None), getattr(error, "details", None)
    if callable(code) and callable(details):
        return f"{code().name}: {details()}"
    return str(error)


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE] + "..."


def _retry(call: Callable, is_transient: Callable[[Exception], bool], retries: int,
           backoff_s: float, what: str):
    for attempt in range(retries + 1):
        try:
            return call()
        except Exception as e:  # noqa: BLE001 - classified just below
            if not is_transient(e):
                raise
            if attempt == retries:
                raise Unavailable(f"{what}: still failing after {retries + 1} attempts: "
                                  f"{_short(_describe(e))}") from e
            time.sleep(backoff_s * (2 ** attempt))


class RestClient:
    """TF Serving's REST API (port 8501 by default)."""

    def __init__(self, base_url: str, model_name: str, version: Optional[int] = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S, retries: int = 3, backoff_s: float = 0.2,
                 signature: str = features.PREDICT_IMAGE_SIGNATURE):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"REST server URL must start with http:// or https://, got {base_url!r}")
        self.model_name, self.signature = model_name, signature
        self._model_url = f"{base_url.rstrip('/')}/v1/models/{model_name}" + (
            f"/versions/{version}" if version is not None else "")
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s

    def _request(self, url: str, body: Optional[Dict] = None) -> Dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method="GET" if data is None else "POST",
                                         headers={"Content-Type": "application/json"})

        def call():
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as e:
                error = self._error(e.code, e.read())
                raise (_Transient(str(error)) if e.code in _TRANSIENT_HTTP else error) from None

        def transient(e: Exception) -> bool:
            return isinstance(e, (_Transient, urllib.error.URLError, TimeoutError, ConnectionError))

        return _retry(call, transient, self.retries, self.backoff_s, f"REST {url}")

    def _error(self, code: int, body: bytes) -> ServingError:
        try:
            message = json.loads(body).get("error", "")
        except (ValueError, AttributeError):
            message = body.decode(errors="replace")
        text = f"HTTP {code} from {self._model_url}: {_short(message)}"
        # 404, or TF Serving's "Servable not found for request: ..." under another code; a
        # signature or input that is "not found" in a model that is there is a bad request.
        if code == 404 or "servable not found" in message.lower():
            return ModelNotFound(text)
        if code == 400:
            return BadRequest(text)
        return ServerError(text)

    def model_status(self) -> List[Dict[str, str]]:
        answer = self._request(self._model_url)
        return [{"version": str(v["version"]), "state": v["state"]}
                for v in answer.get("model_version_status", [])]

    def model_metadata(self) -> Dict:
        return self._request(f"{self._model_url}/metadata")

    def signature_names(self) -> List[str]:
        """The served model's signatures, from its metadata."""
        return sorted(self.model_metadata()["metadata"]["signature_def"]["signature_def"])

    def predict_images(self, images: Sequence[bytes]) -> List[Prediction]:
        """Classifies encoded images (JPEG/PNG/...) with `self.signature` (`predict_image`
        unless told otherwise, or one of its test-time-view variants)."""
        if not images:
            return []
        body = {"signature_name": self.signature,
                "instances": [{"b64": base64.b64encode(image).decode()} for image in images]}
        answer = self._request(f"{self._model_url}:predict", body)
        rows = answer.get("predictions")
        keys = (features.PROBABILITIES_OUTPUT, features.LABEL_OUTPUT, features.CLASSES_OUTPUT)
        if (not isinstance(rows, list) or len(rows) != len(images)
                or not all(isinstance(row, dict) and set(keys) <= set(row) for row in rows)):
            raise ServerError(f"unexpected answer from {self._model_url}: expected "
                              f"{len(images)} predictions with {', '.join(keys)} "
                              f"(is this a model exported by this pipeline?)")
        return predictions_from_outputs({key: [row[key] for row in rows] for key in keys})


class GrpcClient:
    """TF Serving's gRPC API (port 8500 by default), via tensorflow-serving-api."""

    def __init__(self, target: str, model_name: str, version: Optional[int] = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S, retries: int = 3, backoff_s: float = 0.2,
                 max_message_mb: int = 64, signature: str = features.PREDICT_IMAGE_SIGNATURE):
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        self._grpc = grpc
        target = target.split("://", 1)[1] if target.startswith("grpc://") else target
        options = [("grpc.max_send_message_length", max_message_mb << 20),
                   ("grpc.max_receive_message_length", max_message_mb << 20)]
        self._channel = grpc.insecure_channel(target, options=options)
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self.target, self.model_name, self.version = target, model_name, version
        self.signature = signature
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s

    def close(self) -> None:
        self._channel.close()

    def _spec(self, signature: str = ""):
        from tensorflow_serving.apis import model_pb2

        spec = model_pb2.ModelSpec(name=self.model_name, signature_name=signature)
        if self.version is not None:
            spec.version.value = self.version
        return spec

    def _call(self, method, request, what: str):
        grpc = self._grpc
        transient_codes = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED,
                           grpc.StatusCode.DEADLINE_EXCEEDED)

        def call():
            try:
                return method(request, timeout=self.timeout_s)
            except grpc.RpcError as e:
                if e.code() in transient_codes:
                    raise
                text = f"gRPC {e.code().name} from {self.target} ({what}): {_short(e.details())}"
                if e.code() == grpc.StatusCode.NOT_FOUND:
                    raise ModelNotFound(text) from None
                if e.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
                    raise BadRequest(text) from None
                raise ServerError(text) from None

        def transient(e: Exception) -> bool:
            return isinstance(e, grpc.RpcError) and e.code() in transient_codes

        return _retry(call, transient, self.retries, self.backoff_s, f"gRPC {self.target} {what}")

    def model_status(self) -> List[Dict[str, str]]:
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest(model_spec=self._spec())
        answer = self._call(self._models.GetModelStatus, request, "GetModelStatus")
        return [{"version": str(v.version),
                 "state": get_model_status_pb2.ModelVersionStatus.State.Name(v.state)}
                for v in answer.model_version_status]

    def model_metadata(self):
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=self._spec(), metadata_field=["signature_def"])
        return self._call(self._predict.GetModelMetadata, request, "GetModelMetadata")

    def signature_names(self) -> List[str]:
        """The served model's signatures, from its metadata."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        signatures = get_model_metadata_pb2.SignatureDefMap()
        self.model_metadata().metadata["signature_def"].Unpack(signatures)
        return sorted(signatures.signature_def)

    def predict_images(self, images: Sequence[bytes]) -> List[Prediction]:
        """Classifies encoded images (JPEG/PNG/...) with `self.signature` (`predict_image`
        unless told otherwise, or one of its test-time-view variants)."""
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        if not images:
            return []
        request = predict_pb2.PredictRequest(model_spec=self._spec(self.signature))
        request.inputs[features.IMAGES_INPUT].CopyFrom(
            tf.make_tensor_proto(list(images), dtype=tf.string))
        answer = self._call(self._predict.Predict, request, "Predict")
        keys = (features.PROBABILITIES_OUTPUT, features.LABEL_OUTPUT, features.CLASSES_OUTPUT)
        missing = [key for key in keys if key not in answer.outputs]
        if missing:
            raise ServerError(f"unexpected answer from {self.target}: no output {', '.join(missing)} "
                              f"(is this a model exported by this pipeline?)")
        return predictions_from_outputs({key: tf.make_ndarray(answer.outputs[key]).tolist()
                                         for key in keys})
