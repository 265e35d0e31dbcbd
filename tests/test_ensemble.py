"""Exported models served as one (model 'ensemble'): the network, the members read from
shipped SavedModels, the export, the audit's decision rule, the settings' refusals; and
the Markdown table of `pipeline.ensemble` reports."""
import glob
import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from components.audit import audit
from components.trainer import ensemble, export, model as model_lib
from pipeline import cli, features, prior, ship
from pipeline.config import TrainingConfig, with_overrides
from tests.conftest import FER2013, REPO

COMPACT = str(REPO / "models" / "fer2013-compact")
DCNN = str(REPO / "models" / "fer2013-dcnn")


def _tiny(num_classes: int, seed: int) -> keras.Model:
    inputs = keras.Input(model_lib.INPUT_SHAPE)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, kernel_initializer=keras.initializers.
                                                                  RandomNormal(seed=seed))(inputs))
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x), name=f"tiny{seed}")


def test_the_ensemble_answers_the_mean_of_its_members_each_by_its_own_rule():
    members = [_tiny(3, 1), _tiny(3, 2)]
    biases = [np.asarray([0.0, 0.0, 0.0]), np.asarray([0.5, -1.0, 0.2])]
    temperatures = [0.7, 1.6]
    network = model_lib.Ensemble(members, biases, temperatures)
    faces = np.random.default_rng(0).random((5,) + model_lib.INPUT_SHAPE).astype(np.float32)
    expected = np.mean([prior.corrected(np.asarray(m(faces)), b, t)
                        for m, b, t in zip(members, biases, temperatures)], axis=0)
    np.testing.assert_allclose(np.asarray(network(faces)), expected, atol=1e-6)
    np.testing.assert_allclose(np.asarray(network(faces)).sum(axis=1), 1.0, atol=1e-6)
    assert all(not m.trainable for m in members) and not network.trainable_weights
    # Without biases and temperatures: the plain mean of the members' probabilities.
    np.testing.assert_allclose(np.asarray(model_lib.Ensemble(members)(faces)),
                               np.mean([np.asarray(m(faces)) for m in members], axis=0), atol=1e-6)
    with pytest.raises(ValueError, match="different numbers of classes"):
        model_lib.Ensemble([_tiny(3, 1), _tiny(7, 2)])
    with pytest.raises(ValueError, match="positive temperature"):
        model_lib.Ensemble(members, biases, [1.0, 0.0])


@pytest.fixture(scope="module")
def shipped_members():
    if not (FER2013 / "test").is_dir():
        pytest.skip("FER2013 not found")
    return ensemble.read_members([COMPACT, DCNN], features.EMOTIONS)


def _pngs(per_class: int):
    from components.trainer.standalone import load_split

    faces, _, _ = load_split(str(FER2013), "test", features.EMOTIONS, per_class=per_class)
    return faces, [tf.io.encode_png(tf.constant(np.round(f * 255).astype(np.uint8))).numpy() for f in faces]


def _served(path: str, pngs, signature=features.PREDICT_IMAGE_SIGNATURE) -> np.ndarray:
    return tf.saved_model.load(path).signatures[signature](
        **{features.IMAGES_INPUT: tf.constant(pngs)})[features.PROBABILITIES_OUTPUT].numpy()


def test_members_read_from_shipped_models_answer_as_those_models_serve(shipped_members):
    compact, dcnn = shipped_members
    for member, name in ((compact, "fer2013-compact"), (dcnn, "fer2013-dcnn")):
        metadata = json.load(open(os.path.join(REPO, "models", name, ship.METADATA_JSON)))
        assert member.architecture == metadata["recipe"]["model"]
        assert member.temperature == metadata["calibration_temperature"]
        assert member.describe() == {
            "model": name, "version": str(metadata["version"]), "architecture": member.architecture,
            "parameters": metadata["training"]["parameters"], "prior_correction": 0.0,
            "calibration_temperature": member.temperature,
            "publictest_accuracy": metadata["metrics_publictest"]["accuracy"],
            "publictest_macro_f1": metadata["metrics_publictest"]["macro_f1"]}
    network = ensemble.build(shipped_members)
    faces, pngs = _pngs(per_class=2)
    served = [_served(m.path, pngs) for m in shipped_members]
    np.testing.assert_allclose(np.asarray(network(faces)), np.mean(served, axis=0), atol=1e-5)
    assert model_lib.flops_per_image(network) == sum(model_lib.flops_per_image(m.network)
                                                     for m in shipped_members)


def test_an_exported_ensemble_serves_the_mean_and_records_its_members(shipped_members, smoke, tmp_path):
    import tensorflow_transform as tft

    output, _, _ = smoke
    transform = tft.TFTransformOutput(sorted(glob.glob(
        os.path.join(output, "tfx", "Transform", "transform_graph", "*")))[-1])
    record = ensemble.description(shipped_members)
    path = export.export_serving_model(ensemble.build(shipped_members), transform, list(features.EMOTIONS),
                                       str(tmp_path / "1"), ensemble=record)
    assert export.read_ensemble(path) == json.loads(json.dumps(record))
    assert record["rule"] == features.ENSEMBLE_RULE and len(record["members"]) == 2
    _, pngs = _pngs(per_class=2)
    for signature in (features.PREDICT_IMAGE_SIGNATURE, features.views_signature("flip")):
        np.testing.assert_allclose(_served(path, pngs, signature),
                                   np.mean([_served(m.path, pngs, signature) for m in shipped_members], axis=0),
                                   atol=1e-5)
    assert os.path.isfile(os.path.join(path, export.WARMUP_FILE))
    # The model card says what the served probabilities are.
    rule = audit.decision_rule({"ensemble": record, "prior_correction": None, "calibration_temperature": 0.9})
    assert "an ensemble of 2 networks" in rule and "fer2013-compact version" in rule
    compact = next(m for m in record["members"] if m["model"] == "fer2013-compact")
    assert f"(compact_resnet, calibration temperature {compact['calibration_temperature']})" in rule
    assert compact["calibration_temperature"] == json.load(open(os.path.join(COMPACT, ship.METADATA_JSON)))[
        "calibration_temperature"]
    assert rule.endswith("then a calibration temperature of 0.9 applied to that mean; `label` is the most "
                         "probable class.")


def test_a_member_is_refused_in_one_line_when_it_predicts_other_classes_or_is_missing(tmp_path):
    if not (FER2013 / "test").is_dir():
        pytest.skip("FER2013 not found")
    narrow = str(REPO / "models" / "fer2013-compact-happy-sad-neutral")
    with pytest.raises(ValueError, match=r"predicts happy, sad, neutral; the pipeline trains on angry, "):
        ensemble.read_member(narrow, features.EMOTIONS)
    with pytest.raises(ValueError, match=f"ensemble member {tmp_path}/none: no such directory"):
        ensemble.read_member(str(tmp_path / "none"), features.EMOTIONS)


def test_a_pushed_member_without_metadata_is_read_as_the_architecture_its_variables_fit(tmp_path):
    if not (FER2013 / "test").is_dir():
        pytest.skip("FER2013 not found")
    metadata = json.load(open(os.path.join(COMPACT, ship.METADATA_JSON)))
    pushed = tmp_path / "serving" / "fer2013-compact" / str(metadata["version"])
    shutil.copytree(os.path.join(COMPACT, str(metadata["version"])), pushed)
    member = ensemble.read_member(str(pushed.parent), features.EMOTIONS)
    assert member.architecture == metadata["recipe"]["model"] and member.shipped is None
    assert member.describe()["model"] == "fer2013-compact"


def test_ensemble_settings_are_refused_before_any_data_is_read(tmp_path, capsys):
    members = (COMPACT, DCNN)
    config = with_overrides(TrainingConfig(model="ensemble"), {"ensemble": list(members), "epochs": 0})
    assert config.ensemble == members and config.epochs == 0
    with pytest.raises(ValueError, match="exported as it is, not trained: epochs must be 0"):
        with_overrides(TrainingConfig(model="ensemble"), {"ensemble": list(members)})
    with pytest.raises(ValueError, match="model 'ensemble' needs its members"):
        with_overrides(TrainingConfig(model="ensemble"), {"epochs": 0})
    with pytest.raises(ValueError, match="ensemble members need model 'ensemble', got model 'dcnn'"):
        TrainingConfig(ensemble=members, epochs=0)
    with pytest.raises(ValueError, match="not trained"):
        TrainingConfig(model="ensemble", ensemble=members, epochs=0, warm_start="w.weights.h5")
    run = ["run", "--data", str(FER2013), "--output", str(tmp_path / "o"), "--model", "ensemble"]
    assert cli.main(run + ["--ensemble", COMPACT, str(tmp_path / "gone")]) == 2
    assert f"--ensemble {tmp_path / 'gone'}: no such directory" in capsys.readouterr().err
    narrow = str(REPO / "models" / "fer2013-compact-happy-sad-neutral")
    assert cli.main(run + ["--ensemble", COMPACT, narrow]) == 2
    assert "predicts happy, sad, neutral; the pipeline trains on angry, " in capsys.readouterr().err
    assert cli.main(run + ["--ensemble", COMPACT, "--epochs", "3"]) == 2
    assert "epochs must be 0" in capsys.readouterr().err
    assert cli.main(run) == 2
    assert "needs its members" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_the_run_summary_says_an_ensemble_was_exported_and_of_which_models():
    from pipeline import summary

    text = summary.format_text({"pipeline": "fer2013-ensemble", "seconds": 1, "components": {},
                                "blessed": True, "pushed": False, "training": {
                                    "epochs": 0, "best_val_accuracy": 0.0,
                                    "ensemble": ["fer2013-resnet18", "fer2013-dcnn"]}})
    assert ("Training: none: an ensemble of 2 exported models (fer2013-resnet18, fer2013-dcnn) was "
            "exported as one") in text.splitlines()
    assert "warm-start" not in text


def test_the_results_table_prints_every_view_set_an_ensemble_report_scored():
    report = REPO / "benchmarks" / "ensemble_resnet18_two_self_distilled_publictest.json"
    scores = json.loads(report.read_text())
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "results_table.py"), str(report)],
                          capture_output=True, text=True, check=True)
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and "%" in line]
    assert len(rows) == 3 * (len(scores["models"]) + 1)
    multiview = scores["ensemble_multiview_tta"]
    assert (f"| ensemble + multiview TTA | {multiview['accuracy']:.1%} | {multiview['macro_f1']:.3f} |"
            in rows)
