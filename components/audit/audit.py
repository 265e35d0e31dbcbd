"""The audit of one evaluated model: slices with confidence intervals, the fairness gate,
the audit report (JSON + HTML) and the model card.

Everything is computed from the Evaluator's TFMA metrics (accuracy and example
count per slice); this module adds 95% Wilson intervals, gaps to overall and
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
from pipeline.evaluation import ACCURACY, PROXY_SLICE_KEYS

AUDIT_JSON = "audit_report.json"
AUDIT_HTML = "audit_report.html"
MODEL_CARD = "model_card.md"
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


def slice_rows(metrics: Dict[str, Dict[str, float]], annotation_columns: Sequence[str]) -> List[Dict]:
    """One row per slice: kind, example count, accuracy with its 95% interval, gap to overall."""
    overall = metrics.get("overall", {}).get(ACCURACY)
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
                 lineage: Dict, data: Dict) -> Dict:
    rows = slice_rows(metrics, annotation_columns)
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
    }


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
           "<h2>Gates</h2><table><tr><th>gate</th><th>result</th><th>why</th></tr>"]
    for gate in report["gates"]:
        out.append(f"<tr><td>{_e(gate['gate'])}</td><td class={'pass' if gate['passed'] else 'fail'}>"
                   f"{'passed' if gate['passed'] else 'failed'}</td><td>"
                   + "<br>".join(_e(w) for w in gate["why"]) + "</td></tr>")
    out.append("</table><h2>Slices</h2>")
    out.append(f"<p><small>{_e(report['proxy_note'])}. Intervals: 95% Wilson score intervals of "
               "accuracy. Gap: overall accuracy minus the slice's.</small></p>")
    out.append("<table><tr><th>slice</th><th>kind</th><th>examples</th><th>accuracy</th>"
               "<th>95% CI</th><th>gap to overall</th><th>macro F1</th></tr>")
    for row in report["slices"]:
        out.append(f"<tr><td>{_e(row['slice'])}</td><td>{_e(row['kind'])}</td>"
                   f"<td class=num>{row['examples']}</td><td class=num>{_fmt(row['accuracy'])}</td>"
                   f"<td class=num>{row['ci95'][0]:.3f}-{row['ci95'][1]:.3f}</td>"
                   f"<td class=num>{_fmt(row['gap_to_overall'])}</td>"
                   f"<td class=num>{_fmt(row['macro_f1'])}</td></tr>")
    out.append("</table><h2>Data and lineage</h2><table>")
    for key, value in [*report["data"].items(), *report["lineage"].items()]:
        out.append(f"<tr><td>{_e(key)}</td><td>{_e(value)}</td></tr>")
    out.append("</table><h2>Thresholds</h2><table>")
    for key, value in report["thresholds"].items():
        out.append(f"<tr><td>{_e(key)}</td><td>{_e(value)}</td></tr>")
    out.append("</table></body></html>")
    return "\n".join(out)


def model_card(report: Dict) -> str:
    """The model card (Markdown), generated from the audit report."""
    overall = next((r for r in report["slices"] if r["kind"] == "overall"), None)
    lines = [
        f"# Model card: {report['pipeline']}", "",
        "## Model",
        f"A convolutional network that classifies a face image into one of: {', '.join(report['classes'])}. "
        "Trained by this TFX pipeline on FER2013 (or the data named below); exported as a TF Serving "
        "SavedModel whose `predict_image` signature takes encoded images and returns `probabilities`, "
        "`label` and `classes`.", "",
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
        f"Gates: " + "; ".join(f"{g['gate']}: {'passed' if g['passed'] else 'FAILED'}"
                               for g in report["gates"]) + ".",
        f"Blessed for serving: {'yes' if report['blessed'] else 'no'}.", "",
        "| slice | kind | examples | accuracy | 95% CI | gap to overall |",
        "|---|---|---|---|---|---|",
    ]
    for row in report["slices"]:
        lines.append(f"| {row['slice']} | {row['kind']} | {row['examples']} | {_fmt(row['accuracy'])} | "
                     f"{row['ci95'][0]:.3f}-{row['ci95'][1]:.3f} | {_fmt(row['gap_to_overall'])} |")
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
