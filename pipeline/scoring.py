"""Classification metrics from predicted and true class ids, and calibration metrics from
probabilities (NumPy only: the standalone trainer, the ship step, the calibration fit and
RESULTS.md all score models with these functions)."""
from typing import Dict, List, Sequence

import numpy as np

# Equal-width bins of the top-1 confidence for the expected calibration error (the
# Evaluator's reliability table uses the same number).
CALIBRATION_BINS = 10


def classification_metrics(truth: np.ndarray, predicted: np.ndarray, classes: Sequence[str]) -> Dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix
    (rows actual, columns predicted)."""
    truth, predicted = np.asarray(truth), np.asarray(predicted)
    matrix = [[int(np.sum((truth == a) & (predicted == p))) for p in range(len(classes))]
              for a in range(len(classes))]
    return dict(matrix_metrics(matrix, classes),
                confusion_matrix={"rows": "actual", "columns": "predicted", "counts": matrix})


def matrix_metrics(counts: Sequence[Sequence[float]], classes: Sequence[str]) -> Dict:
    """Accuracy, macro-F1 and per-class precision/recall/F1/support of the arg-max
    prediction, from its confusion matrix (rows actual, columns predicted). A precision or
    recall with nothing to divide by is 0; macro-F1 averages the (rounded) F1 of the classes
    that occur in the truth or the predictions (every class, on any real evaluation split
    of FER2013; a slice of it may lack some)."""
    counts = np.asarray(counts, np.float64).reshape(len(classes), len(classes))
    support, predicted = counts.sum(axis=1).tolist(), counts.sum(axis=0).tolist()
    seen = present_classes(counts)
    per_class, present = {}, []
    for c, name in enumerate(classes):
        tp = float(counts[c, c])
        precision = tp / predicted[c] if predicted[c] else 0.0
        recall = tp / support[c] if support[c] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": round(precision, 4), "recall": round(recall, 4),
                           "f1": round(f1, 4), "support": int(round(support[c]))}
        if seen[c]:
            present.append(per_class[name]["f1"])
    total = counts.sum()
    return {"examples": int(round(total)),
            "accuracy": round(float(np.trace(counts) / total), 4) if total else 0.0,
            "macro_f1": round(float(np.mean(present)), 4) if present else 0.0,
            "per_class": per_class}


def present_classes(counts: Sequence[Sequence[float]]) -> List[bool]:
    """Per class of a confusion matrix: does it occur in the truth or the predictions (the
    classes a macro average counts)."""
    counts = np.asarray(counts)
    return [bool(a or p) for a, p in zip(counts.sum(axis=1), counts.sum(axis=0))]


def probability_metrics(truth: np.ndarray, probabilities: np.ndarray, classes: Sequence[str]) -> Dict:
    """`classification_metrics` of the arg-max of `probabilities` [N, C], without the
    confusion matrix: the shape in which single models, flip TTA and ensembles are reported."""
    metrics = classification_metrics(truth, np.asarray(probabilities).argmax(axis=1), classes)
    return {k: metrics[k] for k in ("examples", "accuracy", "macro_f1", "per_class")}


def calibration_metrics(truth: np.ndarray, probabilities: np.ndarray, bins: int = CALIBRATION_BINS) -> Dict:
    """How far the probabilities are from how often they are right: the mean negative
    log-likelihood of the true class and the expected calibration error of the top-1
    prediction (over `bins` equal-width confidence bins: the sum of each bin's share of
    examples times |accuracy - mean confidence| there; 0 is perfectly calibrated, the
    Evaluator's reliability table bins the same way)."""
    truth, probabilities = np.asarray(truth), np.asarray(probabilities, np.float64)
    confidence, predicted = probabilities.max(axis=1), probabilities.argmax(axis=1)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    gap = sum(abs(np.mean(predicted[which == b] == truth[which == b]) - np.mean(confidence[which == b]))
              * np.sum(which == b) for b in range(bins) if np.any(which == b))
    return {"examples": int(len(truth)), "nll": round(negative_log_likelihood(truth, probabilities), 4),
            "ece": round(float(gap / max(len(truth), 1)), 4),
            "mean_confidence": round(float(np.mean(confidence)), 4),
            "accuracy": round(float(np.mean(predicted == truth)), 4)}


def negative_log_likelihood(truth: np.ndarray, probabilities: np.ndarray) -> float:
    """The mean of -log(probability of the true class)."""
    likelihood = np.asarray(probabilities)[np.arange(len(truth)), np.asarray(truth)]
    return float(-np.mean(np.log(np.maximum(likelihood, 1e-12))))
