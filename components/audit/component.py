"""AuditGate: after the Evaluator, the fairness gate, the audit report and the model card.

It reads the Evaluator's metrics and blessing, writes `audit_report.json`,
`audit_report.html` and `model_card.md` into its `audit` artifact, and
publishes the ModelBlessing the Pusher consumes: blessed only when the
Evaluator blessed the model AND every fairness condition holds. The reasons
are custom properties of that blessing in ML Metadata (`blessing_message`).
"""
import hashlib
import json

import tensorflow as tf
from tfx import types
from tfx.types import standard_artifacts
from tfx.utils import path_utils
from tfx.v1.dsl.components import InputArtifact, OutputArtifact, Parameter, component

from components.audit import audit
from components.trainer.export import read_calibration_temperature, read_ensemble, read_prior_correction
from pipeline.config import EvaluationConfig
from pipeline.evaluation import calibration, evaluation_metrics, validation_failures


class AuditReport(types.Artifact):
    """audit_report.json/.html and model_card.md of one evaluated model."""
    TYPE_NAME = "fer2013.AuditReport"  # <namespace>.<Name>, as KFP v2 requires


class AuditBlessing(standard_artifacts.ModelBlessing):
    """The AuditGate's verdict again, as a type of its own: the regression-baseline resolver
    reads only these, so a model the Evaluator blessed but the audit refused never becomes
    the baseline (a plain ModelBlessing channel would also match the Evaluator's)."""
    TYPE_NAME = "fer2013.AuditBlessing"


def _write(directory: str, name: str, text: str) -> None:
    with tf.io.gfile.GFile(f"{directory}/{name}", "w") as f:
        f.write(text)


@component
def AuditGate(
        evaluation: InputArtifact[standard_artifacts.ModelEvaluation],
        blessing: InputArtifact[standard_artifacts.ModelBlessing],
        model: InputArtifact[standard_artifacts.Model],
        examples: InputArtifact[standard_artifacts.Examples],
        audit_blessing: OutputArtifact[standard_artifacts.ModelBlessing],
        baseline_blessing: OutputArtifact[AuditBlessing],
        audit_report: OutputArtifact[AuditReport],
        gates: Parameter[str],
        classes: Parameter[str],
        pipeline: Parameter[str],
        annotation_columns: Parameter[str] = "",
        baseline_model: InputArtifact[standard_artifacts.Model] = None,
) -> None:
    config = EvaluationConfig.from_json(gates)
    served_model = path_utils.serving_model_path(model.uri)
    prior_correction = read_prior_correction(served_model)
    class_names = classes.split(",")
    columns = [c for c in annotation_columns.split(",") if c]
    fingerprint = (examples.get_string_custom_property("input_fingerprint")
                   if examples.has_custom_property("input_fingerprint") else "")
    report = audit.build_report(
        pipeline=pipeline, classes=class_names,
        metrics=evaluation_metrics(evaluation.uri, class_names),
        evaluator=validation_failures(evaluation.uri),
        calibration=calibration(evaluation.uri),
        evaluator_blessed=blessing.get_int_custom_property("blessed") == 1,
        gates=config, annotation_columns=columns,
        lineage={"model_artifact_id": model.id, "examples_artifact_id": examples.id,
                 "evaluation_artifact_id": evaluation.id, "evaluator_blessing_id": blessing.id,
                 "model_uri": model.uri,
                 # What the no-regression gate compared against (none on a first run).
                 "baseline_model_artifact_id": baseline_model.id if baseline_model else None,
                 "baseline_model_uri": baseline_model.uri if baseline_model else None},
        data={"span": examples.span, "input_fingerprint_sha256":
              hashlib.sha256(fingerprint.encode()).hexdigest() if fingerprint else "unknown",
              "examples_uri": examples.uri},
        prior_correction=prior_correction, calibration_temperature=read_calibration_temperature(served_model),
        ensemble=read_ensemble(served_model))
    _write(audit_report.uri, audit.AUDIT_JSON, json.dumps(report, indent=1))
    _write(audit_report.uri, audit.AUDIT_HTML, audit.render_html(report))
    _write(audit_report.uri, audit.MODEL_CARD, audit.model_card(report))
    reasons = [w for gate in report["gates"] for w in gate["why"]]
    # The same custom properties the Evaluator sets, so the blessed-model resolver and the
    # Pusher read this blessing exactly like the Evaluator's.
    for verdict in (audit_blessing, baseline_blessing):
        verdict.set_int_custom_property("blessed", int(report["blessed"]))
        verdict.set_string_custom_property("current_model", model.uri)
        verdict.set_int_custom_property("current_model_id", model.id)
        verdict.set_string_custom_property("blessing_message", "; ".join(reasons) or "all gates passed")
    audit_report.set_int_custom_property("blessed", int(report["blessed"]))
