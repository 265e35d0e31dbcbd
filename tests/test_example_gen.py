"""The FER2013 ExampleGen executor under Beam: splits, examples and the ingestion report."""
import os
import zipfile

import pytest
import tensorflow as tf
from tfx.types import standard_artifacts
from tfx.utils import proto_utils

from components.example_gen import executor, fer2013, report
from components.transform import preprocessing
from components.example_gen.component import Fer2013ExampleGen, IngestionReport
from pipeline import features
from pipeline.config import IngestConfig
from tests.conftest import csv_rows_from_real, make_csv, make_folder_layout, real_images, zip_tree


def run_executor(source: fer2013.SourceInfo, out_dir, ingest: IngestConfig):
    component = Fer2013ExampleGen(source=source, ingest=ingest)
    props = {k: proto_utils.proto_to_json(v) if hasattr(v, "DESCRIPTOR") else v
             for k, v in component.exec_properties.items()}
    examples, ingestion = standard_artifacts.Examples(), IngestionReport()
    examples.uri, ingestion.uri = str(out_dir / "examples"), str(out_dir / "report")
    executor.Executor().Do({}, {"examples": [examples], "ingestion_report": [ingestion]}, props)
    return examples, ingestion


def read_split(examples, split):
    files = tf.io.gfile.glob(os.path.join(examples.uri, f"Split-{split}", "*"))
    return [tf.train.Example.FromString(r.numpy())
            for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def value(example, key):
    feature = example.features.feature[key]
    return feature.int64_list.value[0] if feature.int64_list.value else feature.bytes_list.value[0]


def decoded_set(images):
    """The pipeline's own decoding of each image, as a sorted list of pixel buffers."""
    return sorted(a.tobytes() for a in preprocessing.decode_images(tf.constant(images)).numpy())


def folder_with_bad_records(tmp_path):
    root = make_folder_layout(tmp_path / "fer", {"train": 2, "test": 1})
    (root / "train" / "happy" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (root / "train" / "contempt").mkdir()
    (root / "train" / "contempt" / "c1.jpg").write_bytes(real_images("train", "sad", 1)[0].read_bytes())
    return root


def test_folder_input_writes_splits_and_reports_bad_records(tmp_path):
    source = fer2013.detect_source(str(folder_with_bad_records(tmp_path)))
    examples, ingestion = run_executor(source, tmp_path / "out", IngestConfig(layout="folder"))
    train, evaluation = read_split(examples, "train"), read_split(examples, "eval")
    assert len(train) == 14 and len(evaluation) == 7
    assert sorted(value(e, features.LABEL_NAME_KEY).decode() for e in evaluation) == sorted(features.EMOTIONS)
    assert {value(e, features.SOURCE_SPLIT_KEY) for e in evaluation} == {b"PublicTest"}
    summary = report.load(ingestion.uri)
    assert summary["splits"]["train"]["examples"] == 14
    assert summary["splits"]["train"]["quarantined"] == 2
    assert summary["splits"]["train"]["examples_per_class"]["disgust"] == 2
    assert {(r["image_id"], r["status"]) for r in summary["records"]} == {
        ("broken", "quarantined"), ("c1", "quarantined")}
    with open(os.path.join(ingestion.uri, report.QUARANTINE_CSV)) as f:
        assert "unknown emotion folder 'contempt'" in f.read()
    assert examples.get_int_custom_property("num_quarantined") == 2
    assert ingestion.get_int_custom_property("num_examples") == 21


def test_csv_zip_input_with_subset_and_sample(tmp_path):
    rows = csv_rows_from_real({"Training": 3, "PublicTest": 1, "PrivateTest": 1})
    rows.append((3, "12 13", "Training"))
    csv_path = make_csv(tmp_path / "fer2013.csv", rows)
    with zipfile.ZipFile(tmp_path / "fer2013.zip", "w") as zf:
        zf.write(csv_path, "fer2013/fer2013.csv")
    source = fer2013.detect_source(str(tmp_path / "fer2013.zip"))
    ingest = IngestConfig(layout="zip", classes=("happy", "sad", "neutral"),
                          sample_per_class=(("train", 2),))
    examples, ingestion = run_executor(source, tmp_path / "out", ingest)
    train = read_split(examples, "train")
    assert sorted(value(e, features.LABEL_NAME_KEY) for e in train) == [
        b"happy", b"happy", b"neutral", b"neutral", b"sad", b"sad"]
    assert len(read_split(examples, "test")) == 3
    assert {value(e, features.IMAGE_ID_KEY)[:12] for e in read_split(examples, "test")} == {b"PrivateTest_"}
    counts = report.load(ingestion.uri)["splits"]["train"]
    # 9 happy/sad/neutral rows + 1 bad happy row, 2 kept per class; the sample is drawn
    # before reading, so a bad row outside it is counted as not sampled, never lost.
    assert (counts["examples"], counts["excluded"]) == (6, 12)
    assert counts["sampled_out"] + counts["quarantined"] == 4


@pytest.mark.parametrize("form", ["csv", "zip_of_folder"])
def test_every_input_form_yields_the_same_examples(tmp_path, form):
    root = make_folder_layout(tmp_path / "fer", {"train": 1, "test": 1})
    if form == "csv":
        data = make_csv(tmp_path / "fer2013.csv", csv_rows_from_real({"Training": 1, "PublicTest": 1}))
    else:
        data = zip_tree(root, tmp_path / "fer2013.zip", prefix="fer2013/")
    source = fer2013.detect_source(str(data))
    examples, ingestion = run_executor(source, tmp_path / "out", IngestConfig(layout=source.layout))
    for split, usage in (("train", b"Training"), ("eval", b"PublicTest")):
        written = read_split(examples, split)
        assert sorted(value(e, features.LABEL_KEY) for e in written) == list(range(7))
        assert {value(e, features.SOURCE_SPLIT_KEY) for e in written} == {usage}
        # The same real images, whether they came as JPEG files or as CSV pixel rows.
        decoded = decoded_set([value(e, features.IMAGE_KEY) for e in written])
        expected = decoded_set([real_images("train" if split == "train" else "test", emotion, 1)[0]
                                .read_bytes() for emotion in features.EMOTIONS])
        assert decoded == expected
    assert report.load(ingestion.uri)["totals"]["examples"] == 14
