"""The TFMA configuration of the Evaluator, built in one tested function."""
from typing import Sequence

import tensorflow_model_analysis as tfma

from pipeline import features
from pipeline.config import EvaluationConfig

ACCURACY = "sparse_categorical_accuracy"
OVERALL = tfma.SlicingSpec()
BY_EMOTION = tfma.SlicingSpec(feature_keys=[features.LABEL_NAME_KEY])
# Proxy slices computed from the image: NOT demographics (say so wherever they are shown).
PROXY_SLICE_KEYS = (features.BRIGHTNESS_BAND_KEY, features.CONTRAST_BAND_KEY)


def slicing_specs(annotation_columns: Sequence[str] = ()) -> list:
    """Overall, per emotion, per proxy band, and per annotation column."""
    return [OVERALL, BY_EMOTION] + [
        tfma.SlicingSpec(feature_keys=[key])
        for key in (*PROXY_SLICE_KEYS, *annotation_columns)]


def make_eval_config(classes: Sequence[str], gates: EvaluationConfig,
                     annotation_columns: Sequence[str] = ()) -> tfma.EvalConfig:
    """Accuracy, per-class precision/recall/F1 (binarized by class id) with their macro
    average, and the confusion matrix, overall, per emotion, per brightness and
    contrast band (image proxies, not demographics) and per annotation column.

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
                binarize=tfma.BinarizationOptions(class_ids={"values": class_ids}),
                aggregate=tfma.AggregationOptions(
                    macro_average=True, class_weights={i: 1.0 for i in class_ids}),
                metrics=[tfma.MetricConfig(class_name="Precision"),
                         tfma.MetricConfig(class_name="Recall"),
                         tfma.MetricConfig(class_name="F1Score")]),
        ])
