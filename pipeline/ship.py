"""Ships a pushed model into the repository: `models/<name>/<version>/` (TF Serving's
layout) plus `models/<name>/metadata.json`, with its PublicTest metrics measured here.

    python -m pipeline.ship --pushed runs/fer2013/serving/fer2013-compact/<version> \\
        --name fer2013-compact --data /path/to/fer2013 [--result out/compact/result.json]

The metrics are computed the way a user would see them: every image of
`<data>/test/<emotion>/` (FER2013 PublicTest), as its encoded bytes, through the
model's `predict_image` signature. `--result` adds what the standalone trainer recorded
(recipe, history, training time and machine, flip test-time augmentation).
"""
import argparse
import json
import os
import shutil
import sys
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

from pipeline import features

METADATA_JSON = "metadata.json"
MAX_MODEL_BYTES = 50 * 1024 * 1024


def test_images(data: str, classes: Sequence[str]) -> Dict[str, List[str]]:
    """{emotion: sorted image paths} of data/test/<emotion>/ for the model's classes."""
    out = {}
    for emotion in classes:
        folder = os.path.join(data, "test", emotion)
        out[emotion] = sorted(os.path.join(folder, n) for n in os.listdir(folder))
    return out


def evaluate_saved_model(path: str, data: str, batch_size: int = 256) -> Dict:
    """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix of the
    SavedModel at `path` on data/test (its own classes), through `predict_image`."""
    import tensorflow as tf

    model = tf.saved_model.load(path)
    predict = model.signatures[features.PREDICT_IMAGE_SIGNATURE]
    classes = _classes_of(predict)
    truth, predicted = [], []
    for class_id, (emotion, paths) in enumerate(test_images(data, classes).items()):
        for start in range(0, len(paths), batch_size):
            chunk = [open(p, "rb").read() for p in paths[start:start + batch_size]]
            out = predict(**{features.IMAGES_INPUT: tf.constant(chunk)})
            predicted += out[features.PROBABILITIES_OUTPUT].numpy().argmax(axis=1).tolist()
            truth += [class_id] * len(chunk)
    return metrics(np.asarray(truth), np.asarray(predicted), classes)


def _classes_of(predict) -> List[str]:
    import tensorflow as tf

    blank = np.zeros((features.IMAGE_SIZE, features.IMAGE_SIZE), np.uint8)
    encoded = tf.io.encode_png(blank[..., None]).numpy()
    out = predict(**{features.IMAGES_INPUT: tf.constant([encoded])})
    return [c.decode() for c in out[features.CLASSES_OUTPUT].numpy()[0]]


def metrics(truth: np.ndarray, predicted: np.ndarray, classes: Sequence[str]) -> Dict:
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
    return {"split": "FER2013 PublicTest (test/ folder)", "examples": int(len(truth)),
            "accuracy": round(float(np.mean(truth == predicted)), 4),
            "macro_f1": round(float(np.mean([v["f1"] for v in per_class.values()])), 4),
            "per_class": per_class, "confusion_matrix": {"rows": "actual", "columns": "predicted",
                                                         "counts": matrix}}


def directory_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def ship(pushed: str, name: str, data: str, models_dir: str = "models",
         result: Optional[str] = None, notes: str = "") -> Dict:
    version = os.path.basename(os.path.normpath(pushed))
    if not version.isdigit():
        raise ValueError(f"{pushed}: not a pushed version directory (<base>/<number>/)")
    size = directory_bytes(pushed)
    if size > MAX_MODEL_BYTES:
        raise ValueError(f"{pushed}: {size / 2**20:.1f} MB, above the {MAX_MODEL_BYTES / 2**20:.0f} MB "
                         "limit for a model kept in the repository")
    target = os.path.join(models_dir, name, version)
    if os.path.exists(target):
        shutil.rmtree(target)
    shutil.copytree(pushed, target)
    measured = evaluate_saved_model(target, data)
    metadata = {
        "name": name, "version": int(version), "classes": _classes_of_path(target),
        "signatures": {features.PREDICT_IMAGE_SIGNATURE: "encoded JPEG/PNG bytes -> probabilities, label, classes",
                       features.SERVING_DEFAULT_SIGNATURE: "serialized tf.Example -> probabilities, label, classes"},
        "training_data": "FER2013 Kaggle folder: train/ (28,709 faces) minus a 10% validation carve-out; "
                         "model selection on test/ (PublicTest, 3,589 faces)",
        "metrics_publictest": measured, "size_bytes": directory_bytes(target),
        "date": time.strftime("%Y-%m-%d"), "notes": notes,
    }
    if result:
        with open(result) as f:
            trained = json.load(f)
        metadata["recipe"] = trained.get("recipe")
        metadata["training"] = {k: trained.get(k) for k in (
            "backend", "parameters", "flops_per_image", "train_examples", "validation_examples",
            "epochs_run", "training_seconds", "seconds_per_epoch", "best_validation_accuracy",
            "machine")}
        metadata["publictest_flip_tta"] = trained.get("test_flip_tta")
        metadata["history"] = trained.get("history")
    with open(os.path.join(models_dir, name, METADATA_JSON), "w") as f:
        json.dump(metadata, f, indent=1)
    return metadata


def _classes_of_path(path: str) -> List[str]:
    import tensorflow as tf

    return _classes_of(tf.saved_model.load(path).signatures[features.PREDICT_IMAGE_SIGNATURE])


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pushed", required=True, help="a pushed version directory")
    parser.add_argument("--name", required=True, help="models/<name>/")
    parser.add_argument("--data", required=True, help="FER2013 folder with test/")
    parser.add_argument("--models-dir", default="models")
    parser.add_argument("--result", help="the standalone trainer's result.json")
    parser.add_argument("--notes", default="")
    args = parser.parse_args(argv)
    try:
        metadata = ship(args.pushed, args.name, args.data, args.models_dir, args.result, args.notes)
    except (ValueError, OSError) as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
    print(json.dumps({k: metadata[k] for k in ("name", "version", "classes", "size_bytes")}
                     | {"accuracy": metadata["metrics_publictest"]["accuracy"],
                        "macro_f1": metadata["metrics_publictest"]["macro_f1"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
