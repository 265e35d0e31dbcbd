"""Chooses the strength of a served model's prior correction (`--prior-correction`).

    python -m pipeline.prior --data FER2013 --model models/fer2013-dcnn [--views multiview] [--json out.json]

Scores the strengths 0, 0.25, ..., 1 (`--strengths`) on the validation carve-out of
train/ (the standalone trainer's: the faces its early stopping saw, never trained on)
and on PublicTest, each as accuracy and macro-F1 of the arg-max of the network's
probabilities divided by the training class prior to that power
(`recipe.prior_log_bias`, the rule the export applies). A model exported with a
correction is first brought back to its network's own probabilities (from its
`assets.extra/prior_correction.json`), so any served model can be scored. The
recommended strength is the one with the best validation macro-F1; export with it:
`fer-pipeline run ... --imbalance none --warm-start W --epochs 0 --prior-correction X`.

`--views flip|multiview` scores the label of the model's `predict_image_<views>`
signature instead: the test-time views (`model.TEST_TIME_VIEWS`) are fed one by one
through `predict_image`, the rule undone view by view, and each strength applied to every
view (at the exported calibration temperature) before their mean, as that signature does.
Choose the strength by the views you serve: the one-view choice need not be theirs.
The face and its mirror image are exact; the zoomed views are built by the client
(`serving.faces.seen_in`) and re-encoded, which moves a few decisions against the
signature's own (3 of 3,589 PublicTest faces for `fer2013-resnet18` at strength 0).
"""
import argparse
import dataclasses
import json
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np

from pipeline.config import TrainingConfig
from pipeline.scoring import classification_metrics
from pipeline.ship import image_probabilities, served_predictor, test_images

STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


def validation_images(data: str, classes: Sequence[str],
                      fraction: float = TrainingConfig.validation_fraction):
    """({emotion: the validation carve-out's image paths}, [training count per class]) of
    data/train, split as the standalone trainer splits it."""
    from components.trainer.standalone import image_id, is_validation, split_images

    held_out, counts = {}, []
    for emotion in classes:
        paths = split_images(data, "train", emotion)
        chosen = is_validation([image_id(p, emotion) for p in paths], fraction)
        held_out[emotion] = [p for p, v in zip(paths, chosen) if v]
        counts.append(int(len(paths) - chosen.sum()))
    return held_out, counts


@dataclasses.dataclass(frozen=True)
class OutputRule:
    """How a served model's probabilities follow from its network's (`features.OUTPUT_RULE`):
    the prior correction's strength and per-class log-bias (derived from the recorded
    strength and counts by the export's own rule; the recorded `log_bias` is rounded for
    people), the training counts it used (None without one) and the calibration temperature."""
    strength: float
    log_bias: np.ndarray
    counts: Optional[List[int]] = None
    temperature: float = 1.0

    def served(self, network_probabilities: np.ndarray) -> np.ndarray:
        """The served probabilities for the network's."""
        return corrected(network_probabilities, self.log_bias, self.temperature)

    def network(self, served_probabilities: np.ndarray) -> np.ndarray:
        """The network's own probabilities behind served ones (the rule undone)."""
        return corrected(np.power(np.maximum(served_probabilities, 1e-12), self.temperature), -self.log_bias)


def applied(model_dir: str, classes: Sequence[str]) -> OutputRule:
    """The `OutputRule` the model in `model_dir` was exported with, from its assets
    (strength 0, zero bias and temperature 1 where it has none)."""
    from components.trainer.export import read_calibration_temperature, read_prior_correction
    from components.trainer.recipe import prior_log_bias

    temperature = read_calibration_temperature(model_dir)
    recorded = read_prior_correction(model_dir)
    if not recorded:
        return OutputRule(0.0, np.zeros(len(classes), np.float32), None, temperature)
    strength, counts = float(recorded["strength"]), [int(recorded["train_counts"][c]) for c in classes]
    return OutputRule(strength, prior_log_bias(counts, strength), counts, temperature)


def corrected(probabilities: np.ndarray, bias: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax((log(probabilities) + bias) / temperature), row by row (the export's rule)."""
    logits = (np.log(np.maximum(probabilities, 1e-12)) + bias) / temperature
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def network_probabilities(model_dir: str, data: str, per_class: int = 0, views: str = ""):
    """(version directory, classes, the `OutputRule` it was exported with, training count
    per class of the validation split, {"validation", "publictest": (true class ids, the
    network's own probabilities)}) of a served model (a version directory or its parent):
    its probabilities on the validation carve-out of train/ and on PublicTest, the
    export's rule undone: [N, classes], or with `views` (a name of `model.TEST_TIME_VIEWS`)
    [views, N, classes], each test-time view's own."""
    from components.trainer.model import TEST_TIME_VIEWS, View
    from serving.photos import resolve_model_dir

    if views and views not in TEST_TIME_VIEWS:
        raise ValueError(f"views {views!r}: one of {', '.join(sorted(TEST_TIME_VIEWS))}")
    model_dir = resolve_model_dir(model_dir)
    predictor = served_predictor(model_dir)
    classes = predictor[1]
    rule = applied(model_dir, classes)
    held_out, counts = validation_images(data, classes)
    splits = {}
    for split, images in (("validation", held_out), ("publictest", test_images(data, classes))):
        answers = [image_probabilities(predictor, images, per_class=per_class, view=view)
                   for view in (TEST_TIME_VIEWS[views] if views else (View(),))]
        network = np.stack([rule.network(p) for _, p in answers])
        splits[split] = (answers[0][0], network if views else network[0])
    return model_dir, classes, rule, counts, splits


def served_probabilities(network: np.ndarray, log_bias: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """The probabilities a model exported with `log_bias` and `temperature` serves for its
    network's own [N, classes]; for [views, N, classes], the mean over the views of each
    view's, as `predict_image_<views>` computes them (`export.ServingModule._predict`)."""
    if network.ndim == 2:
        return corrected(network, log_bias, temperature)
    return np.mean([corrected(p, log_bias, temperature) for p in network], axis=0)


def scan(model_dir: str, data: str, strengths: Sequence[float] = STRENGTHS, per_class: int = 0,
         views: str = "") -> Dict:
    """{"classes", "train_counts", "views", "strengths": [{strength, validation, publictest}],
    "recommended"}; with `views`, of the label of the model's `predict_image_<views>`."""
    from components.trainer.recipe import prior_log_bias

    model_dir, classes, rule, counts, splits = network_probabilities(model_dir, data, per_class, views)
    # The counts the export used where it recorded them (exports before 2026-12-05 used
    # the Trainer's earlier carve-out, a few faces per class off this one), so the
    # exported strength scores exactly the served decisions.
    counts = rule.counts or counts
    rows = []
    for strength in strengths:
        bias = prior_log_bias(counts, strength)
        row = {"strength": strength}
        for name, (truth, probabilities) in splits.items():
            labels = served_probabilities(probabilities, bias, rule.temperature).argmax(axis=1)
            m = classification_metrics(truth, labels, classes)
            row[name] = {"examples": m["examples"], "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                         "recall": {c: v["recall"] for c, v in m["per_class"].items()}}
        rows.append(row)
    best = max(rows, key=lambda r: (r["validation"]["macro_f1"], -r["strength"]))
    return {"model": model_dir, "classes": classes, "train_counts": dict(zip(classes, counts)),
            "applied_strength": rule.strength, "temperature": rule.temperature, "views": views or "none",
            "strengths": rows, "recommended": best["strength"]}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="FER2013 folder with train/ and test/")
    parser.add_argument("--model", required=True, help="a version directory or its parent")
    parser.add_argument("--strengths", default=",".join(map(str, STRENGTHS)),
                        help="comma-separated strengths to score (default %(default)s)")
    parser.add_argument("--per-class", type=int, default=0, help="at most this many faces per class")
    parser.add_argument("--views", default="", help="score the label of predict_image_<views> "
                        "(flip or multiview) instead of predict_image's")
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args(argv)
    try:
        strengths = [float(s) for s in args.strengths.split(",") if s.strip()]
        if not strengths or any(not 0 <= s <= 2 for s in strengths):
            raise ValueError(f"--strengths {args.strengths!r}: numbers in [0, 2], comma-separated")
        report = scan(args.model, args.data, strengths, args.per_class, args.views)
    except (ValueError, OSError) as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
    print(f"{report['model']} (exported with strength {report['applied_strength']}; "
          f"test-time views: {report['views']})")
    print("strength  validation acc / macro-F1   PublicTest acc / macro-F1")
    for row in report["strengths"]:
        v, t = row["validation"], row["publictest"]
        print(f"{row['strength']:8.2f}  {v['accuracy']:.4f} / {v['macro_f1']:.4f}"
              f"            {t['accuracy']:.4f} / {t['macro_f1']:.4f}")
    print(f"recommended (best validation macro-F1): {report['recommended']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
