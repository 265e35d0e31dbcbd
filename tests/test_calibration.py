"""Temperature scaling: the fit on synthetic probabilities of a known temperature, the
calibration metrics on counted examples, the served rule and its inverse, and the fit on a
shipped model, whose expected calibration error must be the one its Evaluator measured."""
import dataclasses
import json
import os
import re

import numpy as np
import pytest

from pipeline import calibration, features, prior, ship
from pipeline.scoring import calibration_metrics
from tests.conftest import FER2013, REPO


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_the_fit_recovers_the_temperature_that_made_a_network_overconfident():
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 1.5, (20000, 7))
    truth = np.asarray([rng.choice(7, p=p) for p in _softmax(logits)])   # calibrated by construction
    for t in (2.0, 0.5):   # probabilities twice as sharp (overconfident), then half as sharp
        network = _softmax(logits * t)
        fitted = calibration.fit_temperature(truth, network, np.zeros(7))
        assert fitted == pytest.approx(t, rel=0.05)
        before = calibration_metrics(truth, network)
        after = calibration_metrics(truth, prior.corrected(network, np.zeros(7), fitted))
        assert after["nll"] < before["nll"] and after["ece"] < 0.02 < before["ece"]
        assert after["accuracy"] == before["accuracy"]   # a temperature alone keeps every label


def test_calibration_metrics_on_counted_examples():
    # Two confidence bins: 0.9 (right 1 of 2 times) and 0.6 (right 2 of 2 times).
    p = np.asarray([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
    truth = np.asarray([0, 1, 1, 1])
    m = calibration_metrics(truth, p)
    assert m["examples"] == 4 and m["accuracy"] == 0.75 and m["mean_confidence"] == 0.75
    assert m["ece"] == pytest.approx(0.5 * abs(0.5 - 0.9) + 0.5 * abs(1.0 - 0.6))
    assert m["nll"] == pytest.approx(-np.mean(np.log([0.9, 0.1, 0.6, 0.6])), abs=1e-4)


def test_the_served_rule_is_undone_with_its_temperature_and_bias():
    p = np.asarray([[0.7, 0.2, 0.1], [0.05, 0.05, 0.9]])
    rule = prior.OutputRule(0.5, np.asarray([-0.4, 1.2, 0.3]), [10, 2, 5], temperature=1.7)
    served = rule.served(p)
    expected = _softmax((np.log(p) + rule.log_bias) / 1.7)
    np.testing.assert_allclose(served, expected, rtol=1e-9)
    np.testing.assert_allclose(rule.network(served), p, rtol=1e-9)
    # A temperature never changes the most probable class, with or without a bias.
    assert (prior.OutputRule(0.0, np.zeros(3), temperature=3.0).served(p).argmax(axis=1)
            == p.argmax(axis=1)).all()
    for t in (0.3, 3.0):
        assert (dataclasses.replace(rule, temperature=t).served(p).argmax(axis=1)
                == served.argmax(axis=1)).all()


def _shipped(name: str) -> str:
    metadata = json.load(open(REPO / "models" / name / ship.METADATA_JSON))
    return str(REPO / "models" / name / str(metadata["version"]))


def test_the_fit_on_a_shipped_model_measures_the_ece_its_evaluator_measured(tmp_path, capsys):
    if not (FER2013 / "test").is_dir():
        pytest.skip("FER2013 not found")
    path = _shipped("fer2013-compact")
    report_file = tmp_path / "calibration.json"
    assert calibration.main(["--data", str(FER2013), "--model", path, "--json", str(report_file)]) == 0
    assert "recommended (least validation NLL): --calibration-temperature" in capsys.readouterr().out
    report = json.loads(report_file.read_text())
    test, validation = report["splits"]["publictest"], report["splits"]["validation"]
    assert test["served"]["examples"] == 3589 and validation["served"]["examples"] == 2919
    metadata = json.load(open(REPO / "models" / "fer2013-compact" / ship.METADATA_JSON))
    assert test["served"]["accuracy"] == metadata["metrics_publictest"]["accuracy"]
    # The same expected calibration error as TFMA's reliability table in the model's audit.
    card = open(os.path.join(path, "assets.extra", "model_card.md")).read()
    audited = float(re.search(r"expected calibration error of the top-1 prediction ([0-9.]+)", card).group(1))
    assert test["served"]["ece"] == pytest.approx(audited, abs=2e-4)
    # Against temperature 1, the fitted temperature lowers the validation likelihood it was
    # fitted on, and the calibration error on both splits.
    fitted = report["recommended"]
    assert calibration.TEMPERATURE_RANGE[0] < fitted < calibration.TEMPERATURE_RANGE[1] and fitted != 1.0
    assert validation["fitted"]["nll"] < validation["temperature_1"]["nll"]
    assert validation["fitted"]["ece"] < validation["temperature_1"]["ece"]
    assert test["fitted"]["ece"] < test["temperature_1"]["ece"]
    assert test["served"]["temperature"] == report["applied_temperature"] == metadata.get(
        "calibration_temperature", 1.0)


def test_the_fit_refuses_a_folder_without_a_model_in_one_line(tmp_path, capsys):
    assert calibration.main(["--data", str(FER2013), "--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_the_full_profile_has_the_trainer_fit_the_temperature_and_the_smoke_profile_does_not():
    from pipeline.config import profile_configs

    assert profile_configs("full", "dcnn", features.EMOTIONS).training.calibration_temperature == 0.0
    assert profile_configs("smoke", "dcnn", features.EMOTIONS).training.calibration_temperature == 1.0
