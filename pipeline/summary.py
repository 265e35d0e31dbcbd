"""The run summary: what ran, what came in, how the model did, whether it was pushed and why.

Everything is read back from ML Metadata and the artifacts it points to, so
the summary describes what the orchestrator actually recorded.
"""
import collections
import json
import os
import shutil
from typing import Dict, List, Sequence

import tensorflow as tf
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx

from components.audit import audit
from components.data_validation import report as data_report
from components.example_gen import report as ingestion_report
from pipeline import features
from pipeline.evaluation import ACCURACY, confusion_matrix, evaluation_metrics, validation_failures

SUMMARY_JSON = "summary.json"
SUMMARY_TXT = "summary.txt"
EVALUATION_JSON = "evaluation.json"
CONFUSION_CSV = "confusion_matrix.csv"
_STATES = {v: k for k, v in metadata_store_pb2.Execution.State.items()}


def _store(metadata_path: str) -> metadata_store.MetadataStore:
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config)


def _node_runs(store, pipeline: tfx.dsl.Pipeline, since: float) -> Dict[str, Dict]:
    """Per node id: state, seconds and output artifacts of its execution in this run."""
    runs = {}
    for node in pipeline.components:
        context = store.get_context_by_type_and_name("node", f"{pipeline.pipeline_info.pipeline_name}.{node.id}")
        executions = store.get_executions_by_context(context.id) if context else []
        executions = [e for e in executions if e.create_time_since_epoch >= since * 1000]
        if not executions:
            runs[node.id] = {"state": "NOT_RUN", "seconds": 0.0, "outputs": {}}
            continue
        execution = max(executions, key=lambda e: e.create_time_since_epoch)
        outputs = collections.defaultdict(list)
        events = [e for e in store.get_events_by_execution_ids([execution.id])
                  if e.type == metadata_store_pb2.Event.OUTPUT]
        artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
        for event in events:
            outputs[event.path.steps[0].key].append(artifacts[event.artifact_id])
        runs[node.id] = {
            "state": _STATES.get(execution.last_known_state, "UNKNOWN"),
            "seconds": round((execution.last_update_time_since_epoch
                              - execution.create_time_since_epoch) / 1000.0, 1),
            "outputs": dict(outputs),
        }
    return runs


def _custom(artifact, key: str):
    value = artifact.custom_properties.get(key)
    if value is None:
        return None
    return value.int_value if value.HasField("int_value") else value.string_value


def collect(metadata_path: str, pipeline: tfx.dsl.Pipeline, since: float,
            classes: Sequence[str]) -> Dict:
    """The summary of the run that started at `since` (seconds since the epoch);
    `classes` names the model's outputs in order."""
    store = _store(metadata_path)
    runs = _node_runs(store, pipeline, since)
    out: Dict = {"pipeline": pipeline.pipeline_info.pipeline_name,
                 "components": {node: {"state": r["state"], "seconds": r["seconds"]}
                                for node, r in runs.items()}}

    def output(node: str, key: str):
        artifacts = runs.get(node, {}).get("outputs", {}).get(key, [])
        return artifacts[0] if artifacts else None

    report = output("Fer2013ExampleGen", "ingestion_report")
    if report:
        loaded = ingestion_report.load(report.uri)
        out["ingestion"] = {"splits": loaded["splits"], "totals": loaded["totals"],
                            "report_dir": report.uri}
    gate = output("DataValidationGate", "report")
    if gate:
        loaded = data_report.load(gate.uri)
        out["data_validation"] = {
            "blocked": loaded["blocked"], "spans": loaded["spans"],
            "findings": loaded["findings"], "distances": loaded["distances"],
            "class_distribution": loaded["class_distribution"], "report_dir": gate.uri}
    model_run = output("Trainer", "model_run")
    if model_run and tf.io.gfile.exists(os.path.join(model_run.uri, features.HISTORY_JSON)):
        with tf.io.gfile.GFile(os.path.join(model_run.uri, features.HISTORY_JSON)) as f:
            history = json.load(f)
        out["training"] = {"epochs": len(history.get("loss", [])),
                           "best_val_accuracy": round(max(history.get("val_accuracy", [0.0])), 4)}
        recipe = os.path.join(model_run.uri, features.TRAINING_CONFIG_JSON)
        if tf.io.gfile.exists(recipe):
            with tf.io.gfile.GFile(recipe) as f:
                members = json.load(f).get("ensemble") or []
            if members:
                out["training"]["ensemble"] = [os.path.basename(os.path.normpath(m)) for m in members]
        balance = os.path.join(model_run.uri, features.CLASS_BALANCE_JSON)
        if tf.io.gfile.exists(balance):
            with tf.io.gfile.GFile(balance) as f:
                out["training"]["class_balance"] = json.load(f)
    evaluation = output("Evaluator", "evaluation")
    blessing = output("Evaluator", "blessing")
    if evaluation:
        out["evaluation"] = {"split": "eval",
                             "metrics": evaluation_metrics(evaluation.uri, classes),
                             "confusion_matrix": {
                                 "classes": list(classes), "rows": "actual", "columns": "predicted",
                                 "counts": confusion_matrix(evaluation.uri, len(classes))},
                             "validation": validation_failures(evaluation.uri),
                             "uri": evaluation.uri}
    audit_report = output("AuditGate", "audit_report")
    if audit_report:
        with tf.io.gfile.GFile(os.path.join(audit_report.uri, audit.AUDIT_JSON)) as f:
            loaded = json.load(f)
        overall = next((r for r in loaded["slices"] if r["kind"] == "overall"), {})
        out["audit"] = {"blessed": loaded["blessed"], "gates": loaded["gates"],
                        "ece": overall.get("ece"), "report_dir": audit_report.uri}
        blessing = output("AuditGate", "audit_blessing")
    out["blessed"] = bool(blessing and _custom(blessing, "blessed") == 1)
    pushed = output("Pusher", "pushed_model")
    out["pushed"] = bool(pushed and _custom(pushed, "pushed") == 1)
    out["pushed_path"] = _custom(pushed, "pushed_destination") if out["pushed"] else None
    return out


def headline(result: Dict) -> Dict[str, float]:
    overall = result.get("evaluation", {}).get("metrics", {}).get("overall", {})
    return {k: overall[k] for k in (ACCURACY, "macro_f1_score", "example_count") if k in overall}


def format_text(result: Dict) -> str:
    """The human-readable summary printed at the end of a run."""
    lines = [f"Pipeline {result['pipeline']} finished in {result.get('wall_seconds', 0):.0f} s"]
    lines.append("Components: " + ", ".join(
        f"{node} {c['state'].lower()} ({c['seconds']:.0f} s)"
        for node, c in result["components"].items()))
    ingestion = result.get("ingestion")
    if ingestion:
        for split, counts in ingestion["splits"].items():
            lines.append(f"  {split}: {counts['examples']} examples, {counts['quarantined']} quarantined, "
                         f"{counts['converted']} converted, {counts['excluded']} excluded, "
                         f"{counts['sampled_out']} not sampled")
        lines.append(f"  quarantined/converted records: "
                     f"{os.path.join(result.get('reports_dir', ingestion['report_dir']), ingestion_report.QUARANTINE_CSV)}")
    validation = result.get("data_validation")
    if validation:
        findings = validation["findings"]
        blocking = sum(f["blocking"] for f in findings)
        spans = validation["spans"]
        compared = (f" ({spans['current_name']} against {spans['previous_name']})"
                    if spans["previous"] is not None else "")
        lines.append(f"Data validation{compared}: "
                     + ("BLOCKED, Transform and training do not run" if validation["blocked"]
                        else "passed")
                     + f": {blocking} blocking, {len(findings) - blocking} warning(s)")
        current = validation["class_distribution"].get(spans["current_name"], {})
        for split, counts in current.items():
            total = sum(counts.values()) or 1
            lines.append(f"  {split} classes: " + ", ".join(
                f"{name} {count / total:.1%}" for name, count in counts.items()))
        for finding in findings:
            lines.append(f"  {'blocks' if finding['blocking'] else 'warns'}: {finding['message']}")
        lines.append("  data report: " + os.path.join(
            result.get("reports_dir", validation["report_dir"]), data_report.REPORT_HTML))
    if result.get("training", {}).get("ensemble"):
        members = result["training"]["ensemble"]
        lines.append(f"Training: none: an ensemble of {len(members)} exported models "
                     f"({', '.join(members)}) was exported as one")
    elif "training" in result and not result["training"]["epochs"]:
        lines.append("Training: none: the warm-start weights were exported as they are")
    elif "training" in result:
        lines.append(f"Training: {result['training']['epochs']} epochs, best validation accuracy "
                     f"{result['training']['best_val_accuracy']:.3f} (validation carved from train)")
        balance = result["training"].get("class_balance")
        if balance:
            weights = balance.get("class_weights")
            lines.append(f"  class imbalance: {balance['imbalance']}" + (
                " (weights " + ", ".join(f"{k} {v:.2f}" for k, v in weights.items()) + ")"
                if weights else ""))
    head = headline(result)
    if head:
        lines.append("Evaluation on eval: " + ", ".join(
            f"{k} {v:.0f}" if k == "example_count" else f"{k} {v:.4f}" for k, v in head.items()))
    lines += _slice_lines(result)
    if result.get("audit", {}).get("ece") is not None:
        lines.append(f"Calibration: expected calibration error of the top-1 prediction "
                     f"{result['audit']['ece']:.4f} (reliability table in the audit report)")
    model_validation = result.get("evaluation", {}).get("validation", {})
    if result.get("validate_only"):
        pass  # nothing was meant to be trained
    elif result["blessed"]:
        lines.append("Blessed: yes (all thresholds passed)")
    else:
        stopped = validation and validation["blocked"]
        fairness = [w for gate in result.get("audit", {}).get("gates", [])
                    if gate["kind"] == "fairness" for w in gate["why"]]
        reasons = (model_validation.get("failures") or []) + fairness or [
            "no model was trained: data validation blocked the run" if stopped
            else "the Evaluator did not run"]
        lines.append("Blessed: NO: " + "; ".join(reasons))
    if not result.get("validate_only"):
        lines.append(f"Pushed: {result['pushed_path']}" if result["pushed"] else "Pushed: nothing")
    if result.get("audit"):
        where = result.get("reports_dir") or result["audit"]["report_dir"]
        lines.append(f"Audit: {os.path.join(where, audit.AUDIT_HTML)}, model card "
                     f"{os.path.join(where, audit.MODEL_CARD)}")
    if result.get("reports_dir"):
        lines.append(f"Reports: {result['reports_dir']}")
    return "\n".join(lines)


def _slice_lines(result: Dict) -> List[str]:
    """Accuracy and example count per slice, one line per slicing feature."""
    families = collections.defaultdict(list)
    for name, values in result.get("evaluation", {}).get("metrics", {}).items():
        if "=" in name and ACCURACY in values:
            feature, value = name.split("=", 1)
            families[feature].append(f"{value} {values[ACCURACY]:.3f} "
                                     f"(n={values.get('example_count', 0):.0f})")
    def kind(feature: str) -> str:
        name = audit.slice_kind(feature)
        return f"{name}, not a demographic" if name == "image proxy" else name

    return [f"  by {feature} ({kind(feature)}): " + ", ".join(sorted(parts))
            for feature, parts in families.items()]


def write_reports(result: Dict, reports_dir: str) -> None:
    """summary.json/.txt, evaluation.json and copies of the ingestion report files."""
    os.makedirs(reports_dir, exist_ok=True)
    result["reports_dir"] = reports_dir
    ingestion = result.get("ingestion")
    if ingestion:
        for name in (ingestion_report.REPORT_JSON, ingestion_report.QUARANTINE_CSV):
            shutil.copyfile(os.path.join(ingestion["report_dir"], name),
                            os.path.join(reports_dir, name))
    validation = result.get("data_validation")
    if validation:
        for name in (data_report.REPORT_HTML, data_report.REPORT_JSON):
            shutil.copyfile(os.path.join(validation["report_dir"], name),
                            os.path.join(reports_dir, name))
    if result.get("audit"):
        # The audit report and model card also travel with the pushed model.
        targets = [reports_dir] + ([os.path.join(result["pushed_path"], "assets.extra")]
                                   if result.get("pushed_path") else [])
        with open(os.path.join(result["audit"]["report_dir"], audit.AUDIT_JSON)) as f:
            report = json.load(f)
        report["pushed_version"] = result.get("pushed_path")  # known only after the Pusher
        for target in targets:
            os.makedirs(target, exist_ok=True)
            with open(os.path.join(target, audit.AUDIT_JSON), "w") as f:
                json.dump(report, f, indent=1)
            for name in (audit.AUDIT_HTML, audit.MODEL_CARD):
                shutil.copyfile(os.path.join(result["audit"]["report_dir"], name),
                                os.path.join(target, name))
    if "evaluation" in result:
        with open(os.path.join(reports_dir, EVALUATION_JSON), "w") as f:
            json.dump(result["evaluation"], f, indent=1)
        matrix = result["evaluation"]["confusion_matrix"]
        with open(os.path.join(reports_dir, CONFUSION_CSV), "w") as f:
            f.write("actual\\predicted," + ",".join(matrix["classes"]) + "\n")
            for name, row in zip(matrix["classes"], matrix["counts"]):
                f.write(name + "," + ",".join(map(str, row)) + "\n")
    with open(os.path.join(reports_dir, SUMMARY_JSON), "w") as f:
        json.dump(result, f, indent=1, default=str)
    with open(os.path.join(reports_dir, SUMMARY_TXT), "w") as f:
        f.write(format_text(result) + "\n")
