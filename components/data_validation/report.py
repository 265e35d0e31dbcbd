"""The data report: one self-contained HTML page (and the JSON it is made from).

Sections: verdict; findings (each breached bound with its measured value and
threshold); class distribution per span and split as bar charts; drift and skew
distances against their thresholds; per-image statistics; ingestion counts and
the quarantined/converted records. No JavaScript, no external files: it opens
from disk, from object storage, or as a mail attachment.
"""
import html
import json
import os
from typing import Dict, List

import tensorflow as tf

REPORT_JSON = "data_validation.json"
REPORT_HTML = "data_report.html"
MAX_LISTED_RECORDS = 500

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:72em;color:#222}
h1{font-size:1.5em} h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0} td,th{padding:.25em .6em;border-bottom:1px solid #eee;
text-align:left;font-size:.92em} th{background:#f4f4f4} .num{text-align:right;font-variant-numeric:tabular-nums}
.blocked{background:#fde2e1;border-left:6px solid #c62828;padding:.6em 1em}
.passed{background:#e3f4e4;border-left:6px solid #2e7d32;padding:.6em 1em}
.warn{color:#8a5a00} .block{color:#c62828;font-weight:600} .ok{color:#2e7d32}
.charts{display:flex;flex-wrap:wrap;gap:1.5em} .chart{min-width:20em}
small{color:#666}
"""


def _e(value) -> str:
    return html.escape(str(value))


def _table(header: List[str], rows: List[List[str]], numeric: set = frozenset()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td class=num>{c}</td>" if i in numeric else f"<td>{c}</td>"
                         for i, c in enumerate(row)) + "</tr>"
        for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _bars(counts: Dict[str, int], width: int = 260) -> str:
    """Horizontal bar chart (inline SVG) of class shares."""
    total = sum(counts.values()) or 1
    row_h, label_w = 18, 80
    height = row_h * len(counts) + 4
    parts = [f'<svg width="{label_w + width + 110}" height="{height}" role="img">']
    for i, (name, count) in enumerate(counts.items()):
        share = count / total
        y = i * row_h + 2
        parts.append(f'<text x="0" y="{y + 13}" font-size="12">{_e(name)}</text>')
        parts.append(f'<rect x="{label_w}" y="{y + 2}" width="{max(share * width, 1):.1f}" '
                     f'height="{row_h - 5}" fill="#5b8def"/>')
        parts.append(f'<text x="{label_w + share * width + 5:.1f}" y="{y + 13}" font-size="11">'
                     f'{share:.1%} ({count:,})</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_html(report: Dict) -> str:
    """The data report page for the dict `write` stores as JSON."""
    findings = report["findings"]
    blocking = [f for f in findings if f["blocking"]]
    warnings = [f for f in findings if not f["blocking"]]
    out = [f"<!doctype html><html><head><meta charset=utf-8><title>Data report: "
           f"{_e(report['pipeline'])}</title><style>{_CSS}</style></head><body>",
           f"<h1>Data report: {_e(report['pipeline'])}</h1>",
           f"<p><small>Data: {_e(report['data'])}; spans compared: "
           f"{_e(report['spans']['current_name'])}"
           + (f" against {_e(report['spans']['previous_name'])}" if report['spans']['previous'] is not None
              else " (no previous span)") + "</small></p>"]
    if report["blocked"]:
        out.append(f"<div class=blocked><b>BLOCKED</b>: {len(blocking)} blocking finding(s); "
                   f"Transform and training do not run on this data. {len(warnings)} "
                   f"warning(s).</div>")
    else:
        out.append(f"<div class=passed><b>PASSED</b>: no blocking finding; "
                   f"{len(warnings)} warning(s).</div>")

    out.append("<h2>Findings</h2>")
    if findings:
        rows = [[f"<span class={'block' if f['blocking'] else 'warn'}>"
                 f"{'blocks' if f['blocking'] else 'warns'}</span>", _e(f["check"]), _e(f["feature"]),
                 _e(f["where"]), "" if f["measured"] is None else f"{f['measured']:.4g}",
                 "" if f["threshold"] is None else f"{f['threshold']:g}", _e(f["message"])]
                for f in findings]
        out.append(_table(["action", "check", "feature", "where", "measured", "threshold", "detail"],
                          rows, numeric={4, 5}))
    else:
        out.append("<p class=ok>None.</p>")

    out.append("<h2>Class distribution</h2><div class=charts>")
    for span, splits in report["class_distribution"].items():
        for split, counts in splits.items():
            out.append(f"<div class=chart><b>{_e(span)} / {_e(split)}</b> "
                       f"<small>{sum(counts.values()):,} examples</small><br>{_bars(counts)}</div>")
    out.append("</div>")

    out.append("<h2>Drift and skew</h2>")
    if report["distances"]:
        rows = [[_e(d["check"]), _e(d["feature"]), _e(d["where"]), _e(d["measure"]),
                 "n/a" if d["value"] is None else f"{d['value']:.4f}", f"{d['threshold']:g}",
                 "<span class=block>breached</span>" if d["breached"] else "<span class=ok>within</span>"]
                for d in report["distances"]]
        out.append(_table(["check", "feature", "compared", "measure", "distance", "threshold", ""],
                          rows, numeric={4, 5}))
    else:
        out.append("<p>No comparison was made.</p>")
    out.append("<p><small>Skew: eval/test against train of the same span. Drift: each split of the "
               "new span against the same split of the previous span. Brightness and contrast are "
               "the mean and standard deviation of each image's pixels (0..1), computed once at "
               "ingestion.</small></p>")

    out.append("<h2>Image statistics (means)</h2>")
    rows = [[_e(span), _e(split), *(f"{means.get(k, float('nan')):.4f}" for k in ("brightness", "contrast"))]
            for span, splits in report["image_statistics"].items() for split, means in splits.items()]
    out.append(_table(["span", "split", "brightness", "contrast"], rows, numeric={2, 3}))

    out.append("<h2>Ingestion</h2>")
    for span, ingestion in report["ingestion"].items():
        rows = [[_e(split), *(f"{c.get(k, 0):,}" for k in
                              ("examples", "quarantined", "converted", "excluded", "sampled_out"))]
                for split, c in ingestion["splits"].items()]
        out.append(f"<p><b>{_e(span)}</b></p>" + _table(
            ["split", "examples", "quarantined", "converted", "excluded", "not sampled"],
            rows, numeric={1, 2, 3, 4, 5}))
    records = report["quarantined_records"]
    if records:
        shown = records[:MAX_LISTED_RECORDS]
        out.append(f"<p>Quarantined and converted records ({len(records):,}"
                   + (f", first {len(shown)} shown; all of them are in {REPORT_JSON}"
                      if len(records) > len(shown) else "") + "):</p>")
        out.append(_table(["span", "split", "status", "source", "reason"],
                          [[_e(r["span"]), _e(r["split"]), _e(r["status"]), _e(r["source"]),
                            _e(r["reason"])] for r in shown]))
    else:
        out.append("<p class=ok>No record was quarantined or converted.</p>")

    out.append("<h2>Thresholds</h2>")
    out.append(_table(["setting", "value"], [[_e(k), _e(v)] for k, v in report["config"].items()]))
    out.append("</body></html>")
    return "\n".join(out)


def write(report: Dict, directory: str) -> None:
    tf.io.gfile.makedirs(directory)
    with tf.io.gfile.GFile(os.path.join(directory, REPORT_JSON), "w") as f:
        json.dump(report, f, indent=1, allow_nan=False)
    with tf.io.gfile.GFile(os.path.join(directory, REPORT_HTML), "w") as f:
        f.write(render_html(report))


def load(directory: str) -> Dict:
    with tf.io.gfile.GFile(os.path.join(directory, REPORT_JSON)) as f:
        return json.load(f)
