"""Serving: warm-up requests in the export, REST and gRPC clients against a server that speaks
TF Serving's protocols with the pushed SavedModel behind it, photo-to-emotions, and the
deployment artifacts (up to the boundary of the real server, which cannot run here)."""
import base64
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
import yaml
from google.protobuf import text_format
from PIL import Image
from tensorflow_serving.apis import prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

from components.trainer import export
from pipeline import cli, features
from serving import client as clients
from serving import faces, photos
from tests.conftest import FER2013, REPO, fer_pipeline, real_images
from tests.tf_serving_fake import FakeTFServing

SERVING = REPO / "serving"
MODEL_NAME = "fer2013-dcnn"


@pytest.fixture(scope="module")
def pushed(smoke):
    """(base directory with <version>/, version directory) of the smoke run's pushed model."""
    output, summary, _ = smoke
    return os.path.dirname(summary["pushed_path"]), summary["pushed_path"]


@pytest.fixture(scope="module")
def server(pushed):
    fake = FakeTFServing(pushed[0], MODEL_NAME).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def local(pushed):
    return photos.LocalModel(pushed[1])


FACES = [real_images("test", e, 1)[0].read_bytes() for e in features.EMOTIONS]


def both_clients(server, **kwargs):
    return {"rest": clients.RestClient(server.rest_url, MODEL_NAME, **kwargs),
            "grpc": clients.GrpcClient(server.grpc_target, MODEL_NAME, **kwargs)}


# ----------------------------------------------------------------------------
# The exported model
# ----------------------------------------------------------------------------

def test_export_carries_warmup_requests_that_the_model_answers(pushed):
    path = os.path.join(pushed[1], export.WARMUP_FILE)
    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy())
            for r in tf.data.TFRecordDataset(path)]
    signatures = [log.predict_log.request.model_spec.signature_name for log in logs]
    assert signatures == ([features.PREDICT_IMAGE_SIGNATURE] * 3 + [features.SERVING_DEFAULT_SIGNATURE]
                          + ["predict_image_flip", "predict_image_multiview", "predict_image_flip_when_unsure"])
    model = tf.saved_model.load(pushed[1])
    sizes = []
    for log in logs:
        request = log.predict_log.request
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        out = model.signatures[request.model_spec.signature_name](**inputs)
        sizes.append(out[features.PROBABILITIES_OUTPUT].shape[0])
        assert out[features.CLASSES_OUTPUT].shape == out[features.PROBABILITIES_OUTPUT].shape
    assert sizes == [*export.WARMUP_BATCH_SIZES, 1, 1, 1, 1]


# ----------------------------------------------------------------------------
# REST and gRPC clients
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_client_predictions_match_the_model_in_process(protocol, server, local):
    client = both_clients(server)[protocol]
    assert client.model_status() == [{"version": str(server.version), "state": "AVAILABLE"}]
    remote = client.predict_images(FACES)
    here = local.predict_images(FACES)
    assert [p.label for p in remote] == [p.label for p in here]
    for a, b in zip(remote, here):
        assert list(a.probabilities) == list(features.EMOTIONS)
        np.testing.assert_allclose(list(a.probabilities.values()), list(b.probabilities.values()),
                                   atol=1e-5)
        assert a.label == max(a.probabilities, key=a.probabilities.get)
    assert client.predict_images([]) == []


def test_model_metadata_lists_the_pipeline_signatures_over_both_protocols(server):
    rest = both_clients(server)["rest"].model_metadata()
    signatures = rest["metadata"]["signature_def"]["signature_def"]
    assert {features.PREDICT_IMAGE_SIGNATURE, features.SERVING_DEFAULT_SIGNATURE} <= set(signatures)
    inputs = signatures[features.PREDICT_IMAGE_SIGNATURE]["inputs"]
    assert list(inputs) == [features.IMAGES_INPUT]
    outputs = set(signatures[features.PREDICT_IMAGE_SIGNATURE]["outputs"])
    assert outputs == {features.PROBABILITIES_OUTPUT, features.LABEL_OUTPUT, features.CLASSES_OUTPUT}
    answer = both_clients(server)["grpc"].model_metadata()
    assert answer.model_spec.name == MODEL_NAME and "signature_def" in answer.metadata


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_unknown_model_and_bad_payload_give_clear_errors_without_retrying(protocol, server):
    if protocol == "rest":
        missing = clients.RestClient(server.rest_url, "no-such-model")
    else:
        missing = clients.GrpcClient(server.grpc_target, "no-such-model")
    with pytest.raises(clients.ModelNotFound, match="no-such-model"):
        missing.predict_images(FACES[:1])
    before = len(server.requests)
    with pytest.raises(clients.BadRequest) as error:
        both_clients(server)[protocol].predict_images([b"this is not an image"])
    assert len(server.requests) == before + 1  # a client error is not retried
    assert "this is not an image" not in str(error.value)  # no payload echoed into errors
    # a signature the model lacks: the same BadRequest over both protocols (TF Serving's
    # REST answer says "not found in signature def", which is not a missing model)
    client = both_clients(server)[protocol]
    client.signature = "predict_image_tencrop"
    with pytest.raises(clients.BadRequest, match="predict_image_tencrop"):
        client.predict_images(FACES[:1])


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_transient_failures_are_retried_then_reported(protocol, server):
    client = both_clients(server, retries=2, backoff_s=0.01)[protocol]
    server.fail_next(2)
    before = len(server.requests)
    assert len(client.predict_images(FACES[:2])) == 2
    assert len(server.requests) == before + 3
    server.fail_next(5)
    with pytest.raises(clients.Unavailable, match="3 attempts") as error:
        client.predict_images(FACES[:1])
    server.fail_next(0)
    # the status as a person reads it, not the RPC error's debug dump
    assert "_InactiveRpcError" not in str(error.value) and "debug_error_string" not in str(error.value)
    if protocol == "grpc":
        assert "attempts: UNAVAILABLE: " in str(error.value)


def test_a_non_transient_server_error_is_not_retried(server):
    rest = clients.RestClient(server.rest_url, MODEL_NAME, backoff_s=0.01)
    server.fail_next(1, http_status=500, grpc_code=grpc.StatusCode.INTERNAL)
    before = len(server.requests)
    with pytest.raises(clients.ServerError, match="HTTP 500"):
        rest.predict_images(FACES[:1])
    assert len(server.requests) == before + 1
    server.fail_next(1, http_status=500, grpc_code=grpc.StatusCode.INTERNAL)
    with pytest.raises(clients.ServerError, match="INTERNAL"):
        clients.GrpcClient(server.grpc_target, MODEL_NAME).predict_images(FACES[:1])


def test_unreachable_server_is_unavailable_after_retries():
    with pytest.raises(clients.Unavailable, match="2 attempts"):
        clients.RestClient("http://127.0.0.1:9", MODEL_NAME, retries=1, backoff_s=0.01,
                           timeout_s=2).model_status()
    with pytest.raises(clients.Unavailable):
        clients.GrpcClient("127.0.0.1:9", MODEL_NAME, retries=1, backoff_s=0.01,
                           timeout_s=2).model_status()
    with pytest.raises(ValueError, match="http://"):
        clients.RestClient("localhost:8501", MODEL_NAME)


def test_rest_protocol_details_b64_batches_columnar_and_error_bodies(server):
    url = f"{server.rest_url}/v1/models/{MODEL_NAME}:predict"

    def post(body):
        request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
        try:
            with urllib.request.urlopen(request) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    b64 = [{"b64": base64.b64encode(face).decode()} for face in FACES[:3]]
    code, rows = post({"signature_name": "predict_image", "instances": b64})
    assert code == 200 and len(rows["predictions"]) == 3
    code, columns = post({"signature_name": "predict_image", "inputs": {"images": b64}})
    assert code == 200 and np.allclose(columns["outputs"]["probabilities"],
                                       [r["probabilities"] for r in rows["predictions"]])
    code, body = post({"signature_name": "nope", "instances": b64})
    assert code == 400 and "nope" in body["error"]
    code, body = post({"signature_name": "predict_image"})
    assert code == 400 and "instances" in body["error"]


# ----------------------------------------------------------------------------
# Photos
# ----------------------------------------------------------------------------

PLACES = [(60, 60), (380, 220)]


def compose_photo(path, emotions=("happy", "fear"), size=(640, 480)):
    """A 640x480 colour photo with real FER2013 faces (upscaled to 140 px) at PLACES."""
    canvas = Image.new("RGB", size, (96, 112, 128))
    for (x, y), emotion in zip(PLACES, emotions):
        face = Image.open(real_images("test", emotion, 1)[0]).convert("RGB")
        canvas.paste(face.resize((140, 140), Image.Resampling.BICUBIC), (x, y))
    canvas.save(path)
    return path


def iou(a, b):
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0, min(ay + ah, by + bh) - max(ay, by))
    return w * h / (aw * ah + bw * bh - w * h)


def test_faces_are_found_where_they_were_placed(tmp_path):
    image = faces.read_photo(str(compose_photo(tmp_path / "two.jpg")))
    boxes = faces.detect_faces(image)
    assert len(boxes) == 2
    for x, y in PLACES:
        assert max(iou(b.as_list(), [x, y, 140, 140]) for b in boxes) > 0.5
    crop = Image.open(io.BytesIO(faces.crop(image, boxes[0], margin=0.2)))
    assert crop.mode == "L" and crop.size[0] == pytest.approx(boxes[0].w * 1.4, abs=2)


def test_predict_command_in_process_with_json_and_annotations(tmp_path, pushed, local):
    photo = compose_photo(tmp_path / "two.jpg")
    blank = tmp_path / "wall.png"
    Image.new("RGB", (320, 240), (200, 200, 200)).save(blank)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    done = fer_pipeline("predict", str(photo), str(blank), str(broken), str(tmp_path / "missing.png"),
                        "--model", pushed[0], "--json", "--annotate", str(tmp_path / "annotated"))
    assert done.returncode == 0, done.stderr[-2000:]
    result = {os.path.basename(p["file"]): p for p in json.loads(done.stdout)["photos"]}
    faces_found = result["two.jpg"]["faces"]
    assert len(faces_found) == 2 and result["two.jpg"]["error"] is None
    for face in faces_found:
        assert len(face["box"]) == 4 and face["label"] in features.EMOTIONS
        assert set(face["probabilities"]) == set(features.EMOTIONS)
        assert sum(face["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    assert os.path.isfile(result["two.jpg"]["annotated"])
    assert result["wall.png"]["faces"] == [] and "no face found" in result["wall.png"]["error"]
    assert "cannot be decoded" in result["broken.jpg"]["error"] or "not an image" in result["broken.jpg"]["error"]
    assert "cannot read" in result["missing.png"]["error"]
    errors = done.stderr.strip().splitlines()
    assert len(errors) == 2 and all("broken.jpg" in e or "missing.png" in e for e in errors)
    # The same crops classified in process give the same answer as the command.
    image = faces.read_photo(str(photo))
    boxes, crops = faces.faces_in(image)
    assert [p.label for p in local.predict_images(crops)] == [f["label"] for f in faces_found]


def test_the_text_report_names_each_failed_photo_once_on_stderr_only(tmp_path, local, capsys):
    blank = tmp_path / "wall.png"
    Image.new("RGB", (320, 240), (200, 200, 200)).save(blank)
    missing = tmp_path / "missing.png"
    assert photos.run([str(blank), str(missing)], local) == 0
    printed = capsys.readouterr()
    assert printed.out == f"{blank}: no face found\n"
    assert printed.err == (f"fer-pipeline predict: cannot read {missing}: No such file or "
                           "directory\n")
    assert photos.run([str(missing)], local) == 1   # none could be read: nothing on stdout
    printed = capsys.readouterr()
    assert printed.out == "" and printed.err.count(str(missing)) == 1


def test_face_crops_are_classified_whole_and_repeated_names_keep_every_annotation(tmp_path, local, capsys):
    fer = sorted((FER2013 / "test" / "happy").glob("*.jpg"))[:2]
    if not fer:
        pytest.skip("FER2013 not found")
    for folder, source in zip("ab", fer):   # two 48x48 face crops, both named x.jpg
        (tmp_path / folder).mkdir()
        shutil.copy(source, tmp_path / folder / "x.jpg")
    crops = [str(tmp_path / "a" / "x.jpg"), str(tmp_path / "b" / "x.jpg")]
    assert photos.run(crops, local, as_json=True, whole_image=True, annotate_dir=str(tmp_path / "out")) == 0
    answered = json.loads(capsys.readouterr().out)["photos"]
    assert [[f["box"] for f in p["faces"]] for p in answered] == [[[0, 0, 48, 48]]] * 2
    expected = local.predict_images([open(c, "rb").read() for c in crops])
    for photo, prediction in zip(answered, expected):   # the crop itself, as the model sees FER2013
        assert photo["faces"][0]["label"] == prediction.label
        assert photo["faces"][0]["probabilities"] == pytest.approx(prediction.probabilities, abs=1e-4)  # printed to 4 places
    assert sorted(os.listdir(tmp_path / "out")) == ["x.2.annotated.png", "x.annotated.png"]
    # without --whole-image, the detector's miss says what to do
    assert photos.run(crops[:1], local) == 0
    assert "no face found (already a face crop? --whole-image" in capsys.readouterr().out


def test_a_server_that_does_not_answer_is_asked_once_and_every_photo_reported(tmp_path, capsys):
    photo = str(compose_photo(tmp_path / "two.jpg"))
    other = str(compose_photo(tmp_path / "three.jpg"))

    class Down:
        calls = 0

        def predict_images(self, images):
            Down.calls += 1
            raise clients.Unavailable("gRPC localhost:1 Predict: still failing after 4 attempts: UNAVAILABLE: refused")

    assert photos.run([photo, other], Down()) == 1
    err = capsys.readouterr().err.splitlines()
    assert Down.calls == 1 and len(err) == 2
    assert err[0] == f"fer-pipeline predict: {photo}: gRPC localhost:1 Predict: still failing after 4 attempts: UNAVAILABLE: refused"
    assert err[1] == f"fer-pipeline predict: {other}: not sent: the server did not answer for {photo}"


@pytest.mark.parametrize("args, message", [
    (["--model", "M", "--annotate", "FILE"], "--annotate {FILE}: a file, not a folder"),
    (["--server", "grpc://localhost:1", "--timeout", "-1"], "--timeout -1: seconds per request, more than 0"),
    (["--server", "ftp://localhost:1"], "--server ftp://localhost:1: http://host:8501 (REST)"),
])
def test_predict_refuses_what_it_cannot_use_in_one_line(args, message, tmp_path, pushed, capsys):
    existing = tmp_path / "taken.txt"
    existing.write_text("")
    args = [a.replace("FILE", str(existing)).replace("M", pushed[0]) if a in ("M", "FILE") else a for a in args]
    assert cli.main(["predict", str(existing), *args]) == 2
    err = capsys.readouterr().err
    assert message.replace("{FILE}", str(existing)) in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (["--model", "/no/such/model", "--faces", "."], "--model: no such directory: /no/such/model"),
    (["--model", str(REPO / "models" / "fer2013-compact"), "--faces", "/no/such/faces"],
     "--faces: no such folder: /no/such/faces"),
])
def test_the_benchmark_names_a_missing_model_or_face_folder_in_one_line(args, message, capsys):
    from serving import benchmark

    with pytest.raises(SystemExit) as stopped:
        benchmark.main(args)
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and message in err and "Traceback" not in err


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_photos_through_the_server_match_in_process(protocol, tmp_path, server, local, capsys):
    photo = str(compose_photo(tmp_path / "two.png", emotions=("sad", "angry")))
    client = both_clients(server)[protocol]
    assert photos.run([photo], client, as_json=True) == 0
    remote = json.loads(capsys.readouterr().out)["photos"][0]["faces"]
    assert photos.run([photo], local, as_json=True) == 0
    here = json.loads(capsys.readouterr().out)["photos"][0]["faces"]
    assert [(f["box"], f["label"]) for f in remote] == [(f["box"], f["label"]) for f in here]


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_test_time_views_average_the_servers_answers_for_each_view(protocol, server, local):
    from components.trainer.model import TEST_TIME_VIEWS, View

    views = TEST_TIME_VIEWS["multiview"]
    remote = photos.TestTimeViews(both_clients(server)[protocol], views).predict_images(FACES)
    each = [local.predict_images(faces.seen_in(FACES, view)) for view in views]
    for i, prediction in enumerate(remote):
        expected = np.mean([[answer[i].probabilities[c] for c in features.EMOTIONS] for answer in each], axis=0)
        np.testing.assert_allclose([prediction.probabilities[c] for c in features.EMOTIONS], expected, atol=1e-5)
        assert prediction.label == features.EMOTIONS[int(np.argmax(expected))]
    assert faces.seen_in(FACES, View()) == FACES
    assert all(a != b for a, b in zip(faces.seen_in(FACES, View(zoom=0.9)), FACES))
    plain = photos.TestTimeViews(local, [View()]).predict_images(FACES)
    assert [p.label for p in plain] == [p.label for p in local.predict_images(FACES)]
    assert photos.TestTimeViews(local, views).predict_images([]) == []
    with pytest.raises(ValueError, match="broken.png: not a readable image"):
        faces.seen_in([FACES[0], b"junk"], View(zoom=0.9), ["face.jpg", "broken.png"])


def _probabilities(prediction):
    return [prediction.probabilities[c] for c in features.EMOTIONS]


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_view_signatures_answer_as_the_clients_views_do_from_one_image_a_face(protocol, server, local):
    from components.trainer.model import TEST_TIME_VIEWS

    client = both_clients(server)[protocol]
    assert {"predict_image_flip", "predict_image_multiview"} <= set(client.signature_names())
    plain = local.predict_images(FACES)
    for name, views in TEST_TIME_VIEWS.items():
        served = photos.with_test_time_views(client, name)
        assert served.signature == features.views_signature(name) and served is not client
        remote = served.predict_images(FACES)
        by_client = photos.TestTimeViews(local, views).predict_images(FACES)
        # the mirror image is exact; the client rounds a zoomed view to whole grey levels
        tolerance = 1e-5 if name == "flip" else 1e-2
        for a, b in zip(remote, by_client):
            np.testing.assert_allclose(_probabilities(a), _probabilities(b), atol=tolerance)
            assert a.label == max(a.probabilities, key=a.probabilities.get)
        # the views change the answer (the smoke model is barely trained: by little)
        assert max(np.abs(np.subtract(_probabilities(a), _probabilities(p))).max()
                   for a, p in zip(remote, plain)) > 1e-5
    # flip_when_unsure: each face answered as by the flip or as by one view
    unsure = photos.with_test_time_views(client, features.FLIP_WHEN_UNSURE)
    assert unsure.signature == features.FLIP_WHEN_UNSURE_SIGNATURE and unsure is not client
    flipped = photos.TestTimeViews(local, TEST_TIME_VIEWS["flip"]).predict_images(FACES)
    for a, p, f in zip(unsure.predict_images(FACES), plain, flipped):
        assert (np.allclose(_probabilities(a), _probabilities(p), atol=1e-5)
                or np.allclose(_probabilities(a), _probabilities(f), atol=1e-5))
    assert client.signature == features.PREDICT_IMAGE_SIGNATURE
    assert [p.label for p in client.predict_images(FACES)] == [p.label for p in plain]


def test_a_model_without_view_signatures_gets_its_views_from_the_client(pushed, local):
    from components.trainer.model import TEST_TIME_VIEWS

    class OlderModel:   # exported before the predict_image_<views> signatures
        signature = features.PREDICT_IMAGE_SIGNATURE
        predict_images = staticmethod(local.predict_images)

        def signature_names(self):
            return [features.PREDICT_IMAGE_SIGNATURE, features.SERVING_DEFAULT_SIGNATURE]

    older = photos.with_test_time_views(OlderModel(), "flip")
    assert isinstance(older, photos.TestTimeViews) and older.views == TEST_TIME_VIEWS["flip"]
    new = photos.with_test_time_views(local, "flip").predict_images(FACES)
    for a, b in zip(older.predict_images(FACES), new):
        np.testing.assert_allclose(_probabilities(a), _probabilities(b), atol=1e-5)
    with pytest.raises(ValueError, match="--tta tencrop: choose from flip, multiview, flip_when_unsure"):
        photos.with_test_time_views(local, "tencrop")
    with pytest.raises(ValueError, match="no predict_image_flip_when_unsure signature .*use --tta flip"):
        photos.with_test_time_views(OlderModel(), "flip_when_unsure")
    with pytest.raises(clients.BadRequest, match="has no signature 'predict_image_tencrop'"):
        photos.LocalModel(pushed[1], signature="predict_image_tencrop").predict_images(FACES)


def test_predict_command_with_test_time_augmentation(tmp_path, pushed):
    photo = compose_photo(tmp_path / "two.jpg")
    done = fer_pipeline("predict", str(photo), "--model", pushed[0], "--json", "--tta", "multiview")
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout)["photos"][0]["faces"]
    assert len(found) == 2
    for face in found:
        assert face["label"] == max(face["probabilities"], key=face["probabilities"].get)
        assert sum(face["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    unsure = fer_pipeline("predict", str(photo), "--model", pushed[0], "--json", "--tta", "flip_when_unsure")
    assert unsure.returncode == 0, unsure.stderr[-2000:]
    assert len(json.loads(unsure.stdout)["photos"][0]["faces"]) == 2
    refused = fer_pipeline("predict", str(photo), "--model", pushed[0], "--tta", "tencrop")
    assert refused.returncode == 2 and "--tta tencrop: choose from flip, multiview, flip_when_unsure" in refused.stderr


def test_nothing_done_exits_1_and_a_huge_image_is_refused(tmp_path, local, capsys, monkeypatch):
    huge = tmp_path / "huge.png"
    Image.new("L", (8000, 7000)).save(huge)  # 56 megapixels, a few kB on disk
    assert photos.run([str(huge), str(tmp_path / "nope.jpg")], local) == 1
    captured = capsys.readouterr()
    assert "too large (8000x7000 = 56 megapixels; at most 50)" in captured.err
    assert "nope.jpg" in captured.err and captured.out == ""   # each failure once, on stderr


def test_no_image_bytes_or_crops_reach_the_logs(tmp_path, server, caplog, capsys):
    photo = compose_photo(tmp_path / "two.jpg")
    crops = faces.faces_in(faces.read_photo(str(photo)))[1]
    server.fail_next(10)
    caplog.set_level(logging.DEBUG)
    client = clients.RestClient(server.rest_url, MODEL_NAME, retries=1, backoff_s=0.01)
    assert photos.run([str(photo)], client) == 1
    server.fail_next(0)
    captured = capsys.readouterr()
    text = captured.out + captured.err + caplog.text
    assert "two.jpg" in text and "Injected failure" in text
    for crop in crops:
        assert base64.b64encode(crop).decode()[:40] not in text
    assert base64.b64encode(photo.read_bytes()).decode()[:40] not in text


# ----------------------------------------------------------------------------
# Deployment artifacts (the real tensorflow_model_server cannot run here)
# ----------------------------------------------------------------------------

def _flags(args):
    return dict(a[2:].split("=", 1) for a in args if a.startswith("--"))


def test_model_config_parses_with_tf_servings_own_proto_and_names_the_pushed_model():
    for path in (SERVING / "config" / "models.config", SERVING / "k8s" / "models.config"):
        config = text_format.Parse(path.read_text(), model_server_config_pb2.ModelServerConfig())
        [model] = config.model_config_list.config
        assert model.name == MODEL_NAME and model.base_path.endswith("/" + MODEL_NAME)
        assert model.model_platform == "tensorflow"
        assert model.model_version_policy.latest.num_versions == 2


def test_compose_and_kubernetes_run_the_same_server_flags_on_existing_files():
    compose = yaml.safe_load((SERVING / "docker-compose.yml").read_text())
    service = compose["services"]["tf-serving"]
    assert service["image"] == "tensorflow/serving:2.16.1"
    flags = _flags(service["command"])
    for key in ("model_config_file", "batching_parameters_file", "monitoring_config_file"):
        assert (SERVING / "config" / os.path.basename(flags[key])).is_file()
    deployment = yaml.safe_load((SERVING / "k8s" / "deployment.yaml").read_text())
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == service["image"] and _flags(container["args"]) == flags
    assert container["readinessProbe"]["httpGet"]["path"] == f"/v1/models/{MODEL_NAME}"
    # alive while no version is loaded yet (the status endpoint answers 404 until then)
    assert container["livenessProbe"]["tcpSocket"]["port"] in {p["name"] for p in container["ports"]}
    assert container["resources"]["requests"] and container["resources"]["limits"]
    kustomization = yaml.safe_load((SERVING / "kustomization.yaml").read_text())
    for entry in kustomization["configMapGenerator"][0]["files"]:
        assert (SERVING / entry.split("=")[-1]).is_file()
    for resource in kustomization["resources"]:
        assert (SERVING / resource).is_file()
    # the pods' service account is created with them (else Kubernetes refuses the pods)
    accounts = [yaml.safe_load((SERVING / r).read_text()) for r in kustomization["resources"]]
    assert {"kind": "ServiceAccount", "name": deployment["spec"]["template"]["spec"]["serviceAccountName"]} in [
        {"kind": a["kind"], "name": a["metadata"]["name"]} for a in accounts]
    prometheus = yaml.safe_load((SERVING / "prometheus.yml").read_text())
    monitoring = (SERVING / "config" / "monitoring.config").read_text()
    assert prometheus["scrape_configs"][0]["metrics_path"] in monitoring
    batching = (SERVING / "config" / "batching.config").read_text()
    assert "max_batch_size { value: 64 }" in batching


def _docker_runs() -> bool:
    return shutil.which("docker") is not None and subprocess.run(
        ["docker", "info"], capture_output=True).returncode == 0


@pytest.mark.skipif(_docker_runs(), reason="a Docker daemon runs here")
def test_start_script_explains_that_docker_is_missing():
    done = subprocess.run(["bash", str(SERVING / "start.sh")], capture_output=True, text=True)
    assert done.returncode == 3 and "Docker is not available" in done.stderr


def test_benchmark_script_runs_and_reports_every_measurement(pushed, tmp_path):
    from serving import benchmark

    faces_dir = real_images("test", "happy", 4)[0].parent
    out = tmp_path / "bench.json"
    assert benchmark.main(["--model", pushed[0], "--faces", str(faces_dir), "--runs", "12",
                           "--batch", "4", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["saved_model"]["batch"] == 4 and results["saved_model"]["p50_ms"] > 0
    assert results["photo"]["faces_found"] == 2 and results["signature"] == "predict_image"
    assert benchmark.main(["--model", pushed[0], "--faces", str(faces_dir), "--runs", "12", "--batch", "4",
                           "--signature", "predict_image_multiview", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["signature"] == "predict_image_multiview" and results["photo"]["faces_found"] == 2
    with pytest.raises(SystemExit, match="--signature predict_image_tencrop: .* has predict_image, "):
        benchmark.main(["--model", pushed[0], "--faces", str(faces_dir), "--signature", "predict_image_tencrop"])


def test_benchmark_sets_tensorflows_thread_pools_in_its_own_process(pushed, tmp_path):
    faces_dir = real_images("test", "happy", 4)[0].parent
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "serving.benchmark", "--model", pushed[0],
                           "--faces", str(faces_dir), "--runs", "12", "--batch", "4",
                           "--intra-op-threads", "1", "--inter-op-threads", "2", "--in-flight", "2",
                           "--json", str(out)],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(out.read_text())
    assert results["threads"] == {"intra_op": 1, "inter_op": 2} and results["machine"]
    assert results["saved_model"]["p50_ms"] > 0
    assert results["saved_model"]["in_flight"] == 2 and results["saved_model"]["faces_per_s_in_flight"] > 0


def test_benchmark_takes_faces_from_a_folder_or_spreads_them_over_class_folders(tmp_path):
    from serving import benchmark

    for emotion, n in (("happy", 6), ("sad", 3), ("disgust", 1)):
        (tmp_path / "test" / emotion).mkdir(parents=True)
        for i in range(n):
            (tmp_path / "test" / emotion / f"PublicTest_{i}.jpg").write_bytes(b"x")
    (tmp_path / "test" / "happy" / "notes.txt").write_text("not an image")
    assert [os.path.basename(p) for p in benchmark.face_files(str(tmp_path / "test" / "happy"), 4)] == [
        "PublicTest_0.jpg", "PublicTest_1.jpg", "PublicTest_2.jpg", "PublicTest_3.jpg"]
    spread = [os.path.relpath(p, tmp_path / "test") for p in benchmark.face_files(str(tmp_path / "test"), 5)]
    assert spread == ["happy/PublicTest_0.jpg", "sad/PublicTest_0.jpg", "happy/PublicTest_1.jpg",
                      "happy/PublicTest_2.jpg", "disgust/PublicTest_0.jpg"]
    everything = benchmark.face_files(str(tmp_path / "test"), 64)
    assert len(everything) == 10 and everything[:5] == [str(tmp_path / "test" / p) for p in spread]


def test_benchmark_times_batches_in_flight_from_as_many_threads_and_reports_their_errors():
    from serving import benchmark

    calls, threads = [], set()

    def one_batch():
        calls.append(1)
        threads.add(threading.current_thread().name)

    assert benchmark._throughput(one_batch, in_flight=3, batch_size=64, calls=5, repeats=2) > 0
    assert len(calls) == 3 * (1 + 5 * 2)  # one warm-up call and 5 timed calls per thread per repeat
    assert len(threads) == 3 * (1 + 2)  # its own 3 threads for the warm-up and each repeat

    def broken():
        raise ValueError("bad batch")

    with pytest.raises(ValueError, match="bad batch"):
        benchmark._throughput(broken, in_flight=2, batch_size=64, calls=1)
    with pytest.raises(SystemExit):
        benchmark.main(["--model", "m", "--faces", "f", "--in-flight", "0"])


def test_benchmark_refuses_thread_settings_once_tensorflow_runs(pushed):
    from serving import benchmark

    tf.constant(1.0) + 1.0  # TensorFlow's runtime is up in this process
    with pytest.raises(SystemExit, match="before TensorFlow starts"):
        benchmark.set_threads(1, 0)
