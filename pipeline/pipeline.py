"""`create_pipeline`: the one definition of the FER2013 TFX pipeline.

Pure: it reads no environment and builds no paths; runners pass in every
physical fact. Every orchestrator (LocalDagRunner, BeamDagRunner) runs this
same component list.
"""
from typing import List, Optional

import tensorflow_model_analysis as tfma
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx

from components.example_gen.component import Fer2013ExampleGen
from components.example_gen.fer2013 import SourceInfo
from pipeline.config import EvaluationConfig, IngestConfig, TrainingConfig
from pipeline.evaluation import make_eval_config

PREPROCESSING_FN = "components.transform.preprocessing.preprocessing_fn"
RUN_FN = "components.trainer.run.run_fn"


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
    metadata_connection_config: Optional[metadata_store_pb2.ConnectionConfig] = None,
    beam_pipeline_args: Optional[List[str]] = None,
    enable_cache: bool = True,
) -> tfx.dsl.Pipeline:
    """ExampleGen -> statistics/schema/validation -> Transform -> Trainer -> Evaluator -> Pusher."""
    # Reads FER2013 (folder, CSV or zip), validates every record, reports the bad ones.
    example_gen = Fer2013ExampleGen(source=source, ingest=ingest)
    # Per-split statistics of the raw examples (TFDV).
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    # The curated schema checked into the repository.
    schema_gen = tfx.components.ImportSchemaGen(schema_file=schema_file)
    # Anomalies of every split's statistics against the curated schema.
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
    # Decode and scale; the same graph is embedded in the exported model.
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN,
        splits_config=tfx.proto.SplitsConfig(analyze=["train"], transform=["train"]),
        custom_config={"classes": list(training.classes)})
    # Trains on train (validation carved out of it) and exports both signatures.
    trainer = tfx.components.Trainer(
        run_fn=RUN_FN,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(splits=["train"]),
        eval_args=tfx.proto.EvalArgs(splits=["train"]),
        custom_config=training.to_dict())
    # The latest blessed model, the baseline of the no-regression gate.
    baseline = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")
    # TFMA on the eval split (PublicTest): metrics per emotion, blessing gates.
    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=baseline.outputs["model"],
        example_splits=["eval"],
        eval_config=make_eval_config(training.classes, gates))
    # Copies a blessed model into TF Serving's <base>/<version>/ layout.
    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_model_dir)))

    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=[example_gen, statistics_gen, schema_gen, example_validator, transform,
                    trainer, baseline, evaluator, pusher],
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args or [])
