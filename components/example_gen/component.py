"""FER2013 ExampleGen: a FileBasedExampleGen that reads the three FER2013 forms.

Usage:

    source = fer2013.detect_source('/data/fer2013')          # or fer2013.csv, or a .zip
    example_gen = Fer2013ExampleGen(source=source, ingest=IngestConfig(layout=source.layout))
    example_gen.outputs['examples']           # splits train, eval (and test if present)
    example_gen.outputs['ingestion_report']   # counts, quarantined and converted records

Being a FileBasedExampleGen, its driver fingerprints the input files of each
split pattern, so a re-run on unchanged data is served from the cache.
"""

from tfx import types
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.example_gen import executor
from components.example_gen.fer2013 import SourceInfo
from pipeline.config import IngestConfig


class IngestionReport(types.Artifact):
    """Counts per split/class/outcome and the list of quarantined and converted records."""
    TYPE_NAME = "fer2013.IngestionReport"  # <namespace>.<Name>, as KFP v2 requires


class Fer2013ExampleGenSpec(standard_component_specs.FileBasedExampleGenSpec):
    PARAMETERS = {
        **standard_component_specs.FileBasedExampleGenSpec.PARAMETERS,
        executor.INGEST_CONFIG_KEY: ExecutionParameter(type=str),
        executor.DATA_SPAN_KEY: ExecutionParameter(type=int, optional=True),
    }
    OUTPUTS = {
        **standard_component_specs.FileBasedExampleGenSpec.OUTPUTS,
        executor.INGESTION_REPORT_KEY: ChannelParameter(type=IngestionReport),
    }


class Fer2013ExampleGen(FileBasedExampleGen):
    """Ingests FER2013 (folder, CSV or zip) into train/eval[/test] tf.Example splits."""

    SPEC_CLASS = Fer2013ExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(self, source: SourceInfo, ingest: IngestConfig):
        """source: what `fer2013.detect_source` found; ingest: classes and sampling."""
        if ingest.layout != source.layout:
            raise ValueError(f"ingest layout {ingest.layout!r} != source layout {source.layout!r}")
        input_config = example_gen_pb2.Input(splits=[
            example_gen_pb2.Input.Split(name=name, pattern=pattern)
            for name, pattern in source.patterns])
        spec = Fer2013ExampleGenSpec(
            input_base=source.input_base,
            input_config=input_config,
            output_config=example_gen_pb2.Output(),
            output_data_format=example_gen_pb2.FORMAT_TF_EXAMPLE,
            output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP,
            ingest_config=ingest.to_json(),
            data_span=source.span,
            examples=types.Channel(type=standard_artifacts.Examples),
            ingestion_report=types.Channel(type=IngestionReport))
        base_beam_component.BaseBeamComponent.__init__(self, spec=spec)
