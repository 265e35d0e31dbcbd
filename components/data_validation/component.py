"""Data-validation components: the curated schema, the comparator configuration of
TFX's DistributionValidator, and the gate that decides whether training may go on.

    CuratedSchemaGen   the checked-in schema with the label domain narrowed to the
                       configured classes (ExampleValidator then flags any other label)
    distribution_config  DistributionValidator comparators from `ValidationConfig`
    DataValidationGate reads StatisticsGen / ExampleValidator / DistributionValidator
                       outputs and the ingestion report; writes the data report; sets
                       `blocked` on it. The pipeline runs Transform and everything
                       after it only when `blocked` is 0 (a `tfx.dsl.Cond`).
"""
from typing import Dict, List, Sequence

import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import path_pb2, schema_pb2
from tfx import types
from tfx.components.statistics_gen import stats_artifact_utils
from tfx.proto import distribution_validator_pb2
from tfx.types import artifact_utils, standard_artifacts
from tfx.utils import io_utils
from tfx.v1.dsl.components import InputArtifact, OutputArtifact, Parameter, component

from components.data_validation import checks, report as data_report
from components.example_gen import report as ingestion_report
from components.example_gen.component import IngestionReport
from pipeline import features
from pipeline.config import ValidationConfig

BLOCKED_PROPERTY = "blocked"
SCHEMA_FILE_NAME = "schema.pbtxt"   # where Transform and the Trainer look for it
LABEL_DOMAIN = "emotion"


class DataValidationReport(types.Artifact):
    """The data report (data_report.html, data_validation.json) and the gate's verdict."""
    TYPE_NAME = "fer2013.DataValidationReport"  # <namespace>.<Name>, as KFP v2 requires


def curated_schema(schema_file: str, classes: List[str],
                   annotation_columns: Sequence[str] = ()) -> schema_pb2.Schema:
    """The checked-in schema with the emotion domain narrowed to `classes`, plus one
    required string feature per annotation column."""
    schema = tfdv.load_schema_text(schema_file)
    domain = next((d for d in schema.string_domain if d.name == LABEL_DOMAIN), None)
    if domain is None:
        raise ValueError(f"{schema_file}: no string_domain named {LABEL_DOMAIN!r}")
    unknown = set(classes) - set(domain.value)
    if unknown:
        raise ValueError(f"{schema_file}: classes {sorted(unknown)} are not in its label domain")
    del domain.value[:]
    domain.value.extend(classes)
    for name in annotation_columns:
        feature = schema.feature.add(name=name, type=schema_pb2.BYTES)
        feature.presence.min_fraction = 1.0
        feature.shape.dim.add(size=1)
    return schema


@component
def CuratedSchemaGen(schema: OutputArtifact[standard_artifacts.Schema],
                     schema_file: Parameter[str], classes: Parameter[str],
                     annotation_columns: Parameter[str] = "") -> None:
    """Writes the curated schema for the configured classes and annotation columns
    (both comma-separated)."""
    io_utils.write_pbtxt_file(
        f"{schema.uri}/{SCHEMA_FILE_NAME}",
        curated_schema(schema_file, classes.split(","),
                       [c for c in annotation_columns.split(",") if c]))


def distribution_config(label_linf: float, brightness_js: float, contrast_js: float
                        ) -> distribution_validator_pb2.DistributionValidatorConfig:
    """Comparators of one DistributionValidator: L-infinity on the string label (an integer
    label would be compared as a number and always read 0), Jensen-Shannon divergence on the
    per-image brightness and contrast."""
    def comparator(name: str, **kwargs) -> distribution_validator_pb2.FeatureComparator:
        return distribution_validator_pb2.FeatureComparator(
            path=path_pb2.Path(step=[name]),
            distribution_comparator=schema_pb2.FeatureComparator(**kwargs))

    return distribution_validator_pb2.DistributionValidatorConfig(
        default_slice_config=distribution_validator_pb2.DistributionValidatorConfig.DatasetConfig(
            feature=[
                comparator(features.LABEL_NAME_KEY,
                           infinity_norm=schema_pb2.InfinityNorm(threshold=label_linf)),
                comparator(features.BRIGHTNESS_KEY,
                           jensen_shannon_divergence=schema_pb2.JensenShannonDivergence(
                               threshold=brightness_js)),
                comparator(features.CONTRAST_KEY,
                           jensen_shannon_divergence=schema_pb2.JensenShannonDivergence(
                               threshold=contrast_js)),
            ]))


def _split_stats(artifact) -> Dict:
    return {split: stats_artifact_utils.load_statistics(artifact, split).proto()
            for split in artifact_utils.decode_split_names(artifact.split_names)}


def build_report(*, pipeline: str, data: str, config: ValidationConfig, classes: List[str],
                 statistics, schema_anomalies, skew_anomalies, ingestion,
                 drift_anomalies=None, baseline_statistics=None, baseline_ingestion=None) -> Dict:
    """The data report as a dict, from the artifacts of the validators."""
    # StatisticsGen copies the examples' span, which the ExampleGen sets from span-N.
    current = statistics.span
    has_baseline = baseline_statistics is not None
    previous = baseline_statistics.span if has_baseline else 0
    current_name = checks.span_name(current)
    previous_name = checks.span_name(previous, default="baseline") if has_baseline else None
    if previous_name == current_name:  # e.g. two un-numbered folders on Kubeflow
        current_name, previous_name = "current", "baseline"
    spans = [(current_name, statistics, ingestion)]
    if has_baseline:
        spans.append((previous_name, baseline_statistics, baseline_ingestion))

    findings: List[checks.Finding] = []
    distribution, image_stats, ingested, records = {}, {}, {}, []
    split_stats = {}
    for name, stats_artifact, ingestion_artifact in spans:
        split_stats[name] = _split_stats(stats_artifact)
        distribution[name], image_stats[name] = {}, {}
        for split, stats in split_stats[name].items():
            counts = checks.class_counts(stats, classes)
            distribution[name][split] = counts
            image_stats[name][split] = checks.numeric_means(stats)
            if stats_artifact is statistics:  # the data being ingested; the baseline is context
                findings += checks.imbalance_findings(
                    counts, f"{name} {split}" if has_baseline else split, config)
        if ingestion_artifact is not None:
            loaded = ingestion_report.load(ingestion_artifact.uri)
            ingested[name] = {"splits": loaded["splits"], "totals": loaded["totals"]}
            records += [{"span": name, **r} for r in loaded["records"]
                        if r["status"] in ("quarantined", "converted")]

    findings += checks.schema_findings(checks.load_anomalies(schema_anomalies.uri), config)
    span_label = current_name if has_baseline else ""
    skew = checks.load_anomalies(skew_anomalies.uri)
    measured = checks.distances(skew, checks.SKEW, span_label)
    findings += checks.comparison_problems(skew, checks.SKEW, config, span_label)
    if drift_anomalies is not None:
        drift = checks.load_anomalies(drift_anomalies.uri)
        measured += checks.distances(drift, checks.DRIFT, current_name, previous_name)
        findings += checks.comparison_problems(drift, checks.DRIFT, config, current_name,
                                               previous_name)
        for split in sorted(set(split_stats[current_name]) - set(split_stats[previous_name])):
            findings.append(checks.Finding(
                checks.DRIFT, "(split)", f"{current_name} {split}",
                f"{current_name} {split} has no counterpart in {previous_name}: "
                f"its drift was not checked", False))
    findings += checks.distance_findings(measured, config)
    order = {c: i for i, c in enumerate(checks.CHECKS)}
    findings.sort(key=lambda f: (not f.blocking, order[f.check], f.where, f.feature))
    return {
        "pipeline": pipeline,
        "data": data,
        "blocked": any(f.blocking for f in findings),
        "spans": {"current": current, "current_name": current_name,
                  "previous": previous if has_baseline else None, "previous_name": previous_name},
        "findings": [f.to_dict() for f in findings],
        "distances": [d.to_dict() for d in measured],
        "class_distribution": distribution,
        "image_statistics": image_stats,
        "ingestion": ingested,
        "quarantined_records": records,
        "config": config.to_dict(),
    }


@component
def DataValidationGate(
        statistics: InputArtifact[standard_artifacts.ExampleStatistics],
        schema_anomalies: InputArtifact[standard_artifacts.ExampleAnomalies],
        skew_anomalies: InputArtifact[standard_artifacts.ExampleAnomalies],
        ingestion_report: InputArtifact[IngestionReport],
        report: OutputArtifact[DataValidationReport],
        validation_config: Parameter[str],
        classes: Parameter[str],
        pipeline: Parameter[str],
        data: Parameter[str],
        drift_anomalies: InputArtifact[standard_artifacts.ExampleAnomalies] = None,
        baseline_statistics: InputArtifact[standard_artifacts.ExampleStatistics] = None,
        baseline_ingestion_report: InputArtifact[IngestionReport] = None,
) -> None:
    """Imbalance, schema, skew and drift findings -> data report; `blocked` = 1 when any
    finding is configured to block."""
    result = build_report(
        pipeline=pipeline, data=data,
        config=ValidationConfig.from_json(validation_config),
        classes=classes.split(","), statistics=statistics, schema_anomalies=schema_anomalies,
        skew_anomalies=skew_anomalies, ingestion=ingestion_report,
        drift_anomalies=drift_anomalies, baseline_statistics=baseline_statistics,
        baseline_ingestion=baseline_ingestion_report)
    data_report.write(result, report.uri)
    report.set_int_custom_property(BLOCKED_PROPERTY, int(result["blocked"]))
    report.set_int_custom_property("num_blocking", sum(f["blocking"] for f in result["findings"]))
    report.set_int_custom_property("num_warnings", sum(not f["blocking"] for f in result["findings"]))
