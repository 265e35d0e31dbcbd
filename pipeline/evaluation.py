"""The TFMA configuration of the Evaluator, built in one tested function, and the
readers of its results (metrics per slice, confusion matrix, validation failures)."""
import collections
import importlib.util
import json
import math
from typing import Dict, List, Optional, Sequence

import tensorflow_model_analysis as tfma

from pipeline import features
from pipeline.config import EvaluationConfig
from pipeline.scoring import CALIBRATION_BINS, matrix_metrics, present_classes

ACCURACY = "sparse_categorical_accuracy"
OVERALL = tfma.SlicingSpec()
BY_EMOTION = tfma.SlicingSpec(feature_keys=[features.LABEL_NAME_KEY])
# Proxy slices computed from the image: NOT demographics (say so wherever they are shown).
PROXY_SLICE_KEYS = (features.BRIGHTNESS_BAND_KEY, features.CONTRAST_BAND_KEY)
# Fairness Indicators (installed with --no-deps: its declared pins clash with tfx 1.16's).
FAIRNESS_INDICATORS_MODULE = "fairness_indicators.fairness_indicators_metrics"
FAIRNESS_THRESHOLD = 0.5


def fairness_indicators_installed() -> bool:
    return importlib.util.find_spec("fairness_indicators") is not None


def slicing_specs(annotation_columns: Sequence[str] = ()) -> list:
    """Overall, per emotion, per proxy band, and per annotation column."""
    return [OVERALL, BY_EMOTION] + [
        tfma.SlicingSpec(feature_keys=[key])
        for key in (*PROXY_SLICE_KEYS, *annotation_columns)]


def make_eval_config(classes: Sequence[str], gates: EvaluationConfig,
                     annotation_columns: Sequence[str] = ()) -> tfma.EvalConfig:
    """Accuracy, the arg-max confusion matrix (from which `evaluation_metrics` derives
    per-class precision/recall/F1 and macro-F1 of the label the model serves), the
    calibration of the top-1 prediction (TFMA's CalibrationPlot and Calibration on k=1
    binarization: label 1 when the most probable class is right, prediction = its
    probability) and, when installed, Fairness Indicators per class at threshold 0.5;
    overall, per emotion, per brightness and contrast band (image proxies, not
    demographics) and per annotation column.

    Blessing: overall accuracy >= gates.min_accuracy, and no drop of more than
    gates.max_regression against the latest blessed model. Both thresholds
    are attached to the overall slice only: a plain `threshold` would also be
    checked on every emotion slice.
    """
    accuracy_gate = tfma.PerSliceMetricThreshold(
        slicing_specs=[OVERALL],
        threshold=tfma.MetricThreshold(
            value_threshold=tfma.GenericValueThreshold(lower_bound={"value": gates.min_accuracy}),
            change_threshold=tfma.GenericChangeThreshold(
                direction=tfma.MetricDirection.HIGHER_IS_BETTER,
                absolute={"value": -gates.max_regression})))
    class_ids = list(range(len(classes)))
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(
            signature_name=features.SERVING_DEFAULT_SIGNATURE,
            preprocessing_function_names=[features.TRANSFORM_FEATURES_SIGNATURE],
            label_key=features.CLASS_ID_KEY,
            prediction_key=features.PROBABILITIES_OUTPUT)],
        slicing_specs=slicing_specs(annotation_columns),
        metrics_specs=[
            tfma.MetricsSpec(metrics=[
                tfma.MetricConfig(class_name="ExampleCount"),
                tfma.MetricConfig(class_name="SparseCategoricalAccuracy",
                                  per_slice_thresholds=[accuracy_gate]),
                tfma.MetricConfig(class_name="MultiClassConfusionMatrixPlot"),
            ]),
            tfma.MetricsSpec(
                binarize=tfma.BinarizationOptions(k_list={"values": [1]}),
                metrics=[tfma.MetricConfig(class_name="CalibrationPlot",
                                           config=json.dumps({"num_buckets": CALIBRATION_BINS})),
                         tfma.MetricConfig(class_name="Calibration")]),
        ] + ([tfma.MetricsSpec(
            binarize=tfma.BinarizationOptions(class_ids={"values": class_ids}),
            metrics=[tfma.MetricConfig(class_name="FairnessIndicators",
                                       module=FAIRNESS_INDICATORS_MODULE,
                                       config=json.dumps({"thresholds": [FAIRNESS_THRESHOLD]}))])]
             if fairness_indicators_installed() else []))


# ----------------------------------------------------------------------------
# Reading the Evaluator's output
# ----------------------------------------------------------------------------

def _is_baseline(key) -> bool:
    """A metric or plot key of the regression baseline: with a blessed model to compare
    against, TFMA evaluates both and names them; every number reported here is the
    candidate's."""
    return key.model_name == tfma.BASELINE_KEY


def _slice_name(slice_key) -> str:
    parts = [f"{c.column}={c.bytes_value.decode() or c.int64_value}" for c in slice_key.single_slice_keys]
    return ", ".join(parts) or "overall"


def evaluation_metrics(evaluation_uri: str, classes: List[str]) -> Dict[str, Dict[str, Optional[float]]]:
    """{slice: {metric: value}}: TFMA's metrics, and per-class precision, recall and F1
    (named e.g. 'recall/happy') with their macro averages ('macro_precision', 'macro_recall',
    'macro_f1_score') of the arg-max label, from the slice's confusion matrix, as
    `pipeline.scoring` computes them for metadata.json and RESULTS.md. (TFMA's own
    Precision/Recall/F1Score binarized by class id threshold each class's probability at
    0.5 one-vs-rest: not the label served, and moved by the calibration temperature.)"""
    metrics = collections.defaultdict(dict)
    for per_slice in tfma.load_metrics(evaluation_uri):
        name = _slice_name(per_slice.slice_key)
        for item in per_slice.metric_keys_and_values:
            key, value = item.key, item.value
            if key.is_diff or _is_baseline(key) or not value.HasField("double_value"):
                continue
            metric = key.name
            if key.aggregation_type.macro_average:
                metric = f"macro_{metric}"
            elif key.sub_key.HasField("class_id"):
                metric = f"{metric}/{classes[key.sub_key.class_id.value]}"
            elif key.sub_key.HasField("k"):
                metric = f"{metric}/top{key.sub_key.k.value}"
            number = value.double_value.value
            metrics[name][metric] = None if math.isnan(number) else round(number, 4)
    for name, matrix in confusion_matrices(evaluation_uri, len(classes)).items():
        metrics[name].update(_label_metrics(matrix, classes))
    return dict(metrics)


def _label_metrics(matrix: List[List[int]], classes: Sequence[str]) -> Dict[str, Optional[float]]:
    """Per-class and macro precision/recall/F1 of one slice's arg-max confusion matrix. A
    class that neither occurs nor is predicted in the slice has none (None), and is left
    out of the macro averages."""
    scores = matrix_metrics(matrix, classes)
    seen = [name for name, present in zip(classes, present_classes(matrix)) if present]
    out = {}
    for metric, short in (("precision", "precision"), ("recall", "recall"), ("f1_score", "f1")):
        for name in classes:
            out[f"{metric}/{name}"] = scores["per_class"][name][short] if name in seen else None
        values = [scores["per_class"][name][short] for name in seen]
        out[f"macro_{metric}"] = round(sum(values) / len(values), 4) if values else None
    return out


def confusion_matrices(evaluation_uri: str, num_classes: int) -> Dict[str, List[List[int]]]:
    """{slice: confusion matrix} from TFMA's plots: rows actual class, columns the arg-max
    predicted class (MultiClassConfusionMatrixPlot at its default threshold 0)."""
    result = {}
    for per_slice in tfma.load_plots(evaluation_uri):
        for item in per_slice.plot_keys_and_values:
            if _is_baseline(item.key):
                continue
            for thresholds in item.value.multi_class_confusion_matrix_at_thresholds.matrices:
                matrix = result.setdefault(_slice_name(per_slice.slice_key), _zeros(num_classes))
                for entry in thresholds.entries:
                    if 0 <= entry.predicted_class_id < num_classes:
                        matrix[entry.actual_class_id][entry.predicted_class_id] += int(
                            entry.num_weighted_examples)
    return result


def confusion_matrix(evaluation_uri: str, num_classes: int) -> List[List[int]]:
    """Overall confusion matrix: rows actual class, columns predicted."""
    return confusion_matrices(evaluation_uri, num_classes).get("overall", _zeros(num_classes))


def _zeros(num_classes: int) -> List[List[int]]:
    return [[0] * num_classes for _ in range(num_classes)]


def calibration(evaluation_uri: str) -> Dict[str, Dict]:
    """{slice: {'ece': expected calibration error, 'bins': [{low, high, examples, accuracy,
    confidence}]}} from TFMA's top-1 calibration plot: ECE = sum over confidence bins of
    (bin size / N) * |accuracy - mean confidence|."""
    result = {}
    for per_slice in tfma.load_plots(evaluation_uri):
        for item in per_slice.plot_keys_and_values:
            if not item.key.sub_key.HasField("k") or _is_baseline(item.key):
                continue
            bins, total, gap = [], 0.0, 0.0
            for bucket in item.value.calibration_histogram_buckets.buckets:
                n = bucket.num_weighted_examples.value
                if n <= 0:
                    continue
                accuracy = bucket.total_weighted_label.value / n
                confidence = bucket.total_weighted_refined_prediction.value / n
                total += n
                gap += n * abs(accuracy - confidence)
                bins.append({"low": round(max(bucket.lower_threshold_inclusive, 0.0), 4),
                             "high": round(min(bucket.upper_threshold_exclusive, 1.0), 4),
                             "examples": int(round(n)), "accuracy": round(accuracy, 4),
                             "confidence": round(confidence, 4)})
            result[_slice_name(per_slice.slice_key)] = {
                "ece": round(gap / total, 4) if total else None, "bins": bins}
    return result


def _failure_text(failure, slice_name: str) -> str:
    """'<metric> on <slice>: <value> < lower bound <x>', from TFMA's ValidationFailure."""
    key, threshold = failure.metric_key, failure.metric_threshold
    value = failure.metric_value.double_value.value
    if key.is_diff:
        bound = threshold.change_threshold.absolute.value
        return (f"{key.name} on {slice_name}: changed by {value:+.4f} against the latest blessed "
                f"model, allowed change >= {bound:+.4f}")
    bounds = threshold.value_threshold
    limits = []
    if bounds.HasField("lower_bound"):
        limits.append(f"lower bound {bounds.lower_bound.value:g}")
    if bounds.HasField("upper_bound"):
        limits.append(f"upper bound {bounds.upper_bound.value:g}")
    return f"{key.name} on {slice_name}: {value:.4f} outside {' and '.join(limits)}"


def validation_failures(evaluation_uri: str) -> Dict:
    """{'ok': bool, 'failures': ['<metric> on <slice>: ...']} from TFMA's validation result."""
    result = tfma.load_validation_result(evaluation_uri)
    failures = [_failure_text(failure, _slice_name(per_slice.slice_key))
                for per_slice in result.metric_validations_per_slice
                for failure in per_slice.failures]
    return {"ok": result.validation_ok, "failures": failures}
