"""Test-time augmentation and a small ensemble, scored on FER2013 PublicTest through the
served models' own `predict_image` signature.

    python -m pipeline.ensemble --data /path/to/fer2013 \\
        --models models/fer2013-compact models/fer2013-dcnn [--json results.json]

For each model: the face as it is ("single") and the mean of the probabilities for the
face and its mirror image ("flip_tta"). For the models together (they must predict the
same classes in the same order): the mean of their probabilities, without and with the
flip ("ensemble", "ensemble_flip_tta"). Every number is reported separately so a
single served model is never credited with what only the combination reaches.
"""
import argparse
import json
import os
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np

from pipeline.scoring import probability_metrics
from pipeline.ship import publictest_probabilities, served_predictor


def evaluate(model_dirs: Sequence[str], data: str, per_class: int = 0) -> Dict:
    """{"models": {name: {"single", "flip_tta"}}, "ensemble", "ensemble_flip_tta"}."""
    from serving.photos import resolve_model_dir

    if not model_dirs:
        raise ValueError("--models: name at least one model")
    plain, flipped, report = [], [], {"split": "FER2013 PublicTest (test/ folder)", "models": {}}
    truth = classes = None
    for model_dir in model_dirs:
        predictor = served_predictor(resolve_model_dir(model_dir))
        names = predictor[1]
        y, p = publictest_probabilities(predictor, data, per_class=per_class)
        _, p_flip = publictest_probabilities(predictor, data, flip=True, per_class=per_class)
        if classes is not None and names != classes:
            raise ValueError(f"{model_dir}: predicts {names}, the first model {classes}; an "
                             "ensemble needs the same classes in the same order")
        truth, classes = y, names
        plain.append(p)
        flipped.append((p + p_flip) / 2)
        name = os.path.basename(os.path.normpath(model_dir))
        if name in report["models"]:
            name = f"{name}#{len(report['models']) + 1}"
        report["models"][name] = {"path": model_dir, "single": probability_metrics(y, p, names),
                                  "flip_tta": probability_metrics(y, flipped[-1], names)}
    report["classes"] = classes
    if len(model_dirs) > 1:
        report["ensemble"] = probability_metrics(truth, np.mean(plain, axis=0), classes)
        report["ensemble_flip_tta"] = probability_metrics(truth, np.mean(flipped, axis=0), classes)
    return report


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="FER2013 folder with test/")
    parser.add_argument("--models", nargs="+", required=True,
                        help="model directories (a version directory or its parent)")
    parser.add_argument("--per-class", type=int, default=0, help="at most this many faces per class")
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args(argv)
    try:
        report = evaluate(args.models, args.data, args.per_class)
    except (ValueError, OSError) as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
    for name, scores in report["models"].items():
        print(f"{name}: accuracy {scores['single']['accuracy']:.4f}, "
              f"flip TTA {scores['flip_tta']['accuracy']:.4f}")
    for key in ("ensemble", "ensemble_flip_tta"):
        if key in report:
            print(f"{key}: accuracy {report[key]['accuracy']:.4f}, macro-F1 {report[key]['macro_f1']:.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
