"""A test stand-in for `tensorflow_model_server`: TF Serving's REST and gRPC protocols in
front of a real SavedModel, in process. A test fixture, not a product feature.

The real server binary cannot be installed on the machines these tests run on.
This fake implements the documented parts the clients use, with TF Serving's
answers and error shapes:

REST (https://www.tensorflow.org/tfx/serving/api_rest):
  GET  /v1/models/<name>[/versions/<v>]            model status
  GET  /v1/models/<name>[/versions/<v>]/metadata   signature defs
  POST /v1/models/<name>[/versions/<v>]:predict    row ("instances") or columnar
                                                   ("inputs") format, {"b64": ...} binaries
  errors: {"error": "..."} with 400 (bad request) or 404 (servable not found)
gRPC: tensorflow.serving.PredictionService/Predict, GetModelMetadata;
      tensorflow.serving.ModelService/GetModelStatus.

`fail_next(n)` makes the next n requests fail transiently (HTTP 503 / UNAVAILABLE)
to exercise the clients' retries.
"""
import base64
import json
import os
import re
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.python.saved_model import loader_impl
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

_PATH = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+))?(?:(/metadata)|(:predict))?$")


class _BadRequest(Exception):
    pass


class FakeTFServing:
    def __init__(self, base_dir: str, model_name: str):
        versions = sorted(int(v) for v in os.listdir(base_dir) if v.isdigit())
        self.version = versions[-1]
        path = os.path.join(base_dir, str(self.version))
        self.model_name = model_name
        self.model = tf.saved_model.load(path)
        self.signature_defs = loader_impl.parse_saved_model(path).meta_graphs[0].signature_def
        self.requests = []          # (protocol, what) of every request, for assertions
        self._failures, self._failure = 0, None
        self._lock = threading.Lock()

    # -- shared ---------------------------------------------------------------
    def fail_next(self, n: int, http_status: int = 503,
                  grpc_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        """The next n requests fail with `http_status` (REST) or `grpc_code` (gRPC)."""
        with self._lock:
            self._failures, self._failure = n, (http_status, grpc_code)

    def _should_fail(self):
        with self._lock:
            if self._failures > 0:
                self._failures -= 1
                return self._failure
            return None

    def _check_model(self, name: str, version) -> None:
        if name != self.model_name or (version and int(version) != self.version):
            label = f"Specific({name}, {version})" if version else f"Latest({name})"
            raise LookupError(f"Servable not found for request: {label}")

    def _run(self, signature: str, inputs: dict) -> dict:
        if signature not in self.model.signatures:
            raise _BadRequest(f'Serving signature name: "{signature}" not found in signature def')
        function = self.model.signatures[signature]
        expected = set(function.structured_input_signature[1])
        if set(inputs) != expected:
            raise _BadRequest(f"input tensor alias not found in signature: {sorted(set(inputs) ^ expected)}")
        try:
            out = function(**{k: tf.constant(v) for k, v in inputs.items()})
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as e:
            lines = [l.strip() for l in str(e).strip().splitlines() if l.strip()]
            raise _BadRequest(" ".join(lines[:2])) from None
        return {k: v.numpy() for k, v in out.items()}

    # -- REST -----------------------------------------------------------------
    def _rest(self, method: str, path: str, body: bytes):
        self.requests.append(("rest", path))
        failure = self._should_fail()
        if failure:
            return failure[0], {"error": "Injected failure for a test"}
        match = _PATH.match(path)
        if not match:
            return 404, {"error": "Malformed request: " + path}
        name, version, metadata, predict = match.groups()
        try:
            self._check_model(name, version)
        except LookupError as e:
            return 404, {"error": str(e)}
        if predict:
            if method != "POST":
                return 400, {"error": "Malformed request: predict needs POST"}
            try:
                return 200, self._rest_predict(body)
            except _BadRequest as e:
                return 400, {"error": str(e)}
        if metadata:
            return 200, {"model_spec": {"name": name, "signature_name": "", "version": str(self.version)},
                         "metadata": {"signature_def": {"signature_def": {
                             k: json_format.MessageToDict(v) for k, v in self.signature_defs.items()}}}}
        return 200, {"model_version_status": [{"version": str(self.version), "state": "AVAILABLE",
                                               "status": {"error_code": "OK", "error_message": ""}}]}

    @staticmethod
    def _decode(value):
        if isinstance(value, dict) and set(value) == {"b64"}:
            return base64.b64decode(value["b64"])
        if isinstance(value, list):
            return [FakeTFServing._decode(v) for v in value]
        return value

    def _rest_predict(self, body: bytes) -> dict:
        try:
            request = json.loads(body)
        except ValueError as e:
            raise _BadRequest(f"JSON Parse error: {e}") from None
        if not isinstance(request, dict):
            raise _BadRequest("JSON Value: not an object. Expected an object")
        signature = request.get("signature_name", "serving_default")
        if signature not in self.model.signatures:
            raise _BadRequest(f'Serving signature name: "{signature}" not found in signature def')
        input_names = list(self.model.signatures[signature].structured_input_signature[1])
        if "instances" in request:
            instances = request["instances"]
            if not isinstance(instances, list) or not instances:
                raise _BadRequest("'instances' must be a non-empty list")
            if all(isinstance(i, dict) and set(i) != {"b64"} for i in instances):
                inputs = {k: [self._decode(i.get(k)) for i in instances] for k in instances[0]}
            elif len(input_names) == 1:
                inputs = {input_names[0]: [self._decode(i) for i in instances]}
            else:
                raise _BadRequest("instances must name the inputs of a multi-input signature")
            outputs = self._run(signature, inputs)
            rows = [{k: _jsonable(v[i]) for k, v in outputs.items()} for i in range(len(instances))]
            return {"predictions": rows}
        if "inputs" in request:
            inputs = request["inputs"]
            if not isinstance(inputs, dict):
                inputs = {input_names[0] if input_names else "": inputs}
            outputs = self._run(signature, {k: self._decode(v) for k, v in inputs.items()})
            return {"outputs": {k: _jsonable(v) for k, v in outputs.items()}}
        raise _BadRequest("Missing 'inputs' or 'instances' key")

    # -- gRPC -----------------------------------------------------------------
    def _grpc_predict(self, request, context):
        self.requests.append(("grpc", "Predict"))
        failure = self._should_fail()
        if failure:
            context.abort(failure[1], "Injected failure for a test")
        try:
            self._check_model(request.model_spec.name,
                              request.model_spec.version.value if request.model_spec.HasField("version") else None)
            outputs = self._run(request.model_spec.signature_name or "serving_default",
                                {k: tf.make_ndarray(v) for k, v in request.inputs.items()})
        except LookupError as e:
            context.abort(grpc.StatusCode.NOT_FOUND, str(e))
        except _BadRequest as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        response = predict_pb2.PredictResponse()
        response.model_spec.name = self.model_name
        response.model_spec.version.value = self.version
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
        return response

    def _grpc_metadata(self, request, context):
        self.requests.append(("grpc", "GetModelMetadata"))
        try:
            self._check_model(request.model_spec.name, None)
        except LookupError as e:
            context.abort(grpc.StatusCode.NOT_FOUND, str(e))
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = self.model_name
        response.model_spec.version.value = self.version
        signatures = get_model_metadata_pb2.SignatureDefMap()
        for key, value in self.signature_defs.items():
            signatures.signature_def[key].CopyFrom(value)
        response.metadata["signature_def"].Pack(signatures)
        return response

    def _grpc_status(self, request, context):
        self.requests.append(("grpc", "GetModelStatus"))
        try:
            self._check_model(request.model_spec.name,
                              request.model_spec.version.value if request.model_spec.HasField("version") else None)
        except LookupError as e:
            context.abort(grpc.StatusCode.NOT_FOUND, str(e))
        return get_model_status_pb2.GetModelStatusResponse(model_version_status=[
            get_model_status_pb2.ModelVersionStatus(
                version=self.version, state=get_model_status_pb2.ModelVersionStatus.AVAILABLE)])

    # -- lifecycle ------------------------------------------------------------
    def start(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, method):
                length = int(self.headers.get("Content-Length") or 0)
                code, body = fake._rest(method, self.path, self.rfile.read(length))
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._answer("GET")

            def do_POST(self):
                self._answer("POST")

            def log_message(self, *args):
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        self.rest_url = f"http://127.0.0.1:{self._http.server_address[1]}"

        class Prediction(prediction_service_pb2_grpc.PredictionServiceServicer):
            Predict = staticmethod(self._grpc_predict)
            GetModelMetadata = staticmethod(self._grpc_metadata)

        class Models(model_service_pb2_grpc.ModelServiceServicer):
            GetModelStatus = staticmethod(self._grpc_status)

        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Prediction(), self._grpc)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(Models(), self._grpc)
        port = self._grpc.add_insecure_port("127.0.0.1:0")
        self._grpc.start()
        self.grpc_target = f"127.0.0.1:{port}"
        return self

    def stop(self):
        self._http.shutdown()
        self._grpc.stop(grace=None)


def _jsonable(value):
    """TF Serving's JSON for tensor values: strings as UTF-8 text, numbers as numbers."""
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode()}
    if isinstance(value, np.generic):
        return value.item()
    return value
