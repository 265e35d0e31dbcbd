"""Audit: confidence intervals, the fairness gate (on real TFMA output of a model made
deliberately worse on one annotated group, and through the pipeline), the audit report and
the model card."""
import glob
import json
import os
import shutil

import pytest
import tensorflow as tf
import tensorflow_model_analysis as tfma

from components.audit import audit
from components.data_validation.component import curated_schema
from pipeline import features
from pipeline.config import EvaluationConfig
from pipeline.evaluation import (calibration, confusion_matrix, evaluation_metrics, make_eval_config,
                                 validation_failures)
from pipeline.run import SCHEMA_FILE
from pipeline.scoring import matrix_metrics
from tests.conftest import SMOKE_ANNOTATIONS, fer_pipeline, run_smoke


def test_wilson_intervals_on_known_counts():
    assert audit.wilson_interval(50, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    assert audit.wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert audit.wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert audit.wilson_interval(0, 0) == (0.0, 1.0)


def test_label_metrics_from_a_confusion_matrix_leave_out_classes_absent_from_a_slice():
    # rows actual, columns predicted: 6 happy (5 right), 5 sad (3 right), no neutral at all
    scores = matrix_metrics([[5, 1, 0], [2, 3, 0], [0, 0, 0]], ["happy", "sad", "neutral"])
    assert scores["accuracy"] == round(8 / 11, 4) and scores["examples"] == 11
    assert scores["per_class"]["happy"] == {"precision": round(5 / 7, 4), "recall": round(5 / 6, 4),
                                            "f1": round(10 / 13, 4), "support": 6}
    assert scores["per_class"]["neutral"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert scores["macro_f1"] == round((0.7692 + 0.6667) / 2, 4)   # neutral is not averaged in


METRICS = {
    "overall": {"sparse_categorical_accuracy": 0.6, "example_count": 200},
    "gender=female": {"sparse_categorical_accuracy": 0.45, "example_count": 80},
    "gender=male": {"sparse_categorical_accuracy": 0.7, "example_count": 120},
    "gender=other": {"sparse_categorical_accuracy": 0.1, "example_count": 5},
    "brightness_band=dark": {"sparse_categorical_accuracy": 0.3, "example_count": 60},
    "label_name=disgust": {"sparse_categorical_accuracy": 0.0, "example_count": 40},
}


def test_fairness_gate_judges_annotation_slices_big_enough_and_proxies_only_when_asked():
    rows = audit.slice_rows(METRICS, ["gender"])
    kinds = {r["slice"]: r["kind"] for r in rows}
    assert kinds == {"overall": "overall", "gender=female": "annotation", "gender=male": "annotation",
                     "gender=other": "annotation", "brightness_band=dark": "image proxy",
                     "label_name=disgust": "emotion"}
    female = next(r for r in rows if r["slice"] == "gender=female")
    assert female["gap_to_overall"] == pytest.approx(0.15)
    assert female["ci95"] == pytest.approx([0.3458, 0.5588], abs=1e-4)
    failures = audit.fairness_failures(rows, EvaluationConfig())
    assert failures == ["fairness: accuracy on gender=female is 0.4500 (n=80, 95% CI 0.346-0.559), "
                        "0.1500 below overall; allowed gap 0.1"]  # gender=other: 5 < 30 examples
    with_proxies = audit.fairness_failures(rows, EvaluationConfig(fairness_proxy_slices=True))
    assert len(with_proxies) == 2 and "brightness_band=dark" in with_proxies[1]
    assert audit.fairness_failures(rows, EvaluationConfig(fairness_max_gap=0.2)) == []


def test_the_model_card_states_the_decision_rule_with_or_without_a_prior_correction_and_temperature():
    rows = dict(pipeline="p", classes=["happy", "sad", "disgust"], metrics=METRICS, evaluator={},
                evaluator_blessed=True, gates=EvaluationConfig(), annotation_columns=[],
                lineage={}, data={})
    plain = audit.build_report(**rows)
    assert "network's own" in audit.model_card(plain) and "no prior correction" in audit.render_html(plain)
    corrected = audit.build_report(**rows, prior_correction={
        "strength": 0.5, "train_counts": {"happy": 7215, "sad": 4830, "disgust": 436},
        "log_bias": {"happy": -0.9, "sad": -0.7, "disgust": 1.6}})
    card = audit.model_card(corrected)
    assert "to the power 0.5" in card and "(disgust most of all)" in card
    assert "prior_correction.json" in audit.render_html(corrected)
    assert "calibration temperature" not in card
    tempered = audit.model_card(audit.build_report(**rows, calibration_temperature=1.25))
    assert "network's own up to calibration" in tempered and "no prior correction" in tempered
    assert "calibration temperature of 1.25" in tempered and "overconfident" in tempered
    cooled = audit.model_card(audit.build_report(**rows, prior_correction={
        "strength": 0.5, "train_counts": {"happy": 7215, "sad": 4830, "disgust": 436},
        "log_bias": {"happy": -0.9, "sad": -0.7, "disgust": 1.6}}, calibration_temperature=0.7))
    assert "to the power 0.5" in cooled and "calibration temperature of 0.7" in cooled
    assert "underconfident" in cooled


class Saboteur(tf.Module):
    """A 'model' with the pipeline's signatures that is right on every face except those of
    one annotated group, where it always answers the next class: deliberately unfair. Its
    answer gets probability `confidence`, the other classes share the rest."""

    def __init__(self, classes, column: str, bad_value: str, confidence: float = 1.0):
        super().__init__()
        self.classes = tf.constant(list(classes))
        self.column, self.bad_value = column, bad_value
        self.confidence, self.rest = confidence, (1.0 - confidence) / (len(classes) - 1)
        self.spec = {features.LABEL_NAME_KEY: tf.io.FixedLenFeature([], tf.string),
                     column: tf.io.FixedLenFeature([], tf.string)}

    def _class_ids(self, parsed):
        matches = tf.equal(tf.expand_dims(parsed[features.LABEL_NAME_KEY], 1), self.classes)
        return tf.argmax(tf.cast(matches, tf.int64), axis=1)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve(self, examples):
        parsed = tf.io.parse_example(examples, self.spec)
        truth = self._class_ids(parsed)
        answer = tf.where(tf.equal(parsed[self.column], self.bad_value),
                          (truth + 1) % tf.size(self.classes, out_type=tf.int64), truth)
        return {features.PROBABILITIES_OUTPUT: tf.one_hot(
            answer, tf.size(self.classes), on_value=self.confidence, off_value=self.rest)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def transform(self, examples):
        return {features.CLASS_ID_KEY: self._class_ids(tf.io.parse_example(examples, self.spec))}


def test_a_model_worse_on_one_annotated_group_is_not_blessed_naming_the_slice(smoke, tmp_path):
    output, _, _ = smoke
    [split] = glob.glob(os.path.join(output, "tfx", "Fer2013ExampleGen", "examples", "*", "Split-eval"))
    model = Saboteur(features.EMOTIONS, "gender", "female")
    path = str(tmp_path / "saboteur")
    tf.saved_model.save(model, path, signatures={
        features.SERVING_DEFAULT_SIGNATURE: model.serve.get_concrete_function(),
        features.TRANSFORM_FEATURES_SIGNATURE: model.transform.get_concrete_function()})
    gates = EvaluationConfig(min_accuracy=0.0)
    config = make_eval_config(features.EMOTIONS, gates, ["gender"])
    for spec in config.metrics_specs:  # no baseline model here: drop the no-regression gate
        for metric in spec.metrics:
            for threshold in metric.per_slice_thresholds:
                threshold.threshold.ClearField("change_threshold")
    evaluation = str(tmp_path / "evaluation")
    tfma.run_model_analysis(
        eval_shared_model=tfma.default_eval_shared_model(path, eval_config=config),
        eval_config=config, data_location=os.path.join(split, "*"), output_path=evaluation,
        schema=curated_schema(SCHEMA_FILE, features.EMOTIONS, ["gender"]))
    evaluator = validation_failures(evaluation)
    assert evaluator["ok"]  # the accuracy floor alone would have blessed it
    metrics = evaluation_metrics(evaluation, list(features.EMOTIONS))
    assert metrics["gender=female"]["sparse_categorical_accuracy"] == 0.0
    assert metrics["gender=male"]["sparse_categorical_accuracy"] == 1.0
    # Fairness Indicators: every female face of every emotion is missed, no male face is.
    assert metrics["gender=female"]["fairness_indicators_metrics/false_negative_rate@0.5/happy"] == 1.0
    assert metrics["gender=male"]["fairness_indicators_metrics/false_negative_rate@0.5/happy"] == 0.0
    # Calibration: it is always 100% confident, so its ECE is exactly its error rate.
    reliability = calibration(evaluation)
    assert reliability["gender=male"]["ece"] == 0.0
    assert reliability["overall"]["ece"] == pytest.approx(
        1 - metrics["overall"]["sparse_categorical_accuracy"], abs=1e-4)
    [top_bin] = reliability["overall"]["bins"]
    assert top_bin["confidence"] == 1.0 and top_bin["examples"] == metrics["overall"]["example_count"]
    report = audit.build_report(pipeline="saboteur", classes=features.EMOTIONS, metrics=metrics,
                                evaluator=evaluator, evaluator_blessed=True, gates=gates,
                                annotation_columns=["gender"], lineage={}, data={})
    assert not report["blessed"]
    [failure] = report["gates"][1]["why"]
    assert failure.startswith("fairness: accuracy on gender=female is 0.0000 (n=")


def test_with_a_regression_baseline_every_number_read_back_is_the_candidates(smoke, tmp_path):
    """A second run evaluates its model against the last blessed one: TFMA then writes both
    models' metrics and plots. The readers must report the candidate's alone (they once
    mixed in the baseline's: its accuracy and calibration, and twice the confusion counts).
    Both models are underconfident (40% on the class they answer): precision, recall and F1
    must still be those of the arg-max label (they were once TFMA's one-vs-rest metrics at
    threshold 0.5, which no probability here reaches: every recall read 0)."""
    output, _, _ = smoke
    [split] = glob.glob(os.path.join(output, "tfx", "Fer2013ExampleGen", "examples", "*", "Split-eval"))
    paths = {}
    for name, bad_value in ((tfma.CANDIDATE_KEY, "female"), (tfma.BASELINE_KEY, "male")):
        model = Saboteur(features.EMOTIONS, "gender", bad_value, confidence=0.4)
        paths[name] = str(tmp_path / name)
        tf.saved_model.save(model, paths[name], signatures={
            features.SERVING_DEFAULT_SIGNATURE: model.serve.get_concrete_function(),
            features.TRANSFORM_FEATURES_SIGNATURE: model.transform.get_concrete_function()})
    config = make_eval_config(features.EMOTIONS, EvaluationConfig(min_accuracy=0.0), ["gender"])
    [spec] = config.model_specs
    spec.name = tfma.CANDIDATE_KEY
    baseline = config.model_specs.add()
    baseline.CopyFrom(spec)
    baseline.name, baseline.is_baseline = tfma.BASELINE_KEY, True
    evaluation = str(tmp_path / "evaluation")
    tfma.run_model_analysis(
        eval_shared_model=[tfma.default_eval_shared_model(p, model_name=n, eval_config=config)
                           for n, p in paths.items()],
        eval_config=config, data_location=os.path.join(split, "*"), output_path=evaluation,
        schema=curated_schema(SCHEMA_FILE, features.EMOTIONS, ["gender"]))
    names = {item.key.model_name for per_slice in tfma.load_metrics(evaluation)
             for item in per_slice.metric_keys_and_values}
    assert names == {tfma.CANDIDATE_KEY, tfma.BASELINE_KEY}   # both are in the output
    metrics = evaluation_metrics(evaluation, list(features.EMOTIONS))
    assert metrics["gender=female"]["sparse_categorical_accuracy"] == 0.0   # the candidate's, not
    assert metrics["gender=male"]["sparse_categorical_accuracy"] == 1.0     # the baseline's
    reliability = calibration(evaluation)
    assert reliability["gender=male"]["ece"] == pytest.approx(0.6, abs=1e-4)    # right, 40% sure
    assert reliability["gender=female"]["ece"] == pytest.approx(0.4, abs=1e-4)  # wrong, 40% sure
    matrix = confusion_matrix(evaluation, len(features.EMOTIONS))
    assert sum(map(sum, matrix)) == metrics["overall"]["example_count"]
    right = sum(matrix[i][i] for i in range(len(features.EMOTIONS)))
    assert right / metrics["overall"]["example_count"] == pytest.approx(
        metrics["overall"]["sparse_categorical_accuracy"], abs=1e-4)
    # Label metrics: the candidate is right on every male face and wrong on every female one.
    male, female = metrics["gender=male"], metrics["gender=female"]
    assert male["macro_f1_score"] == male["macro_recall"] == male["recall/happy"] == 1.0
    assert female["macro_f1_score"] == female["macro_precision"] == female["recall/happy"] == 0.0
    expected = matrix_metrics(matrix, features.EMOTIONS)
    assert metrics["overall"]["macro_f1_score"] == expected["macro_f1"]
    for name in features.EMOTIONS:
        assert metrics["overall"][f"recall/{name}"] == expected["per_class"][name]["recall"]
        assert metrics["overall"][f"precision/{name}"] == expected["per_class"][name]["precision"]
        assert metrics["overall"][f"f1_score/{name}"] == expected["per_class"][name]["f1"]
    # An emotion slice holds one true class: the others are only there if predicted.
    sad_slice = metrics["label_name=sad"]
    assert sad_slice["recall/sad"] == pytest.approx(sad_slice["sparse_categorical_accuracy"], abs=1e-4)
    assert sad_slice["recall/happy"] is None   # next class after sad is surprise, never happy


def test_every_run_writes_an_audit_report_and_model_card_beside_the_pushed_model(smoke):
    output, summary, stdout = smoke
    assert summary["audit"]["blessed"] and summary["blessed"]
    for where in (os.path.join(output, "reports"), os.path.join(summary["pushed_path"], "assets.extra")):
        report = json.load(open(os.path.join(where, audit.AUDIT_JSON)))
        assert {r["slice"] for r in report["slices"]} >= {"overall", "gender=female", "brightness_band=dark"}
        assert report["pushed_version"] == summary["pushed_path"]
        assert report["lineage"]["model_artifact_id"] > 0 and report["data"]["input_fingerprint_sha256"] != "unknown"
        overall = next(r for r in report["slices"] if r["slice"] == "overall")
        assert 0.0 <= overall["ece"] <= 1.0
        assert sum(b["examples"] for b in report["reliability"]) == overall["examples"]
        assert set(overall["fairness_indicators"]["fnr"]) == set(features.EMOTIONS)
        female = next(r for r in report["slices"] if r["slice"] == "gender=female")
        assert 0.0 <= female["fairness_indicators"]["fpr"]["happy"] <= 1.0
        assert report["lineage"]["baseline_model_artifact_id"] is None  # a first run
        page = open(os.path.join(where, audit.AUDIT_HTML)).read()
        assert "gender=female" in page and "NOT demographic" in page and "95% Wilson" in page
        assert "<h2>Calibration</h2>" in page and "<h2>Fairness Indicators</h2>" in page
        card = open(os.path.join(where, audit.MODEL_CARD)).read()
        for text in ("## Intended use", "## Out-of-scope uses", "Surveillance", "hiring",
                     "AI Act", "48x48 grayscale", "Label noise", "No demographic labels",
                     "## Privacy", "## Caveats", "| gender=female | annotation |",
                     "Decision rule: `probabilities` are the network's own"):
            assert text in card
    assert "Audit: " in stdout and "model_card.md" in stdout


def _audit(output) -> dict:
    with open(os.path.join(output, "reports", audit.AUDIT_JSON)) as f:
        return json.load(f)


def test_the_fairness_gate_stops_the_push_and_a_refused_model_never_becomes_the_baseline(
        smoke, fer2013_root, tmp_path):
    # A copy of the smoke run (its ML Metadata included): these runs push models, and the
    # other tests expect the smoke output as it was.
    output = tmp_path / "smoke"
    shutil.copytree(smoke[0], output)
    first_model = _audit(output)["lineage"]["model_artifact_id"]
    annotations = ("--annotations", str(smoke[0].parent / SMOKE_ANNOTATIONS))
    done = fer_pipeline("run", "--data", str(fer2013_root), "--output", str(output), "--profile", "smoke",
                        *annotations, "--fairness-max-gap", "0")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.load(open(os.path.join(output, "reports", "summary.json")))
    assert summary["components"]["Trainer"]["state"] == "CACHED"
    assert not summary["blessed"] and not summary["pushed"]
    assert "Blessed: NO: fairness: accuracy on gender=" in done.stdout
    # A new model (1 epoch) that the Evaluator blesses and the fairness gate refuses ...
    summary, _ = run_smoke(fer2013_root, output, *annotations, "--epochs", "1", "--fairness-max-gap", "0")
    refused = _audit(output)
    assert refused["gates"][0]["passed"] and not refused["blessed"] and not summary["pushed"]
    assert refused["lineage"]["model_artifact_id"] != first_model
    assert refused["lineage"]["baseline_model_artifact_id"] == first_model
    # ... is not the regression baseline of the next run: the first, audited model still is.
    summary, _ = run_smoke(fer2013_root, output, *annotations, "--epochs", "1")
    assert summary["components"]["Trainer"]["state"] == "CACHED"
    again = _audit(output)
    assert again["lineage"]["model_artifact_id"] == refused["lineage"]["model_artifact_id"]
    assert again["lineage"]["baseline_model_artifact_id"] == first_model
