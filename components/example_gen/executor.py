"""Beam executor of the FER2013 ExampleGen: maps the plain-Python readers over records.

Per split: enumerate record references (one task) -> reshuffle -> read and
validate each record in parallel -> kept records become the split's
tf.Examples. Every record's outcome is also counted, and the non-kept ones
(quarantined, converted, excluded) are listed, in the ingestion report
artifact; `Do` then aggregates those files into `ingestion_report.json` and
records the counts as custom properties in ML Metadata.
"""
import json
import os
from typing import Any, Dict, List

import apache_beam as beam
from tfx.components.example_gen import base_example_gen_executor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils
from tfx.utils import proto_utils

from components.example_gen import fer2013, report
from pipeline.config import IngestConfig

INGEST_CONFIG_KEY = "ingest_config"
DATA_SPAN_KEY = "data_span"
INGESTION_REPORT_KEY = "ingestion_report"


@beam.ptransform_fn
def _ReadSplit(pipeline: beam.Pipeline, source_path: str, split: str,
               ingest: IngestConfig) -> beam.PCollection:
    """PCollection of `fer2013.Outcome` for every record of one split."""
    return (pipeline
            | "Start" >> beam.Create([split])
            | "Enumerate" >> beam.FlatMap(
                lambda s: fer2013.enumerate_split(source_path, ingest.layout, s, ingest.classes,
                                                  ingest.sample_size(s)))
            | "Reshuffle" >> beam.Reshuffle()
            | "ReadAndValidate" >> beam.Map(fer2013.to_outcome, ingest.classes, ingest.annotations,
                                            ingest.annotation_columns))


@beam.ptransform_fn
def _WriteReportParts(outcomes: beam.PCollection, report_dir: str, split: str):
    """Writes per-(status, label) counts and the non-kept records of one split."""
    _ = (outcomes
         | "KeyByStatus" >> beam.Map(lambda o: ((o.status, o.label_name), 1))
         | "Count" >> beam.CombinePerKey(sum)
         | "FormatCount" >> beam.Map(lambda kv: json.dumps(
             {"status": kv[0][0], "label": kv[0][1], "count": kv[1]}))
         | "WriteCounts" >> beam.io.WriteToText(
             os.path.join(report_dir, report.counts_file(split)), shard_name_template=""))
    _ = (outcomes
         | "NotKept" >> beam.Filter(lambda o: o.status in report.LISTED_STATUSES)
         | "FormatRecord" >> beam.Map(lambda o: json.dumps(o.report_row()))
         | "WriteRecords" >> beam.io.WriteToText(
             os.path.join(report_dir, report.records_file(split)), shard_name_template=""))


class Executor(base_example_gen_executor.BaseExampleGenExecutor):
    """Generic FileBasedExampleGen executor specialised for the FER2013 layouts."""

    _report_dir = ""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        # Unused: GenerateExamplesByBeam below needs the split name, not only its pattern.
        raise NotImplementedError

    def GenerateExamplesByBeam(self, pipeline: beam.Pipeline,
                               exec_properties: Dict[str, Any]) -> Dict[str, beam.PCollection]:
        input_config = example_gen_pb2.Input()
        proto_utils.json_to_proto(exec_properties["input_config"], input_config)
        ingest = IngestConfig.from_json(exec_properties[INGEST_CONFIG_KEY])
        input_base = exec_properties["input_base"]
        splits = {}
        for split in input_config.splits:
            source = (input_base if ingest.layout == "folder"
                      else os.path.join(input_base, split.pattern))
            outcomes = pipeline | f"ReadSplit[{split.name}]" >> _ReadSplit(
                source, split.name, ingest)
            _ = outcomes | f"Report[{split.name}]" >> _WriteReportParts(
                self._report_dir, split.name)
            splits[split.name] = (outcomes
                                  | f"Kept[{split.name}]" >> beam.Filter(
                                      lambda o: o.example is not None)
                                  | f"Examples[{split.name}]" >> beam.Map(lambda o: o.example))
        return splits

    def Do(self, input_dict: Dict[str, List], output_dict: Dict[str, List],
           exec_properties: Dict[str, Any]) -> None:
        report_artifact = artifact_utils.get_single_instance(output_dict[INGESTION_REPORT_KEY])
        self._report_dir = report_artifact.uri
        os.makedirs(self._report_dir, exist_ok=True)
        super().Do(input_dict, output_dict, exec_properties)

        input_config = example_gen_pb2.Input()
        proto_utils.json_to_proto(exec_properties["input_config"], input_config)
        summary = report.write_ingestion_report(
            self._report_dir, [s.name for s in input_config.splits],
            source=exec_properties["input_base"])
        totals = summary["totals"]
        span = int(exec_properties.get(DATA_SPAN_KEY) or 0)
        for artifact in output_dict["examples"]:
            artifact.span = span
            artifact.set_int_custom_property("span", span)
        report_artifact.set_int_custom_property("span", span)
        for artifact in (report_artifact, *output_dict["examples"]):
            artifact.set_int_custom_property("num_examples", totals["examples"])
            artifact.set_int_custom_property("num_quarantined", totals[fer2013.QUARANTINED])
            artifact.set_int_custom_property("num_converted", totals[fer2013.CONVERTED])
