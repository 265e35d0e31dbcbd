"""Fits the temperature of a served model's probabilities (`--calibration-temperature`).

    python -m pipeline.calibration --data FER2013 --model models/fer2013-resnet18 [--json out.json]

A network trained to fit its training faces closely is overconfident: when it says 90%
it is right much less often. Temperature scaling (Guo et al., 2017) divides the logits
(the log of its probabilities, plus the prior correction's bias if it has one) by one
number T before the softmax; it never changes which emotion is most probable, only how
sure the model says it is. This fits T on the validation carve-out of train/ (the
standalone trainer's, never trained on) by minimising the negative log-likelihood of the
served rule (`features.OUTPUT_RULE`, with the model's own prior correction kept), then
reports the log-likelihood and the expected calibration error of the top-1 prediction at
T = 1, at the model's current T and at the fitted T, on validation and on PublicTest.
Export with the fitted T: `fer-pipeline run ... --warm-start W --epochs 0
--calibration-temperature T`; the Evaluator's audit report then shows the calibrated
reliability table.
"""
import argparse
import json
import math
import sys
from typing import Dict, List, Optional

import numpy as np

from pipeline.prior import corrected, network_probabilities
from pipeline.scoring import calibration_metrics, negative_log_likelihood

# The search range of T (golden-section search on log T: the likelihood is unimodal there).
TEMPERATURE_RANGE = (0.25, 8.0)


def fit_temperature(truth: np.ndarray, network_probabilities: np.ndarray, log_bias: np.ndarray,
                    low: float = TEMPERATURE_RANGE[0], high: float = TEMPERATURE_RANGE[1],
                    tolerance: float = 1e-4) -> float:
    """The T in [low, high] that minimises the negative log-likelihood of
    softmax((log(network probabilities) + log_bias) / T) on (truth, probabilities)."""
    def loss(log_t: float) -> float:
        return negative_log_likelihood(truth, corrected(network_probabilities, log_bias, math.exp(log_t)))

    golden = (math.sqrt(5) - 1) / 2
    a, b = math.log(low), math.log(high)
    c, d = b - golden * (b - a), a + golden * (b - a)
    loss_c, loss_d = loss(c), loss(d)
    while b - a > tolerance:
        if loss_c < loss_d:
            b, d, loss_d = d, c, loss_c
            c = b - golden * (b - a)
            loss_c = loss(c)
        else:
            a, c, loss_c = c, d, loss_d
            d = a + golden * (b - a)
            loss_d = loss(d)
    return math.exp((a + b) / 2)


def fit(model_dir: str, data: str, per_class: int = 0) -> Dict:
    """{"model", "classes", "applied_temperature", "prior_strength", "recommended", "splits":
    {validation, publictest: {"temperature_1", "served", "fitted": calibration_metrics}}}:
    each split scored at T = 1, at the model's own T and at the fitted T (the model's
    prior correction applied in each)."""
    model_dir, classes, rule, _, splits = network_probabilities(model_dir, data, per_class)
    truth, network = splits["validation"]
    temperature = round(fit_temperature(truth, network, rule.log_bias), 3)
    report = {"model": model_dir, "classes": classes, "applied_temperature": rule.temperature,
              "prior_strength": rule.strength, "recommended": temperature, "splits": {}}
    for name, (truth, network) in splits.items():
        report["splits"][name] = {
            label: dict(calibration_metrics(truth, corrected(network, rule.log_bias, t)), temperature=t)
            for label, t in (("temperature_1", 1.0), ("served", rule.temperature), ("fitted", temperature))}
    return report


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="FER2013 folder with train/ and test/")
    parser.add_argument("--model", required=True, help="a version directory or its parent")
    parser.add_argument("--per-class", type=int, default=0, help="at most this many faces per class")
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args(argv)
    try:
        report = fit(args.model, args.data, args.per_class)
    except (ValueError, OSError) as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
    print(f"{report['model']} (served at temperature {report['applied_temperature']:g}, "
          f"prior correction {report['prior_strength']:g})")
    print("temperature   validation NLL / ECE   PublicTest NLL / ECE")
    v, t = report["splits"]["validation"], report["splits"]["publictest"]
    for label in ("temperature_1", "served", "fitted"):
        print(f"{v[label]['temperature']:11.3f}   {v[label]['nll']:.4f} / {v[label]['ece']:.4f}"
              f"        {t[label]['nll']:.4f} / {t[label]['ece']:.4f}   ({label})")
    print(f"recommended (least validation NLL): --calibration-temperature {report['recommended']:g}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
