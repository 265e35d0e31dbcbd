"""The audit of one evaluated model: slices with confidence intervals, the fairness gate,
the audit report (JSON + HTML) and the model card.

Everything is computed from the Evaluator's TFMA output (accuracy, example
count, top-1 calibration plot and Fairness Indicators per slice); this module
adds 95% Wilson intervals, gaps to overall, the expected calibration error and
the fairness decision: on every annotation slice (and, if configured, every
image-proxy band) with at least `fairness_min_examples` examples, accuracy may
trail overall accuracy by at most `fairness_max_gap`.

(TFMA's own cross-slice thresholds cannot do this in TFMA 0.47: their
validation result is never ok, and `min_slice_size` crashes next to them.)
"""
import html
import math
from typing import Dict, List, Optional, Sequence, Tuple

from pipeline import features
from pipeline.config import EvaluationConfig
from pipeline.evaluation import ACCURACY, FAIRNESS_THRESHOLD, PROXY_SLICE_KEYS

AUDIT_JSON = "audit_report.json"
AUDIT_HTML = "audit_report.html"
MODEL_CARD = "model_card.md"
CARD_TITLE = "# Model card: "   # then the pipeline's name (pipeline.ship: the served name)
PROXY_NOTE = ("brightness_band and contrast_band are computed from the pixels of each image; they are "
              "proxies for lighting and image quality, NOT demographic attributes")


def wilson_interval(successes: int, n: int, z: float = 1.96) -> Tuple[float, float]:
    """95% Wilson score interval of a proportion successes/n ((0, 1) when n == 0)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def slice_kind(feature: str, annotation_columns: Optional[Sequence[str]] = None) -> str:
    """overall, emotion, image proxy, annotation or other. Without `annotation_columns`,
    every feature that is not a built-in slice counts as an annotation."""
    if feature == "":
        return "overall"
    if feature == features.LABEL_NAME_KEY:
        return "emotion"
    if feature in PROXY_SLICE_KEYS:
        return "image proxy"
    return "annotation" if annotation_columns is None or feature in annotation_columns else "other"


FAIRNESS_RATES = {"fnr": "false_negative_rate", "fpr": "false_positive_rate"}


def fairness_indicator_rates(values: Dict[str, float], classes: Sequence[str]) -> Dict[str, Dict]:
    """{'fnr': {class: rate}, 'fpr': {...}} at threshold 0.5 from Fairness Indicators'
    metrics of one slice (empty when it did not run)."""
    rates = {}
    for short, name in FAIRNESS_RATES.items():
        found = {c: values.get(f"fairness_indicators_metrics/{name}@{FAIRNESS_THRESHOLD}/{c}")
                 for c in classes}
        if any(v is not None for v in found.values()):
            rates[short] = found
    return rates


def slice_rows(metrics: Dict[str, Dict[str, float]], annotation_columns: Sequence[str],
               calibration: Optional[Dict[str, Dict]] = None,
               classes: Sequence[str] = ()) -> List[Dict]:
    """One row per slice: kind, example count, accuracy with its 95% interval, gap to overall,
    macro F1, expected calibration error and Fairness Indicators' per-class error rates."""
    overall = metrics.get("overall", {}).get(ACCURACY)
    calibration = calibration or {}
    rows = []
    for name, values in metrics.items():
        feature, _, value = name.partition("=") if name != "overall" else ("", "", "")
        count = int(values.get("example_count") or 0)
        accuracy = values.get(ACCURACY)
        low, high = wilson_interval(round((accuracy or 0.0) * count), count)
        rows.append({
            "slice": name, "feature": feature, "value": value,
            "kind": slice_kind(feature, annotation_columns), "examples": count,
            "accuracy": accuracy, "ci95": [round(low, 4), round(high, 4)],
            "gap_to_overall": None if accuracy is None or overall is None else round(overall - accuracy, 4),
            "macro_f1": values.get("macro_f1_score"),
            "ece": calibration.get(name, {}).get("ece"),
            "fairness_indicators": fairness_indicator_rates(values, classes),
        })
    order = {"overall": 0, "annotation": 1, "image proxy": 2, "emotion": 3, "other": 4}
    return sorted(rows, key=lambda r: (order[r["kind"]], r["feature"], r["value"]))


def fairness_failures(rows: List[Dict], gates: EvaluationConfig) -> List[str]:
    """The slices that break the fairness gate, each named with its numbers."""
    kinds = {"annotation"} | ({"image proxy"} if gates.fairness_proxy_slices else set())
    failures = []
    for row in rows:
        if (row["kind"] in kinds and row["examples"] >= gates.fairness_min_examples
                and row["gap_to_overall"] is not None and row["gap_to_overall"] > gates.fairness_max_gap):
            failures.append(
                f"fairness: accuracy on {row['slice']} is {row['accuracy']:.4f} (n={row['examples']}, "
                f"95% CI {row['ci95'][0]:.3f}-{row['ci95'][1]:.3f}), {row['gap_to_overall']:.4f} below "
                f"overall; allowed gap {gates.fairness_max_gap:g}")
    return failures


def build_report(*, pipeline: str, classes: Sequence[str], metrics: Dict, evaluator: Dict,
                 evaluator_blessed: bool, gates: EvaluationConfig, annotation_columns: Sequence[str],
                 lineage: Dict, data: Dict, calibration: Optional[Dict[str, Dict]] = None,
                 prior_correction: Optional[Dict] = None, calibration_temperature: float = 1.0,
                 ensemble: Optional[Dict] = None) -> Dict:
    rows = slice_rows(metrics, annotation_columns, calibration, classes)
    fairness = fairness_failures(rows, gates)
    gate_list = [
        {"kind": "evaluator", "gate": "accuracy floor and no regression (Evaluator, TFMA)",
         "passed": evaluator_blessed, "why": evaluator.get("failures") or []},
        {"kind": "fairness", "gate": f"fairness: annotation{' and image-proxy' if gates.fairness_proxy_slices else ''} "
                 f"slices with >= {gates.fairness_min_examples} examples within "
                 f"{gates.fairness_max_gap:g} of overall accuracy",
         "passed": not fairness, "why": fairness},
    ]
    return {
        "pipeline": pipeline, "classes": list(classes), "blessed": evaluator_blessed and not fairness,
        "gates": gate_list, "slices": rows, "data": data, "lineage": lineage,
        "thresholds": {"min_accuracy": gates.min_accuracy, "max_regression": gates.max_regression,
                       "fairness_max_gap": gates.fairness_max_gap,
                       "fairness_min_examples": gates.fairness_min_examples,
                       "fairness_proxy_slices": gates.fairness_proxy_slices},
        "annotation_columns": list(annotation_columns), "proxy_note": PROXY_NOTE,
        "reliability": (calibration or {}).get("overall", {}).get("bins", []),
        "fairness_indicators_threshold": FAIRNESS_THRESHOLD,
        "prior_correction": prior_correction, "calibration_temperature": calibration_temperature,
        **({"ensemble": ensemble} if ensemble else {}),
    }


def decision_rule(report: Dict) -> str:
    """How the served label and probabilities follow from the network: its own, or after
    the export's temperature scaling and prior correction (the model card says which)."""
    correction = report.get("prior_correction")
    temperature = report.get("calibration_temperature", 1.0)
    if report.get("ensemble"):
        return _ensemble_rule(report["ensemble"], correction, temperature)
    scaled = ("" if temperature == 1.0 else
              f" The logits are divided by a calibration temperature of {temperature:g} before the softmax "
              "(fitted on the validation carve-out, `assets.extra/calibration.json`): the "
              f"{'overconfident' if temperature > 1 else 'underconfident'} network's probabilities are "
              "brought closer to how often it is right; this never changes the label.")
    if not correction:
        return ("Decision rule: `probabilities` are the network's own"
                + (" up to calibration" if scaled else "")
                + " and `label` is the most probable class (no prior correction)." + scaled)
    rare = min(correction["train_counts"], key=correction["train_counts"].get)
    return ("Decision rule: `probabilities` are the network's divided by the training class "
            f"frequencies to the power {correction['strength']:g} and renormalised (logit adjustment, "
            "`assets.extra/prior_correction.json`), and `label` is the most probable of those: rare "
            f"emotions ({rare} most of all) are predicted more often than by the network alone, so "
            "the probabilities are tilted away from the training frequencies on purpose." + scaled)


def _ensemble_rule(ensemble: Dict, correction: Optional[Dict], temperature: float) -> str:
    """`decision_rule` of an ensemble (`features.ENSEMBLE_ASSET`): its members and their rules."""
    members = "; ".join(
        f"{m['model']} version {m['version']} ({m['architecture']}, "
        + (f"prior correction {m['prior_correction']:g}, " if m.get("prior_correction") else "")
        + f"calibration temperature {m['calibration_temperature']:g})" for m in ensemble["members"])
    after = ([f"the prior correction of strength {correction['strength']:g}"] if correction else []) + (
        [f"a calibration temperature of {temperature:g}"] if temperature != 1.0 else [])
    return (f"Decision rule: an ensemble of {len(ensemble['members'])} networks "
            "(`assets.extra/ensemble.json`): `probabilities` are the mean of the members' probabilities, "
            f"each member's as its own SavedModel serves them ({members})"
            + (f", then {' and '.join(after)} applied to that mean" if after else "")
            + "; `label` is the most probable class.")


def _e(value) -> str:
    return html.escape(str(value))


def _fmt(value, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def render_html(report: Dict) -> str:
    verdict = "BLESSED" if report["blessed"] else "NOT BLESSED"
    out = [f"<!doctype html><html><head><meta charset=utf-8><title>Audit: {_e(report['pipeline'])}"
           "</title><style>body{font-family:system-ui,sans-serif;margin:2em;max-width:72em}"
           "table{border-collapse:collapse}td,th{padding:.25em .6em;border-bottom:1px solid #eee;"
           "text-align:left}.num{text-align:right}.fail{color:#c62828;font-weight:600}"
           ".pass{color:#2e7d32}</style></head><body>",
           f"<h1>Audit report: {_e(report['pipeline'])}</h1>",
           f"<p><b>{verdict}</b>. Evaluated on the eval split (FER2013 PublicTest or your own).</p>",
           f"<p>{_e(decision_rule(report).replace('`', ''))}</p>",
           "<h2>Gates</h2><table><tr><th>gate</th><th>result</th><th>why</th></tr>"]
    for gate in report["gates"]:
        out.append(f"<tr><td>{_e(gate['gate'])}</td><td class={'pass' if gate['passed'] else 'fail'}>"
                   f"{'passed' if gate['passed'] else 'failed'}</td><td>"
                   + "<br>".join(_e(w) for w in gate["why"]) + "</td></tr>")
    out.append("</table><h2>Slices</h2>")
    out.append(f"<p><small>{_e(report['proxy_note'])}. Intervals: 95% Wilson score intervals of "
               "accuracy. Gap: overall accuracy minus the slice's.</small></p>")
    out.append("<table><tr><th>slice</th><th>kind</th><th>examples</th><th>accuracy</th>"
               "<th>95% CI</th><th>gap to overall</th><th>macro F1</th><th>ECE</th></tr>")
    for row in report["slices"]:
        out.append(f"<tr><td>{_e(row['slice'])}</td><td>{_e(row['kind'])}</td>"
                   f"<td class=num>{row['examples']}</td><td class=num>{_fmt(row['accuracy'])}</td>"
                   f"<td class=num>{row['ci95'][0]:.3f}-{row['ci95'][1]:.3f}</td>"
                   f"<td class=num>{_fmt(row['gap_to_overall'])}</td>"
                   f"<td class=num>{_fmt(row['macro_f1'])}</td><td class=num>{_fmt(row['ece'])}</td></tr>")
    out.append("</table>")
    out += _calibration_html(report) + _fairness_indicators_html(report)
    out.append("<h2>Data and lineage</h2><table>")
    for key, value in [*report["data"].items(), *report["lineage"].items()]:
        out.append(f"<tr><td>{_e(key)}</td><td>{_e(value)}</td></tr>")
    out.append("</table><h2>Thresholds</h2><table>")
    for key, value in report["thresholds"].items():
        out.append(f"<tr><td>{_e(key)}</td><td>{_e(value)}</td></tr>")
    out.append("</table></body></html>")
    return "\n".join(out)


def _calibration_html(report: Dict) -> List[str]:
    out = ["<h2>Calibration</h2><p><small>Reliability of the top-1 prediction on the whole eval split "
           "(TFMA CalibrationPlot): per confidence bin, how often the most probable emotion was right. "
           "ECE (expected calibration error) = sum over bins of (bin share) x |accuracy - confidence|; "
           "0 is perfectly calibrated.</small></p>"]
    if not report.get("reliability"):
        return out + ["<p>No calibration plot in the evaluation.</p>"]
    out.append("<table><tr><th>confidence bin</th><th>examples</th><th>mean confidence</th>"
               "<th>accuracy</th></tr>")
    for b in report["reliability"]:
        out.append(f"<tr><td>{b['low']:.1f}-{b['high']:.1f}</td><td class=num>{b['examples']}</td>"
                   f"<td class=num>{b['confidence']:.3f}</td><td class=num>{b['accuracy']:.3f}</td></tr>")
    return out + ["</table>"]


def _fairness_indicators_html(report: Dict) -> List[str]:
    rows = [r for r in report["slices"] if r["kind"] in ("overall", "annotation", "image proxy")
            and r["fairness_indicators"]]
    out = [f"<h2>Fairness Indicators</h2><p><small>Per emotion, false negative rate / false positive "
           f"rate at threshold {report['fairness_indicators_threshold']} (one-vs-rest), for the overall "
           "data, every annotation slice and every image-proxy band.</small></p>"]
    if not rows:
        return out + ["<p>Fairness Indicators did not run (install fairness-indicators).</p>"]
    classes = report["classes"]
    out.append("<table><tr><th>slice</th>" + "".join(f"<th>{_e(c)}</th>" for c in classes) + "</tr>")
    for row in rows:
        rates = row["fairness_indicators"]
        cells = "".join(f"<td class=num>{_fmt(rates.get('fnr', {}).get(c), 2)} / "
                        f"{_fmt(rates.get('fpr', {}).get(c), 2)}</td>" for c in classes)
        out.append(f"<tr><td>{_e(row['slice'])}</td>{cells}</tr>")
    return out + ["</table>"]


def model_card(report: Dict) -> str:
    """The model card (Markdown), generated from the audit report."""
    overall = next((r for r in report["slices"] if r["kind"] == "overall"), None)
    lines = [
        f"{CARD_TITLE}{report['pipeline']}", "",
        "## Model",
        f"{'An ensemble of convolutional networks' if report.get('ensemble') else 'A convolutional network'} that classifies a face image into one of: {', '.join(report['classes'])}. "
        "Trained by this TFX pipeline on FER2013 (or the data named below); exported as a TF Serving "
        "SavedModel whose `predict_image` signature takes encoded images and returns `probabilities`, "
        "`label` and `classes`.", "",
        decision_rule(report), "",
        "## Intended use",
        "Research, teaching and prototyping of facial-expression recognition; aggregate, consented "
        "analysis of posed expressions (for example user studies where participants agree to it); "
        "assistive and accessibility experiments with a human in the loop.", "",
        "## Out-of-scope uses",
        "- Surveillance or tracking of people, in public or private spaces.",
        "- Decisions about people: hiring, admission, credit, insurance, policing, border control.",
        "- Inferring the emotions of employees or students (workplace and education emotion "
        "recognition is prohibited in the EU by the AI Act, Article 5(1)(f)).",
        "- Any use treating a facial expression as proof of an inner emotional state: expressions "
        "and feelings are not the same thing.", "",
        "## Training data and its limits",
        "- FER2013: about 35,900 48x48 grayscale faces collected by web image search (Goodfellow et "
        "al., 2013), labelled with 7 expressions; low resolution, no colour.",
        "- Label noise: human accuracy on FER2013 is estimated at about 65%; many images are "
        "ambiguous or mislabelled.",
        "- Class imbalance: disgust is about 1.5% of the training data.",
        "- No demographic labels: FER2013 records no age, gender or skin tone, so fairness across "
        "such groups cannot be measured without annotations supplied by the user.", "",
        "## Evaluation",
        (f"Overall accuracy {overall['accuracy']:.4f} on {overall['examples']} examples "
         f"(95% CI {overall['ci95'][0]:.3f}-{overall['ci95'][1]:.3f})."
         if overall and overall["accuracy"] is not None else "No overall metrics."),
        "Gates: " + "; ".join(f"{g['gate']}: {'passed' if g['passed'] else 'FAILED'}"
                               for g in report["gates"]) + ".",
        f"Blessed for serving: {'yes' if report['blessed'] else 'no'}.", "",
        (f"Calibration: expected calibration error of the top-1 prediction {overall['ece']:.4f} "
         "(0 = confidences match accuracy; see the audit report's reliability table)."
         if overall and overall.get("ece") is not None else "Calibration: not measured."), "",
        "| slice | kind | examples | accuracy | 95% CI | gap to overall | ECE |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report["slices"]:
        lines.append(f"| {row['slice']} | {row['kind']} | {row['examples']} | {_fmt(row['accuracy'])} | "
                     f"{row['ci95'][0]:.3f}-{row['ci95'][1]:.3f} | {_fmt(row['gap_to_overall'])} | "
                     f"{_fmt(row.get('ece'))} |")
    lines += [
        "", f"Note: {report['proxy_note']}.", "",
        "## Privacy",
        "The served model keeps nothing: TF Serving and `fer-pipeline predict` process an image in "
        "memory and return probabilities; neither logs image bytes or face crops. The pipeline keeps "
        "its training and evaluation examples (the images) under its pipeline root and ML Metadata "
        "store; delete a run's output directory to remove them.", "",
        "## Caveats",
        "- Accuracy on your own images (other cameras, lighting, resolutions, populations) may be far "
        "lower than on FER2013; evaluate on your data before use.",
        "- Small slices have wide confidence intervals; a passed fairness gate on few examples proves "
        "little.",
        "- Annotation slices are only as good as the annotations supplied.", "",
        "## Lineage",
    ]
    lines += [f"- {key}: {value}" for key, value in [*report["data"].items(), *report["lineage"].items()]]
    return "\n".join(lines) + "\n"
