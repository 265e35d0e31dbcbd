"""Classification metrics from predicted and true class ids (NumPy only: the standalone
trainer, the ship step and RESULTS.md all score models with this one function)."""
from typing import Dict, Sequence

import numpy as np


def classification_metrics(truth: np.ndarray, predicted: np.ndarray, classes: Sequence[str]) -> Dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix
    (rows actual, columns predicted)."""
    truth, predicted = np.asarray(truth), np.asarray(predicted)
    per_class = {}
    for c, name in enumerate(classes):
        tp = int(np.sum((predicted == c) & (truth == c)))
        precision = tp / max(int(np.sum(predicted == c)), 1)
        recall = tp / max(int(np.sum(truth == c)), 1)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": round(precision, 4), "recall": round(recall, 4),
                           "f1": round(f1, 4), "support": int(np.sum(truth == c))}
    matrix = [[int(np.sum((truth == a) & (predicted == p))) for p in range(len(classes))]
              for a in range(len(classes))]
    return {"examples": int(len(truth)), "accuracy": round(float(np.mean(truth == predicted)), 4),
            "macro_f1": round(float(np.mean([v["f1"] for v in per_class.values()])), 4),
            "per_class": per_class,
            "confusion_matrix": {"rows": "actual", "columns": "predicted", "counts": matrix}}


def probability_metrics(truth: np.ndarray, probabilities: np.ndarray, classes: Sequence[str]) -> Dict:
    """`classification_metrics` of the arg-max of `probabilities` [N, C], without the
    confusion matrix: the shape in which single models, flip TTA and ensembles are reported."""
    metrics = classification_metrics(truth, np.asarray(probabilities).argmax(axis=1), classes)
    return {k: metrics[k] for k in ("examples", "accuracy", "macro_f1", "per_class")}
