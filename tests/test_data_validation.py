"""Data validation on real FER2013 images: spans, drift, skew, imbalance, the curated schema,
the gate that stops a run before Transform, and the data report."""
import json
import os
import pathlib

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv
from PIL import Image

from components.data_validation import checks, component, report
from components.example_gen import fer2013
from components.trainer import data, recipe
from pipeline import cli, features
from pipeline.config import ValidationConfig
from pipeline.run import SCHEMA_FILE
from tests.conftest import FER2013, fer_pipeline

SPAN_NODES = {"PreviousSpanExampleGen", "PreviousSpanStatisticsGen", "DriftValidator"}


def summary_of(output) -> dict:
    with open(os.path.join(output, "reports", "summary.json")) as f:
        return json.load(f)


def _images(split_dir: str, emotion: str):
    folder = FER2013 / split_dir / emotion
    if not folder.is_dir():
        pytest.skip(f"FER2013 images not found at {FER2013}")
    return sorted(folder.iterdir())


def make_span(root: pathlib.Path, offset: int, train_per_class: dict, eval_per_class: int = 20,
              darken: float = 1.0) -> pathlib.Path:
    """A Kaggle-layout span from real images, starting at image `offset` of each emotion;
    `darken` < 1 multiplies every pixel (a camera or lighting change)."""
    for split_dir, per_class in (("train", train_per_class), ("test", eval_per_class)):
        for emotion in features.EMOTIONS:
            n = per_class[emotion] if isinstance(per_class, dict) else per_class
            target = root / split_dir / emotion
            target.mkdir(parents=True, exist_ok=True)
            for path in _images(split_dir, emotion)[offset:offset + n]:
                if darken == 1.0:
                    (target / path.name).symlink_to(path)
                else:
                    pixels = np.asarray(Image.open(path), dtype=np.float32) * darken
                    Image.fromarray(pixels.astype(np.uint8)).save(target / path.name)
    return root


BALANCED = {e: 40 for e in features.EMOTIONS}
MOSTLY_HAPPY = {e: (200 if e == "happy" else 4) for e in features.EMOTIONS}


def spans(tmp_path, second: dict, darken: float = 1.0) -> pathlib.Path:
    make_span(tmp_path / "data" / "span-1", 0, BALANCED)
    make_span(tmp_path / "data" / "span-2", 40, second, darken=darken)
    return tmp_path / "data"


# ----------------------------------------------------------------------------
# End to end, through `fer-pipeline run`
# ----------------------------------------------------------------------------

def test_clean_second_span_passes_and_is_trained_and_pushed(tmp_path):
    done = fer_pipeline("run", "--data", str(spans(tmp_path, BALANCED)), "--output",
                        str(tmp_path / "out"), "--profile", "smoke")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = summary_of(tmp_path / "out")
    states = {node: c["state"] for node, c in summary["components"].items()}
    assert all(states[n] == "COMPLETE" for n in SPAN_NODES | {"Transform", "Trainer", "Pusher"})
    validation = summary["data_validation"]
    assert not validation["blocked"] and validation["findings"] == []
    assert validation["spans"] == {"current": 2, "current_name": "span-2", "previous": 1,
                                   "previous_name": "span-1"}
    drift = [d for d in validation["distances"] if d["check"] == "drift"]
    assert {(d["feature"], d["where"]) for d in drift} == {
        (f, f"span-2 {s} vs span-1 {s}") for f in ("label_name", "brightness", "contrast")
        for s in ("train", "eval")}
    assert all(d["value"] < d["threshold"] for d in drift)
    assert validation["class_distribution"]["span-2"]["train"] == {e: 40 for e in features.EMOTIONS}
    assert summary["pushed"] and "Data validation (span-2 against span-1): passed" in done.stdout


def test_span_made_mostly_of_one_emotion_is_stopped_before_training(tmp_path):
    output = tmp_path / "out"
    done = fer_pipeline("run", "--data", str(spans(tmp_path, MOSTLY_HAPPY)), "--output",
                        str(output), "--profile", "smoke")
    assert done.returncode == 3, done.stderr[-3000:]
    summary = summary_of(output)
    states = {node: c["state"] for node, c in summary["components"].items()}
    assert states["DataValidationGate"] == "COMPLETE"
    assert {states[n] for n in ("Transform", "Trainer", "Evaluator", "Pusher")} == {"NOT_RUN"}
    assert not os.path.exists(output / "tfx" / "Trainer")
    findings = summary["data_validation"]["findings"]
    drift = [f for f in findings if f["check"] == "drift" and f["where"] == "span-2 train vs span-1 train"]
    assert len(drift) == 1 and drift[0]["feature"] == "label_name" and drift[0]["blocking"]
    # 40 happy of 64 sampled against 40 of 280: |0.625 - 0.143| = 0.482
    assert drift[0]["measured"] == pytest.approx(40 / 64 - 40 / 280, abs=1e-3)
    assert drift[0]["threshold"] == pytest.approx(0.1)
    assert ("blocks: drift of label_name (span-2 train vs span-1 train): L-infinity distance "
            "0.4821 above the threshold 0.1; largest change: happy") in done.stdout
    assert "no model was trained: data validation blocked the run" in done.stdout
    assert "Transform and training do not run" in done.stdout
    page = (output / "reports" / report.REPORT_HTML).read_text()
    assert "BLOCKED" in page and "<svg" in page and "label_name" in page


def test_darkened_span_trips_the_brightness_drift(tmp_path):
    output = tmp_path / "out"
    done = fer_pipeline("run", "--data", str(spans(tmp_path, BALANCED, darken=0.5)), "--output",
                        str(output), "--profile", "smoke")
    assert done.returncode == 3, done.stderr[-3000:]
    findings = summary_of(output)["data_validation"]["findings"]
    breached = {(f["feature"], f["where"]) for f in findings if f["check"] == "drift"}
    assert ("brightness", "span-2 train vs span-1 train") in breached
    assert ("brightness", "span-2 eval vs span-1 eval") in breached
    assert all(f["feature"] != "label_name" for f in findings)  # same classes, only darker
    brightness = next(f for f in findings if f["feature"] == "brightness")
    assert brightness["measured"] > 0.3 and brightness["threshold"] == pytest.approx(0.1)


def test_real_train_split_raises_the_imbalance_warning_naming_disgust(fer2013_root, tmp_path):
    output = tmp_path / "out"
    done = fer_pipeline("validate", "--data", str(fer2013_root), "--output", str(output))
    assert done.returncode == 0, done.stderr[-3000:]
    summary = summary_of(output)
    assert set(summary["components"]) == {
        "Fer2013ExampleGen", "StatisticsGen", "CuratedSchemaGen", "ExampleValidator",
        "SkewValidator", "DataValidationGate"}
    validation = summary["data_validation"]
    counts = validation["class_distribution"]["data"]["train"]
    assert counts == {e: len(os.listdir(fer2013_root / "train" / e)) for e in features.EMOTIONS}
    warnings = [f for f in validation["findings"] if f["check"] == "imbalance" and f["where"] == "train"]
    assert warnings and not any(f["blocking"] for f in warnings) and not validation["blocked"]
    share = next(f for f in warnings if "below the minimum share" in f["message"])
    assert "'disgust'" in share["message"] and share["measured"] == pytest.approx(436 / 28709, abs=1e-4)
    ratio = next(f for f in warnings if "ratio" in f["message"])
    assert "happy/disgust" in ratio["message"] and ratio["measured"] == pytest.approx(7215 / 436, abs=0.01)
    assert "warns: class 'disgust' is 1.5% of train" in done.stdout
    assert "BLOCKED" not in done.stdout
    skew = {d["feature"]: d for d in validation["distances"] if d["where"] == "eval vs train"}
    assert set(skew) == {"label_name", "brightness", "contrast"}
    assert not any(d["breached"] for d in skew.values())
    assert skew["label_name"]["value"] == pytest.approx(0.0137, abs=2e-3)


def test_imbalance_can_be_configured_to_block(tmp_path):
    config = tmp_path / "validation.yaml"
    config.write_text("imbalance_action: block\nmax_imbalance_ratio: 5\n")
    output = tmp_path / "out"
    make_span(tmp_path / "data", 0, MOSTLY_HAPPY)
    done = fer_pipeline("validate", "--data", str(tmp_path / "data"), "--output", str(output),
                        "--profile", "smoke", "--validation-config", str(config))
    assert done.returncode == 3, done.stderr[-3000:]
    findings = summary_of(output)["data_validation"]["findings"]
    assert any(f["check"] == "imbalance" and f["blocking"] and "happy/" in f["message"]
               for f in findings)


# ----------------------------------------------------------------------------
# The pieces
# ----------------------------------------------------------------------------

def _stats_of(examples) -> "tfdv.DatasetFeatureStatisticsList":
    return tfdv.generate_statistics_from_dataframe(pd.DataFrame(examples))


def test_curated_schema_flags_an_unknown_label_and_a_missing_image(tmp_path):
    schema = component.curated_schema(SCHEMA_FILE, ["happy", "sad", "neutral"])
    domain = next(d for d in schema.string_domain if d.name == component.LABEL_DOMAIN)
    assert list(domain.value) == ["happy", "sad", "neutral"]
    path = _images("test", "happy")[0]
    pixels = np.asarray(Image.open(path))
    good = tf.train.Example.FromString(
        fer2013.make_example(path.read_bytes(), "happy", "PublicTest", path.stem, pixels))
    records = []
    for label, with_image in (("happy", True), ("sad", True), ("angry", True), ("neutral", False)):
        example = tf.train.Example()
        example.CopyFrom(good)
        example.features.feature[features.LABEL_NAME_KEY].bytes_list.value[:] = [label.encode()]
        if not with_image:
            del example.features.feature[features.IMAGE_KEY]
        records.append(example.SerializeToString())
    anomalies = tfdv.validate_statistics(_stats_from_examples(records, tmp_path), schema)
    found = checks.schema_findings({"train": anomalies}, ValidationConfig())
    by_feature = {f.feature: f for f in found}
    assert set(by_feature) == {features.LABEL_NAME_KEY, features.IMAGE_KEY}
    assert "angry" in by_feature[features.LABEL_NAME_KEY].message
    assert all(f.blocking for f in found)


def _stats_from_examples(records, tmp_path):
    path = str(tmp_path / "data.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record)
    return tfdv.generate_statistics_from_tfrecord(path)


def test_imbalance_findings_name_the_class_share_ratio_and_bounds():
    counts = {"angry": 500, "disgust": 10, "happy": 900}
    found = checks.imbalance_findings(counts, "train", ValidationConfig())
    assert [f.message for f in found] == [
        "class 'disgust' is 0.7% of train (10 of 1,410), below the minimum share 3.0%",
        "imbalance ratio happy/disgust in train is 90.0 (900 / 10), above the maximum 10"]
    assert not any(f.blocking for f in found)
    assert checks.imbalance_findings({"a": 50, "b": 40}, "eval", ValidationConfig()) == []
    missing = checks.imbalance_findings({"a": 50, "b": 0}, "eval", ValidationConfig(imbalance_action="block"))
    assert all(f.blocking for f in missing) and "0.0% of eval" in missing[0].message


def test_class_counts_come_from_tfdv_statistics_of_the_string_label():
    stats = _stats_of({features.LABEL_NAME_KEY: ["happy"] * 7 + ["sad"] * 3 + ["contempt"]})
    assert checks.class_counts(stats, ["happy", "sad", "neutral"]) == {
        "happy": 7, "sad": 3, "neutral": 0, "contempt": 1}


def test_class_weights_follow_the_counts():
    weights = recipe.class_weights([400, 40, 160])
    assert weights == pytest.approx({0: 0.5, 1: 5.0, 2: 1.25})
    counts = np.array([400, 40, 160])
    assert sum(weights[c] * n for c, n in enumerate(counts)) == pytest.approx(counts.sum())
    assert recipe.class_weights([10, 0, 10]) == {0: 1.0, 1: 1.0, 2: 1.0}


def test_oversampling_draws_every_class_equally_often():
    labels = np.array([0] * 300 + [1] * 30 + [2] * 70)
    examples = tf.data.Dataset.from_tensor_slices({features.CLASS_ID_KEY: labels})
    counts = data.class_counts(examples, 3)
    assert counts.tolist() == [300, 30, 70]
    drawn = np.array([e[features.CLASS_ID_KEY].numpy() for e in data._oversampled(examples, counts, 1)])
    assert len(drawn) == 400
    assert np.all(np.abs(np.bincount(drawn, minlength=3) / 400 - 1 / 3) < 0.08)


@pytest.mark.parametrize("imbalance", ["none", "oversample"])
def test_each_epochs_training_order_follows_from_the_seed_and_the_epoch_number(imbalance):
    labels = np.array([0] * 30 + [1] * 10 + [2] * 20)
    examples = tf.data.Dataset.from_tensor_slices({features.CLASS_ID_KEY: labels, "index": np.arange(60)})
    counts = data.class_counts(examples, 3)

    def run(first, last):   # as a fresh process would: a new dataset and epoch counter
        number = data.EpochNumber()
        ordered = data.training_order(examples, counts, 7, imbalance, number.variable)
        orders = []
        for epoch in range(first, last):
            number.on_epoch_begin(epoch)
            orders.append([int(e["index"]) for e in ordered])
        return orders

    assert int(data.training_order(examples, counts, 7, imbalance, data.EpochNumber().variable)
               .cardinality()) == 60   # known to Keras, for the epoch's length
    straight = run(0, 4)
    assert run(2, 4) == straight[2:]   # resumed at epoch 3: the orders an uninterrupted run drew
    assert len({tuple(order) for order in straight}) == 4   # a new order every epoch
    if imbalance == "none":
        assert all(sorted(order) == list(range(60)) for order in straight)
    else:
        assert all(len(order) == 60 for order in straight)


def test_spans_newest_is_ingested_and_the_one_before_is_the_baseline(tmp_path):
    for n in (1, 2, 10):
        make_span(tmp_path / f"span-{n}", 0, 1, eval_per_class=1)
    (tmp_path / "notes").mkdir()
    found = fer2013.detect_spans(str(tmp_path))
    assert (found.current.span, found.previous.span) == (10, 2)
    assert found.current.input_base == str(tmp_path / "span-10")
    plain = fer2013.detect_spans(str(tmp_path / "span-1"))
    assert plain.current.span == 0 and plain.previous is None


@pytest.mark.parametrize("content, message", [
    ("min_class_share: 2\n", "min_class_share must be in [0, 1]"),
    ("drift_action: ignore\n", "drift_action must be one of warn, block"),
    ("max_imbalance: 3\n", "unknown key(s) ['max_imbalance']"),
])
def test_bad_validation_config_gives_one_line_and_exit_2(content, message, tmp_path, capsys):
    config = tmp_path / "validation.yaml"
    config.write_text(content)
    code = cli.main(["validate", "--data", str(tmp_path), "--output", str(tmp_path / "o"),
                     "--validation-config", str(config)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_a_distance_just_above_its_threshold_is_a_breach_and_nan_is_never_within():
    just_above = checks.Distance("drift", "brightness", "span-2 train vs span-1 train",
                                 "Jensen-Shannon divergence", 0.10004, 0.1)
    assert just_above.breached and just_above.to_dict()["value"] == 0.1
    unknown = checks.Distance("skew", "contrast", "eval vs train", "Jensen-Shannon divergence",
                              float("nan"), 0.1)
    assert unknown.breached and unknown.to_dict()["value"] is None
    found = checks.distance_findings([just_above], ValidationConfig(drift_action="warn"))
    assert len(found) == 1 and not found[0].blocking
    assert found[0].message == ("drift of brightness (span-2 train vs span-1 train): "
                                "Jensen-Shannon divergence 0.1000 above the threshold 0.1")


@pytest.mark.parametrize("values", [{"max_imbalance_ratio": float("nan")},
                                    {"brightness_js": float("inf")}, {"contrast_js": True}])
def test_validation_thresholds_must_be_finite_numbers(values):
    with pytest.raises(ValueError, match="must be a finite number"):
        ValidationConfig(**values)


def test_span_names_start_at_one_and_a_broken_baseline_is_named(tmp_path):
    make_span(tmp_path / "span-0", 0, 1, eval_per_class=1)
    with pytest.raises(fer2013.DataError, match="unrecognized layout"):
        fer2013.detect_spans(str(tmp_path))  # span-0 is not a span folder
    make_span(tmp_path / "span-2", 0, 1, eval_per_class=1)
    (tmp_path / "span-1").mkdir()
    with pytest.raises(fer2013.DataError, match=r"previous span \(the drift baseline\) is unusable"):
        fer2013.detect_spans(str(tmp_path))
