"""The ingestion report: per split and class, how many records were kept or not, and why.

Written by the ExampleGen executor into its `ingestion_report` artifact:
`ingestion_report.json` (counts and every non-kept record) and
`quarantine.csv` (one row per quarantined or converted record).
"""
import collections
import csv
import json
import os
from typing import Dict, List, Sequence

import tensorflow as tf

from components.example_gen import fer2013

REPORT_JSON = "ingestion_report.json"
QUARANTINE_CSV = "quarantine.csv"
# Outcomes listed record by record (sampled_out records are only counted).
LISTED_STATUSES = (fer2013.QUARANTINED, fer2013.CONVERTED, fer2013.EXCLUDED)
KEPT_STATUSES = (fer2013.OK, fer2013.CONVERTED)


def counts_file(split: str) -> str:
    return f"counts-{split}.jsonl"


def records_file(split: str) -> str:
    return f"records-{split}.jsonl"


def _read_jsonl(path: str) -> List[dict]:
    if not tf.io.gfile.exists(path):
        return []
    with tf.io.gfile.GFile(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_ingestion_report(report_dir: str, splits: Sequence[str], source: str) -> Dict:
    """Aggregates the executor's per-split files into the report; returns it as a dict."""
    per_split = {}
    totals = collections.Counter({s: 0 for s in fer2013.STATUSES})
    listed = []
    for split in splits:
        by_status = collections.defaultdict(collections.Counter)
        for row in _read_jsonl(os.path.join(report_dir, counts_file(split))):
            by_status[row["status"]][row["label"] or "?"] += row["count"]
        kept_by_class = collections.Counter()
        for status in KEPT_STATUSES:
            kept_by_class.update(by_status[status])
        per_split[split] = {
            "examples": sum(kept_by_class.values()),
            "examples_per_class": dict(sorted(kept_by_class.items())),
            **{status: sum(by_status[status].values()) for status in fer2013.STATUSES},
        }
        totals.update({s: per_split[split][s] for s in fer2013.STATUSES})
        listed += sorted(_read_jsonl(os.path.join(report_dir, records_file(split))),
                         key=lambda r: r["source"])
    summary = {
        "source": source,
        "splits": per_split,
        "totals": {"examples": sum(p["examples"] for p in per_split.values()), **totals},
        "records": listed,
    }
    with tf.io.gfile.GFile(os.path.join(report_dir, REPORT_JSON), "w") as f:
        json.dump(summary, f, indent=1)
    with tf.io.gfile.GFile(os.path.join(report_dir, QUARANTINE_CSV), "w") as f:
        writer = csv.DictWriter(f, ["split", "status", "source", "image_id", "label", "reason"])
        writer.writeheader()
        for row in listed:
            if row["status"] in (fer2013.QUARANTINED, fer2013.CONVERTED):
                writer.writerow({k: row[k] for k in writer.fieldnames})
    return summary


def load(report_dir: str) -> Dict:
    with tf.io.gfile.GFile(os.path.join(report_dir, REPORT_JSON)) as f:
        return json.load(f)
