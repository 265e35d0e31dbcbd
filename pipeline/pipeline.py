"""`create_pipeline`: the one definition of the FER2013 TFX pipeline.

Pure: it reads no environment and builds no paths; runners pass in every
physical fact. Every orchestrator (LocalDagRunner, BeamDagRunner) runs this
same component list.
"""
import dataclasses
from typing import List, Optional

from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx
# Not exported in tfx.v1 (1.16); this is its module path.
from tfx.components.distribution_validator.component import DistributionValidator

from components.audit.component import AuditBlessing, AuditGate
from components.data_validation.component import (
    BLOCKED_PROPERTY, CuratedSchemaGen, DataValidationGate, distribution_config)
from components.example_gen.component import Fer2013ExampleGen
from components.example_gen.fer2013 import SourceInfo
from pipeline.config import EvaluationConfig, IngestConfig, TrainingConfig, TuningConfig, ValidationConfig
from pipeline.evaluation import make_eval_config

PREPROCESSING_FN = "components.transform.preprocessing.preprocessing_fn"
RUN_FN = "components.trainer.run.run_fn"
TUNER_FN = "components.trainer.tuner.tuner_fn"
AUDIT_GATE_ID = "AuditGate"
LATEST_BLESSED = "latest"   # regression_baseline: the latest model the AuditGate blessed
BASELINE_IMPORTER_ID = "regression_baseline_importer"


def create_pipeline(
    *,
    pipeline_name: str,
    pipeline_root: str,
    source: SourceInfo,
    ingest: IngestConfig,
    schema_file: str,
    training: TrainingConfig,
    gates: EvaluationConfig,
    serving_model_dir: str,
    validation: ValidationConfig = ValidationConfig(),
    tuning: TuningConfig = TuningConfig(),
    baseline_source: Optional[SourceInfo] = None,
    metadata_connection_config: Optional[metadata_store_pb2.ConnectionConfig] = None,
    beam_pipeline_args: Optional[List[str]] = None,
    enable_cache: bool = True,
    validate_only: bool = False,
    regression_baseline: str = LATEST_BLESSED,
) -> tfx.dsl.Pipeline:
    """ExampleGen -> statistics/schema/validation gate -> Transform -> Trainer -> Evaluator ->
    AuditGate -> Pusher.

    `source` is the data (the newest span); `baseline_source`, when given, the
    previous span that the new one is checked for drift against. `validate_only` ends
    the pipeline at the data-validation gate (check new data without training).
    `tuning.enabled` puts a Tuner before the Trainer, whose best hyperparameters it uses.
    `regression_baseline`, the model the no-regression gate compares with: `LATEST_BLESSED`
    (a resolver finds the latest model the AuditGate blessed; the local runners), the URI of
    an earlier Trainer's model artifact (imported; open-source Kubeflow Pipelines runs
    importers but no resolvers), or "" (no baseline: the accuracy floor and the fairness
    gate still decide the push).
    """
    classes = ",".join(training.classes)
    # Reads FER2013 (folder, CSV or zip), validates every record, reports the bad ones.
    example_gen = Fer2013ExampleGen(source=source, ingest=ingest)
    # Per-split statistics of the raw examples (TFDV).
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    # The curated schema checked into the repository, label domain = the configured classes.
    schema_gen = CuratedSchemaGen(schema_file=schema_file, classes=classes,
                                  annotation_columns=",".join(ingest.annotation_columns))
    # Anomalies of every split's statistics against the curated schema.
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
    # Skew: eval (and test) against train, on the label and per-image statistics.
    skew_pairs = [(split, "train") for split in source.splits if split != "train"]
    skew_validator = DistributionValidator(
        statistics=statistics_gen.outputs["statistics"],
        baseline_statistics=statistics_gen.outputs["statistics"],
        config=distribution_config(validation.label_linf_skew, validation.brightness_js,
                                   validation.contrast_js),
        include_split_pairs=skew_pairs).with_id("SkewValidator")
    components = [example_gen, statistics_gen, schema_gen, example_validator, skew_validator]
    drift = {}
    if baseline_source is not None:
        # Drift: the new span against the previous one, split by split.
        baseline_gen = Fer2013ExampleGen(
            source=baseline_source,
            ingest=dataclasses.replace(ingest, layout=baseline_source.layout),
        ).with_id("PreviousSpanExampleGen")
        baseline_statistics = tfx.components.StatisticsGen(
            examples=baseline_gen.outputs["examples"]).with_id("PreviousSpanStatisticsGen")
        drift_validator = DistributionValidator(
            statistics=statistics_gen.outputs["statistics"],
            baseline_statistics=baseline_statistics.outputs["statistics"],
            config=distribution_config(validation.label_linf_drift, validation.brightness_js,
                                       validation.contrast_js),
            include_split_pairs=[(s, s) for s in source.splits if s in baseline_source.splits],
        ).with_id("DriftValidator")
        components += [baseline_gen, baseline_statistics, drift_validator]
        drift = dict(drift_anomalies=drift_validator.outputs["anomalies"],
                     baseline_statistics=baseline_statistics.outputs["statistics"],
                     baseline_ingestion_report=baseline_gen.outputs["ingestion_report"])
    # Imbalance, schema, skew and drift findings -> data report; decides `blocked`.
    gate = DataValidationGate(
        statistics=statistics_gen.outputs["statistics"],
        schema_anomalies=example_validator.outputs["anomalies"],
        skew_anomalies=skew_validator.outputs["anomalies"],
        ingestion_report=example_gen.outputs["ingestion_report"],
        validation_config=validation.to_json(),
        classes=classes, pipeline=pipeline_name, data=source.input_base, **drift)
    components.append(gate)
    if validate_only:
        return _pipeline(pipeline_name, pipeline_root, components, enable_cache,
                         metadata_connection_config, beam_pipeline_args)

    baseline_model = None
    if regression_baseline == LATEST_BLESSED:
        # The regression baseline: the latest model the AuditGate (accuracy AND fairness) blessed.
        # Its AuditBlessing type keeps the Evaluator's own blessings out of this channel.
        baseline = tfx.dsl.Resolver(
            strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
            model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
            model_blessing=tfx.dsl.Channel(type=AuditBlessing),
        ).with_id("latest_blessed_model_resolver")
        components.append(baseline)
        baseline_model = baseline.outputs["model"]
    elif regression_baseline:
        # A chosen earlier model: a Trainer's model artifact (its Format-Serving/ inside).
        baseline = tfx.dsl.Importer(
            source_uri=regression_baseline, artifact_type=tfx.types.standard_artifacts.Model,
        ).with_id(BASELINE_IMPORTER_ID)
        components.append(baseline)
        baseline_model = baseline.outputs["result"]

    # Nothing is transformed or trained on data the gate blocked.
    with tfx.dsl.Cond(gate.outputs["report"].future()[0].custom_property(BLOCKED_PROPERTY) == 0):
        # Decode and scale; the same graph is embedded in the exported model.
        transform = tfx.components.Transform(
            examples=example_gen.outputs["examples"],
            schema=schema_gen.outputs["schema"],
            preprocessing_fn=PREPROCESSING_FN,
            splits_config=tfx.proto.SplitsConfig(analyze=["train"], transform=["train"]),
            custom_config={"classes": list(training.classes)})
        # Optional: keras-tuner search over batch size, learning rate and optimizer.
        tuner = None
        if tuning.enabled:
            tuner = tfx.components.Tuner(
                tuner_fn=TUNER_FN,
                examples=transform.outputs["transformed_examples"],
                transform_graph=transform.outputs["transform_graph"],
                train_args=tfx.proto.TrainArgs(splits=["train"]),
                eval_args=tfx.proto.EvalArgs(splits=["train"]),
                custom_config={"training": training.to_dict(), "tuning": tuning.to_dict()})
        # Trains on train (validation carved out of it) and exports both signatures.
        trainer = tfx.components.Trainer(
            run_fn=RUN_FN,
            examples=transform.outputs["transformed_examples"],
            transform_graph=transform.outputs["transform_graph"],
            schema=schema_gen.outputs["schema"],
            train_args=tfx.proto.TrainArgs(splits=["train"]),
            eval_args=tfx.proto.EvalArgs(splits=["train"]),
            hyperparameters=tuner.outputs["best_hyperparameters"] if tuner else None,
            custom_config=training.to_dict())
        # TFMA on the eval split (PublicTest): metrics per emotion, blessing gates.
        evaluator = tfx.components.Evaluator(
            examples=example_gen.outputs["examples"],
            model=trainer.outputs["model"],
            baseline_model=baseline_model,
            example_splits=["eval"],
            eval_config=make_eval_config(training.classes, gates, ingest.annotation_columns))
        # Fairness gate, audit report and model card; its blessing is the one that counts.
        audit_gate = AuditGate(
            evaluation=evaluator.outputs["evaluation"],
            blessing=evaluator.outputs["blessing"],
            model=trainer.outputs["model"],
            examples=example_gen.outputs["examples"],
            baseline_model=baseline_model,
            gates=gates.to_json(),
            classes=classes, pipeline=pipeline_name,
            annotation_columns=",".join(ingest.annotation_columns)).with_id(AUDIT_GATE_ID)
        # Copies a blessed model into TF Serving's <base>/<version>/ layout.
        pusher = tfx.components.Pusher(
            model=trainer.outputs["model"],
            model_blessing=audit_gate.outputs["audit_blessing"],
            push_destination=tfx.proto.PushDestination(
                filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_model_dir)))
    components += [transform, *([tuner] if tuner else []), trainer, evaluator, audit_gate, pusher]

    return _pipeline(pipeline_name, pipeline_root, components, enable_cache,
                     metadata_connection_config, beam_pipeline_args)


def _pipeline(name, root, components, enable_cache, metadata_connection_config,
              beam_pipeline_args) -> tfx.dsl.Pipeline:
    return tfx.dsl.Pipeline(
        pipeline_name=name,
        pipeline_root=root,
        components=components,
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args or [])
