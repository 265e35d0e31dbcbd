"""Test-time augmentation and a small ensemble, scored on FER2013 PublicTest through the
served models' own `predict_image` signature.

    python -m pipeline.ensemble --data /path/to/fer2013 \\
        --models models/fer2013-compact models/fer2013-dcnn [--tta flip multiview] [--json results.json]

For each model: the face as it is ("single") and, for each named set of test-time views
(`model.TEST_TIME_VIEWS`), the mean of the probabilities over those views of the face:
"flip_tta" (the face and its mirror image, the default) and "multiview_tta" (both at four
zooms). For the models together (they must predict the same classes in the same order):
the mean of their probabilities, as they are and over each set of views ("ensemble",
"ensemble_flip_tta", ...). Every number is reported separately so a single served model
is never credited with what only the combination reaches.
"""
import argparse
import json
import os
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np

from pipeline.scoring import probability_metrics
from pipeline.ship import served_predictor, tta_probabilities


def evaluate(model_dirs: Sequence[str], data: str, per_class: int = 0,
             tta: Sequence[str] = ("flip",)) -> Dict:
    """{"models": {name: {"single", "<set>_tta"...}}, "ensemble", "ensemble_<set>_tta"...}
    for each set of views named in `tta`."""
    from components.trainer.model import TEST_TIME_VIEWS, View
    from serving.photos import resolve_model_dir

    if not model_dirs:
        raise ValueError("--models: name at least one model")
    unknown = sorted(set(tta) - set(TEST_TIME_VIEWS))
    if unknown:
        raise ValueError(f"--tta {', '.join(unknown)}: choose from {', '.join(TEST_TIME_VIEWS)}")
    answers = {key: [] for key in ["single"] + [f"{name}_tta" for name in tta]}
    report = {"split": "FER2013 PublicTest (test/ folder)", "models": {}}
    truth = classes = None
    for model_dir in model_dirs:
        predictor = served_predictor(resolve_model_dir(model_dir))
        names, seen = predictor[1], {}
        if classes is not None and names != classes:
            raise ValueError(f"{model_dir}: predicts {names}, the first model {classes}; an "
                             "ensemble needs the same classes in the same order")
        scores = {}
        for key, views in [("single", (View(),))] + [(f"{name}_tta", TEST_TIME_VIEWS[name]) for name in tta]:
            truth, probabilities = tta_probabilities(predictor, data, views, per_class, seen)
            answers[key].append(probabilities)
            scores[key] = probability_metrics(truth, probabilities, names)
        classes = names
        name = os.path.basename(os.path.normpath(model_dir))
        if name in report["models"]:
            name = f"{name}#{len(report['models']) + 1}"
        report["models"][name] = {"path": model_dir, **scores}
    report["classes"] = classes
    if len(model_dirs) > 1:
        for key, probabilities in answers.items():
            label = "ensemble" if key == "single" else f"ensemble_{key}"
            report[label] = probability_metrics(truth, np.mean(probabilities, axis=0), classes)
    return report


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="FER2013 folder with test/")
    parser.add_argument("--models", nargs="+", required=True,
                        help="model directories (a version directory or its parent)")
    parser.add_argument("--per-class", type=int, default=0, help="at most this many faces per class")
    parser.add_argument("--tta", nargs="+", default=["flip"],
                        help="sets of test-time views to score: flip, multiview (default: flip)")
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args(argv)
    try:
        report = evaluate(args.models, args.data, args.per_class, args.tta)
    except (ValueError, OSError) as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
    for name, scores in report["models"].items():
        print(f"{name}: accuracy {scores['single']['accuracy']:.4f}" + "".join(
            f", {key} {value['accuracy']:.4f}" for key, value in scores.items() if key.endswith("_tta")))
    for key in [key for key in report if key.startswith("ensemble")]:
        print(f"{key}: accuracy {report[key]['accuracy']:.4f}, macro-F1 {report[key]['macro_f1']:.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
