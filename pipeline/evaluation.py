"""The TFMA configuration of the Evaluator, built in one tested function."""
from typing import Sequence

import tensorflow_model_analysis as tfma

from pipeline import features
from pipeline.config import EvaluationConfig

ACCURACY = "sparse_categorical_accuracy"
OVERALL = tfma.SlicingSpec()
BY_EMOTION = tfma.SlicingSpec(feature_keys=[features.LABEL_NAME_KEY])


def make_eval_config(classes: Sequence[str], gates: EvaluationConfig) -> tfma.EvalConfig:
    """Accuracy, per-class precision/recall/F1 (binarized by class id) with their macro
    average, and the confusion matrix, overall and per emotion.

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
        slicing_specs=[OVERALL, BY_EMOTION],
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
