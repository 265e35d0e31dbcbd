"""End to end: `fer-pipeline run` on real FER2013 images, both orchestrators, the push gate,
and the exported SavedModel's signatures. The smoke profile keeps each run to minutes."""
import glob
import json
import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tfx.components.trainer.fn_args_utils import FnArgs

from components.audit import audit
from components.example_gen.fer2013 import make_example
from components.trainer import export
from components.trainer.recipe import prior_log_bias
from components.trainer.run import run_fn
from pipeline import cli, features
from pipeline.config import profile_configs
from pipeline.pipeline import BASELINE_IMPORTER_ID
from tests.conftest import FER2013_TRAIN_COUNTS, SMOKE_ANNOTATIONS, encode, real_images, run_smoke

NODES = ("Fer2013ExampleGen", "StatisticsGen", "CuratedSchemaGen", "ExampleValidator",
         "SkewValidator", "DataValidationGate", "Transform", "Trainer",
         "latest_blessed_model_resolver", "Evaluator", "AuditGate", "Pusher")


def test_smoke_run_executes_every_component_and_pushes(smoke):
    output, summary, stdout = smoke
    assert {node: c["state"] for node, c in summary["components"].items()} == {
        node: "COMPLETE" for node in NODES}
    splits = summary["ingestion"]["splits"]
    assert (splits["train"]["examples"], splits["eval"]["examples"]) == (280, 140)
    assert splits["train"]["examples_per_class"] == {e: 40 for e in sorted(features.EMOTIONS)}
    assert splits["train"]["quarantined"] == 0
    assert summary["evaluation"]["metrics"]["overall"]["example_count"] == 140
    assert set(summary["evaluation"]["metrics"]) == {"overall"} | {
        f"label_name={e}" for e in features.EMOTIONS} | {
        f"brightness_band={b}" for _, b in features.BRIGHTNESS_BANDS} | {
        f"contrast_band={c}" for _, c in features.CONTRAST_BANDS} | {
        f"gender={g}" for g in ("female", "male", "unannotated")}
    by_gender = sum(summary["evaluation"]["metrics"][f"gender={g}"]["example_count"]
                    for g in ("female", "male", "unannotated"))
    assert by_gender == 140
    assert "by brightness_band (image proxy, not a demographic):" in stdout
    assert "by gender (annotation):" in stdout
    assert summary["blessed"] and summary["pushed"]
    versions = glob.glob(os.path.join(output, "serving", "fer2013-dcnn", "*", "saved_model.pb"))
    assert len(versions) == 1 and summary["pushed_path"] == os.path.dirname(versions[0])
    assert os.path.basename(summary["pushed_path"]).isdigit()
    assert "Blessed: yes" in stdout and summary["pushed_path"] in stdout
    matrix = summary["evaluation"]["confusion_matrix"]
    assert matrix["classes"] == list(features.EMOTIONS)
    assert [sum(row) for row in matrix["counts"]] == [20] * 7  # 20 eval faces per emotion
    validation = summary["data_validation"]
    assert not validation["blocked"] and validation["findings"] == []  # balanced sample, one span
    assert {(d["feature"], d["where"]) for d in validation["distances"]} == {
        (f, "eval vs train") for f in ("label_name", "brightness", "contrast")}
    assert all(not d["breached"] for d in validation["distances"])
    assert summary["training"]["class_balance"]["imbalance"] == "class_weight"
    assert "Data validation: passed: 0 blocking, 0 warning(s)" in stdout
    for name in ("summary.txt", "evaluation.json", "quarantine.csv", "ingestion_report.json",
                 "confusion_matrix.csv", "data_report.html", "data_validation.json"):
        assert os.path.isfile(os.path.join(output, "reports", name))


def test_impossible_accuracy_threshold_blocks_the_push(smoke, fer2013_root):
    output, _, _ = smoke
    summary, stdout = run_smoke(fer2013_root, output, "--min-accuracy", "1.01", "--annotations",
                                str(output.parent / SMOKE_ANNOTATIONS))
    assert summary["components"]["Trainer"]["state"] == "CACHED"
    assert summary["components"]["Evaluator"]["state"] == "COMPLETE"
    assert not summary["blessed"] and not summary["pushed"]
    failures = summary["evaluation"]["validation"]["failures"]
    assert any("sparse_categorical_accuracy on overall" in f for f in failures), failures
    assert "Blessed: NO" in stdout and "Pushed: nothing" in stdout
    assert len(os.listdir(os.path.join(output, "serving", "fer2013-dcnn"))) == 1


def test_a_chosen_regression_baseline_is_imported_and_none_drops_it(smoke, fer2013_root, capsys):
    """--regression-baseline: an earlier Trainer's model artifact comes in through an
    Importer (the way a Kubeflow run gets one: open-source KFP runs no resolver) and the
    Evaluator and AuditGate compare with it; `none` leaves them without a baseline."""
    output, first, _ = smoke
    model_uri = glob.glob(os.path.join(output, "tfx", "Trainer", "model", "*"))
    assert len(model_uri) == 1
    annotations = ("--annotations", str(output.parent / SMOKE_ANNOTATIONS), "--min-accuracy", "1.01")
    for baseline, expected in ((model_uri[0], model_uri[0]), ("none", None)):
        summary, _ = run_smoke(fer2013_root, output, "--regression-baseline", baseline, *annotations)
        nodes = set(summary["components"])
        assert "latest_blessed_model_resolver" not in nodes
        assert (BASELINE_IMPORTER_ID in nodes) == (expected is not None)
        assert summary["components"]["Trainer"]["state"] == "CACHED"
        with open(os.path.join(summary["audit"]["report_dir"], audit.AUDIT_JSON)) as f:
            assert json.load(f)["lineage"]["baseline_model_uri"] == expected
        # compared with itself: no regression, only the impossible floor fails
        failures = summary["evaluation"]["validation"]["failures"]
        assert failures and all("overall" in f and "change" not in f.lower() for f in failures), failures
        assert not summary["pushed"]
    assert cli.main(["run", "--data", str(fer2013_root), "--output", str(output.parent / "unused"),
                     "--regression-baseline", str(output / "serving")]) == 2
    err = capsys.readouterr().err
    assert "not a Trainer model artifact" in err and len(err.strip().splitlines()) == 1


def test_signatures_agree_and_predict_image_takes_any_jpeg_or_png(smoke):
    _, summary, _ = smoke
    model = tf.saved_model.load(summary["pushed_path"])
    paths = [real_images("test", e, 1)[0] for e in features.EMOTIONS]
    images = [p.read_bytes() for p in paths]
    examples = [make_example(b, "angry", "PublicTest", p.stem, np.asarray(Image.open(p)))
                for b, p in zip(images, paths)]
    by_example = model.signatures[features.SERVING_DEFAULT_SIGNATURE](
        **{features.EXAMPLES_INPUT: tf.constant(examples)})
    by_image = model.signatures[features.PREDICT_IMAGE_SIGNATURE](
        **{features.IMAGES_INPUT: tf.constant(images)})
    probabilities = by_example[features.PROBABILITIES_OUTPUT].numpy()
    assert probabilities.shape == (7, 7)
    np.testing.assert_allclose(probabilities, by_image[features.PROBABILITIES_OUTPUT].numpy(), atol=1e-6)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    labels = [l.decode() for l in by_image[features.LABEL_OUTPUT].numpy()]
    assert labels == [features.EMOTIONS[i] for i in probabilities.argmax(axis=1)]

    face = np.asarray(Image.open(paths[3]))
    big_colour = np.asarray(Image.fromarray(face).resize((120, 120)).convert("RGB"))
    mixed = model.signatures[features.PREDICT_IMAGE_SIGNATURE](
        **{features.IMAGES_INPUT: tf.constant([encode(face, "JPEG"), encode(big_colour, "PNG")])})
    assert mixed[features.PROBABILITIES_OUTPUT].shape == (2, 7)
    assert all(l.decode() in features.EMOTIONS for l in mixed[features.LABEL_OUTPUT].numpy())


def test_run_fn_trains_a_few_steps_and_exports_all_signatures(smoke, tmp_path):
    output, _, _ = smoke
    transform_graph = sorted(glob.glob(os.path.join(output, "tfx", "Transform", "transform_graph", "*")))[-1]
    examples = sorted(glob.glob(os.path.join(output, "tfx", "Transform", "transformed_examples", "*")))[-1]
    training = profile_configs("smoke", "dcnn", features.EMOTIONS).training
    config = dict(training.to_dict(), epochs=2, batch_size=16, imbalance="none", prior_correction=0.5,
                  calibration_temperature=0.0, average_from=1, lr_schedule="plateau")
    serving_dir = tmp_path / "serving_model"
    run_fn(FnArgs(train_files=[os.path.join(examples, "Split-train", "*")],
                  transform_output=transform_graph, serving_model_dir=str(serving_dir),
                  model_run_dir=str(tmp_path / "run"), custom_config=config))
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history["loss"]) == 2 and np.isfinite(history["loss"]).all()
    # average_from 1: the mean of both epochs' weights, kept when no worse on validation.
    average = json.loads((tmp_path / "run" / "weight_average.json").read_text())
    assert (average["from_epoch"], average["epochs"]) == (1, 2) and average["batch_norm_batches"] > 0
    assert average["kept"] == ("average" if average["validation_accuracy"]
                               >= average["best_epoch_validation_accuracy"] else "best epoch")
    assert max(history["val_accuracy"]) == pytest.approx(average["best_epoch_validation_accuracy"])
    # The prior correction is built from the counts the model trained on, and recorded.
    balance = json.loads((tmp_path / "run" / "class_balance.json").read_text())
    correction = json.loads((serving_dir / features.PRIOR_CORRECTION_ASSET).read_text())
    assert correction["strength"] == 0.5 == balance["prior_correction"]
    assert correction["train_counts"] == balance["train_counts"]
    assert sum(correction["train_counts"].values()) > 0
    np.testing.assert_allclose(
        [correction["log_bias"][e] for e in features.EMOTIONS],
        prior_log_bias([balance["train_counts"][e] for e in features.EMOTIONS], 0.5), atol=1e-4)
    # calibration_temperature 0: the Trainer fitted one on its validation carve-out.
    calibration = json.loads((serving_dir / features.CALIBRATION_ASSET).read_text())
    assert 0.25 <= calibration["temperature"] <= 8.0 and calibration["temperature"] != 1.0
    assert calibration["temperature"] == balance["calibration_temperature"]
    faces = int(re.search(r"\((\d+) faces\)", calibration["fitted_on"]).group(1))
    assert "validation carve-out" in calibration["fitted_on"] and 0 < faces < sum(correction["train_counts"].values())
    model = tf.saved_model.load(str(serving_dir))
    assert set(model.signatures) == {features.SERVING_DEFAULT_SIGNATURE, features.PREDICT_IMAGE_SIGNATURE,
                                     features.TRANSFORM_FEATURES_SIGNATURE, "predict_image_flip",
                                     "predict_image_multiview", "predict_image_flip_when_unsure"}
    # The flip-when-unsure threshold was fitted on the same validation faces, and recorded.
    unsure = json.loads((serving_dir / features.FLIP_WHEN_UNSURE_ASSET).read_text())
    assert unsure["threshold"] in export.UNSURE_THRESHOLDS and unsure["faces"] == faces
    assert unsure["accuracy"]["flip_when_unsure"] >= unsure["accuracy"]["flip"] - export.UNSURE_TOLERANCE
    assert 0.0 <= unsure["flipped_fraction"] <= 1.0 and "validation carve-out" in unsure["fitted_on"]
    out = model.signatures[features.PREDICT_IMAGE_SIGNATURE](
        **{features.IMAGES_INPUT: tf.constant([real_images("test", "sad", 1)[0].read_bytes()])})
    assert out[features.PROBABILITIES_OUTPUT].shape == (1, 7)
    assert out[features.LABEL_OUTPUT].numpy()[0].decode() in features.EMOTIONS


def test_a_prior_corrected_export_divides_the_probabilities_by_the_prior_to_its_strength(
        smoke, tmp_path):
    from components.trainer import export, model as model_lib
    import tensorflow_transform as tft

    output, _, _ = smoke
    transform = tft.TFTransformOutput(sorted(glob.glob(
        os.path.join(output, "tfx", "Transform", "transform_graph", "*")))[-1])
    network = model_lib.build("compact", 7)
    counts = FER2013_TRAIN_COUNTS
    plain = export.export_serving_model(network, transform, features.EMOTIONS, str(tmp_path / "plain"))
    corrected = export.export_serving_model(network, transform, features.EMOTIONS,
                                            str(tmp_path / "corrected"), 1.0, counts)
    assert not os.path.exists(os.path.join(plain, features.PRIOR_CORRECTION_ASSET))
    recorded = json.loads(open(os.path.join(corrected, features.PRIOR_CORRECTION_ASSET)).read())
    assert recorded["train_counts"] == dict(zip(features.EMOTIONS, counts))
    assert recorded["log_bias"]["disgust"] > recorded["log_bias"]["angry"] > recorded["log_bias"]["happy"]

    images = tf.constant([p.read_bytes() for e in features.EMOTIONS for p in real_images("test", e, 2)])
    p, q = (tf.saved_model.load(d).signatures[features.PREDICT_IMAGE_SIGNATURE](
        **{features.IMAGES_INPUT: images}) for d in (plain, corrected))
    p, labels = p[features.PROBABILITIES_OUTPUT].numpy(), q[features.LABEL_OUTPUT].numpy()
    q = q[features.PROBABILITIES_OUTPUT].numpy()
    prior = (np.asarray(counts) + 1.0) / (sum(counts) + 7)
    expected = (p / prior) / (p / prior).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(q, expected, rtol=1e-4, atol=1e-6)
    assert [l.decode() for l in labels] == [features.EMOTIONS[i] for i in q.argmax(axis=1)]
    with pytest.raises(ValueError, match="needs the training count of each of the 7 classes"):
        export.export_serving_model(network, transform, features.EMOTIONS, str(tmp_path / "x"), 0.5)

    # A calibration temperature divides the logits (the bias included), and is recorded.
    tempered = export.export_serving_model(network, transform, features.EMOTIONS,
                                           str(tmp_path / "tempered"), 1.0, counts, 2.0)
    assert export.read_calibration_temperature(tempered) == 2.0
    assert export.read_calibration_temperature(corrected) == 1.0
    assert not os.path.exists(os.path.join(corrected, features.CALIBRATION_ASSET))
    recorded = json.loads(open(os.path.join(tempered, features.CALIBRATION_ASSET)).read())
    assert recorded == {"temperature": 2.0, "rule": features.OUTPUT_RULE}
    r = tf.saved_model.load(tempered).signatures[features.PREDICT_IMAGE_SIGNATURE](
        **{features.IMAGES_INPUT: images})[features.PROBABILITIES_OUTPUT].numpy()
    expected = np.sqrt(p / prior)
    np.testing.assert_allclose(r, expected / expected.sum(axis=1, keepdims=True), rtol=1e-4, atol=1e-6)
    assert (r.argmax(axis=1) == q.argmax(axis=1)).all()
    from pipeline.prior import applied
    rule = applied(tempered, features.EMOTIONS)
    assert rule.temperature == 2.0 and rule.strength == 1.0
    np.testing.assert_allclose(rule.network(r), p, rtol=1e-3, atol=1e-6)


def test_flip_when_unsure_answers_unsure_faces_as_the_flip_and_the_others_as_one_view(smoke, tmp_path):
    from components.trainer import export, model as model_lib
    import tensorflow_transform as tft

    output, _, _ = smoke
    transform = tft.TFTransformOutput(sorted(glob.glob(
        os.path.join(output, "tfx", "Transform", "transform_graph", "*")))[-1])
    images = tf.constant([p.read_bytes() for e in features.EMOTIONS for p in real_images("test", e, 3)])
    keras.utils.set_random_seed(3)
    network = model_lib.build("compact_resnet", 7)

    def export_at(threshold):
        path = export.export_serving_model(network, transform, features.EMOTIONS, str(tmp_path / str(threshold)),
                                           calibration_temperature=0.5, unsure={"threshold": threshold})
        assert export.read_flip_when_unsure(path) == {"threshold": threshold}
        signatures = tf.saved_model.load(path).signatures
        return {name: signatures[name](**{features.IMAGES_INPUT: images})
                for name in (features.PREDICT_IMAGE_SIGNATURE, "predict_image_flip",
                             features.FLIP_WHEN_UNSURE_SIGNATURE)}

    answers = {1.0: export_at(1.0)}
    one_view = answers[1.0][features.PREDICT_IMAGE_SIGNATURE][features.PROBABILITIES_OUTPUT].numpy()
    flip = answers[1.0]["predict_image_flip"][features.PROBABILITIES_OUTPUT].numpy()
    middle = float(np.median(one_view.max(axis=1)))   # about half the faces under it
    answers.update({threshold: export_at(threshold) for threshold in (0.0, middle)})
    unsure_at = {t: one_view.max(axis=1) < t for t in answers}
    assert 0 < unsure_at[middle].sum() < len(one_view) and not unsure_at[0.0].any()
    for threshold, out in answers.items():
        got = out[features.FLIP_WHEN_UNSURE_SIGNATURE]
        expected = np.where(unsure_at[threshold][:, None], flip, one_view)
        np.testing.assert_allclose(got[features.PROBABILITIES_OUTPUT].numpy(), expected, atol=2e-6)
        assert [l.decode() for l in got[features.LABEL_OUTPUT].numpy()] == [
            features.EMOTIONS[i] for i in expected.argmax(axis=1)]
    # One sure face alone: the mirror image is never asked for (an empty batch of them).
    sure = int(np.argmax(one_view.max(axis=1)))
    alone = tf.saved_model.load(str(tmp_path / str(middle))).signatures[features.FLIP_WHEN_UNSURE_SIGNATURE](
        **{features.IMAGES_INPUT: images[sure:sure + 1]})[features.PROBABILITIES_OUTPUT].numpy()
    np.testing.assert_allclose(alone, one_view[sure:sure + 1], atol=2e-6)


def test_the_unsure_threshold_is_the_lowest_within_the_tolerance_of_the_full_flip():
    from components.trainer import export

    truth = np.array([0, 0, 1, 1])
    # Faces 0 and 1 sure and right; face 2 unsure (0.45) and wrong alone, right with its
    # mirror image; face 3 fairly sure (0.6) and wrong alone, right with its mirror.
    one_view = np.array([[0.9, 0.1], [0.8, 0.2], [0.45, 0.35], [0.6, 0.4]])
    mirrored = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.1, 0.9]])
    fit = export.unsure_threshold(truth, one_view, mirrored)
    assert fit == {"threshold": 0.65, "faces": 4, "flipped_fraction": 0.5,
                   "accuracy": {"one_view": 0.5, "flip": 1.0, "flip_when_unsure": 1.0}}
    assert export.unsure_threshold(truth, one_view, mirrored, tolerance=0.25)["threshold"] == 0.5
    assert export.unsure_threshold(truth, one_view, one_view)["threshold"] == 0.3   # the mirror adds nothing
    nothing = tf.data.Dataset.from_tensor_slices((np.zeros((0, 48, 48, 1), np.float32),
                                                  np.zeros((0, 7), np.float32))).batch(4)
    nothing = export.validation_probabilities(keras.Sequential([keras.Input((48, 48, 1)), keras.layers.Flatten(),
                                                                keras.layers.Dense(7, activation="softmax")]), nothing)
    assert export.fitted_unsure_threshold(*nothing, np.zeros(7, np.float32), 1.0)["threshold"] == 1.0


def test_beam_dag_runner_runs_the_same_pipeline_and_leaves_no_temporary_files(fer2013_root,
                                                                              tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    summary, _ = run_smoke(fer2013_root, tmp_path / "run", "--runner", "beam", "--workers", "2",
                           env={"TMPDIR": str(scratch)})
    assert {node: c["state"] for node, c in summary["components"].items()} == {
        node: "COMPLETE" for node in NODES}
    assert summary["pushed"] and os.path.isfile(os.path.join(summary["pushed_path"], "saved_model.pb"))
    # TFX would copy itself (about 50 MB) into a new temporary folder for each Beam-powered
    # component and Beam stages worker packages into another; the run removes what it made.
    assert sorted(p.name for p in scratch.iterdir()) == []


def test_beam_arguments_name_the_project_so_tfx_does_not_package_itself(tmp_path):
    from tfx.utils import dependency_utils
    from pipeline.run import RunSettings, beam_args
    args = beam_args(RunSettings(data=str(tmp_path), output=str(tmp_path), runner="beam", workers=2))
    assert args == ["--direct_running_mode=multi_processing", "--direct_num_workers=2",
                    f"--setup_file={os.path.join(os.path.dirname(os.path.dirname(__file__)), 'setup.py')}"]
    assert dependency_utils.make_beam_dependency_flags(args) == args  # no ephemeral TFX sdist


@pytest.mark.parametrize("args, message", [
    (["run", "--data", "/nonexistent/fer2013", "--output", "x"], "data path does not exist"),
    (["run", "--data", ".", "--output", "x", "--classes", "happy,bored"], "unknown emotion(s) bored"),
    (["run", "--data", ".", "--output", "x", "--profile", "huge"], "invalid choice: 'huge'"),
    (["run", "--output", "x"], "the following arguments are required: --data"),
])
def test_bad_arguments_give_one_line_and_exit_2(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        code = cli.main(args)
    except SystemExit as e:  # argparse errors exit from inside the parser
        code = e.code
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
