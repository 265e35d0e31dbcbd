"""Reading and validating FER2013 records in every form, with every kind of bad record."""
import collections
import zipfile

import numpy as np
import pytest
import tensorflow as tf

from components.example_gen import fer2013
from pipeline import features
from tests.conftest import (csv_rows_from_real, encode, make_csv, make_folder_layout, pixels_of,
                            real_images, zip_tree)


def outcomes(source: fer2013.SourceInfo, split: str, classes=features.EMOTIONS, sample=0):
    path = source.input_base if source.layout == "folder" else f"{source.input_base}/{source.patterns[0][1]}"
    refs = fer2013.enumerate_split(path, source.layout, split, classes, sample)
    return [fer2013.to_outcome(ref, classes) for ref in refs]


def by_status(results):
    return collections.Counter(o.status for o in results)


def parse(example: bytes) -> tf.train.Example:
    return tf.train.Example.FromString(example)


def test_real_kaggle_folder_is_detected_with_train_and_eval(fer2013_root):
    source = fer2013.detect_source(str(fer2013_root))
    assert source.layout == "folder"
    assert dict(source.patterns) == {"train": "train/*/*", "eval": "test/*/*"}


def test_folder_layout_keeps_bytes_labels_and_ids(tmp_path):
    root = make_folder_layout(tmp_path / "fer", {"train": 2, "test": 1})
    source = fer2013.detect_source(str(root))
    train = outcomes(source, "train")
    assert by_status(train) == {"ok": 14}
    first = real_images("train", "angry", 1)[0]
    kept = {o.image_id: o for o in train}[first.stem]
    example = parse(kept.example).features.feature
    assert example[features.IMAGE_KEY].bytes_list.value[0] == first.read_bytes()
    assert example[features.LABEL_KEY].int64_list.value[0] == 0
    assert example[features.LABEL_NAME_KEY].bytes_list.value[0] == b"angry"
    assert example[features.SOURCE_SPLIT_KEY].bytes_list.value[0] == b"Training"
    assert example[features.IMAGE_ID_KEY].bytes_list.value[0] == first.stem.encode()
    assert by_status(outcomes(source, "eval")) == {"ok": 7}


def test_private_test_files_in_test_folder_feed_the_test_split(tmp_path):
    root = make_folder_layout(tmp_path / "fer", {"train": 1, "test": 1})
    image = real_images("test", "happy", 2)[1]
    (root / "test" / "happy" / "PrivateTest_123.jpg").write_bytes(image.read_bytes())
    source = fer2013.detect_source(str(root))
    assert source.splits == ("train", "eval", "test")
    test = outcomes(source, "test")
    assert [(o.image_id, o.label_name, o.status) for o in test] == [("PrivateTest_123", "happy", "ok")]
    assert "PrivateTest_123" not in {o.image_id for o in outcomes(source, "eval")}


def test_bad_files_are_quarantined_or_converted_with_reasons(tmp_path):
    root = make_folder_layout(tmp_path / "fer", {"train": 1, "test": 1})
    angry = root / "train" / "angry"
    (angry / "empty.jpg").write_bytes(b"")
    (angry / "notes.txt").write_text("not an image")
    (angry / "truncated.jpg").write_bytes(real_images("train", "angry", 1)[0].read_bytes()[:200])
    rgb = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    (angry / "colour.png").write_bytes(encode(rgb, "PNG"))
    (root / "train" / "contempt").mkdir()
    (root / "train" / "contempt" / "x.jpg").write_bytes(real_images("train", "sad", 1)[0].read_bytes())
    (root / "train" / "stray.jpg").write_bytes(real_images("train", "sad", 1)[0].read_bytes())
    results = {o.image_id: o for o in outcomes(fer2013.detect_source(str(root)), "train")}
    assert (results["empty"].status, results["empty"].reason) == ("quarantined", "empty file")
    assert (results["notes"].status, results["notes"].reason) == ("quarantined", "not an image file")
    assert results["truncated"].status == "quarantined"
    assert results["truncated"].reason.startswith("cannot decode image")
    assert results["x"].reason == "unknown emotion folder 'contempt'"
    assert results["stray"].reason == "file is not inside an emotion folder"
    colour = results["colour"]
    assert colour.status == "converted" and "RGB 80x64" in colour.reason
    png = parse(colour.example).features.feature[features.IMAGE_KEY].bytes_list.value[0]
    assert tf.io.decode_png(png).shape == (48, 48, 1)
    assert all(results[k].example is None for k in ("empty", "notes", "truncated", "x", "stray"))


def test_csv_with_private_test_and_icml_header(tmp_path):
    rows = csv_rows_from_real({"Training": 2, "PublicTest": 1, "PrivateTest": 1})
    for header in ("emotion,pixels,Usage", "emotion, Usage, pixels"):
        path = make_csv(tmp_path / "fer2013.csv", rows, header)
        source = fer2013.detect_source(str(path))
        assert (source.layout, source.splits) == ("csv", ("train", "eval", "test"))
        train = outcomes(source, "train")
        assert by_status(train) == {"ok": 14}
        assert train[0].image_id == "Training_0"
        test = outcomes(source, "test")
        assert [o.image_id for o in test][:2] == ["PrivateTest_21", "PrivateTest_22"]
        decoded = tf.io.decode_png(parse(train[0].example).features.feature[
            features.IMAGE_KEY].bytes_list.value[0]).numpy().reshape(-1)
        assert " ".join(map(str, decoded)) == rows[0][1]


def test_bad_csv_rows_are_quarantined(tmp_path):
    good = pixels_of(real_images("train", "fear", 1)[0])
    rows = [(2, good, "Training"), (3, "1 2 3", "Training"), (4, good.replace("0", "x", 1), "Training"),
            (9, good, "Training"), (5, good, "Validation"), (0, good, "PublicTest")]
    path = make_csv(tmp_path / "fer2013.csv", rows)
    results = {o.image_id: o for o in outcomes(fer2013.detect_source(str(path)), "train")}
    assert results["Training_0"].status == "ok"
    assert results["Training_1"].reason == "expected 2304 pixel values, got 3"
    assert results["Training_2"].reason.startswith("non-numeric pixel value")
    assert results["Training_3"].reason == "unknown emotion code '9'"
    assert results["Validation_4"].reason == "unknown Usage 'Validation'"
    assert "PublicTest_5" not in results


def test_zip_of_folder_with_escaping_entry_and_zip_of_csv(tmp_path):
    root = make_folder_layout(tmp_path / "fer", {"train": 1, "test": 1})
    archive = zip_tree(root, tmp_path / "fer2013.zip", prefix="archive/")
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("../evil.jpg", real_images("train", "sad", 1)[0].read_bytes())
    source = fer2013.detect_source(str(archive))
    assert (source.layout, source.splits) == ("zip", ("train", "eval"))
    train = {o.image_id: o for o in outcomes(source, "train")}
    assert train["evil"].reason == "zip entry escapes the archive root"
    assert collections.Counter(o.status for o in train.values()) == {"ok": 7, "quarantined": 1}
    assert by_status(outcomes(source, "eval")) == {"ok": 7}

    rows = csv_rows_from_real({"Training": 1, "PublicTest": 1})
    csv_path = make_csv(tmp_path / "icml_face_data.csv", rows, "emotion, Usage, pixels")
    with zipfile.ZipFile(tmp_path / "csv.zip", "w") as zf:
        zf.write(csv_path, "data/icml_face_data.csv")
    source = fer2013.detect_source(str(tmp_path / "csv.zip"))
    assert by_status(outcomes(source, "eval")) == {"ok": 7}


def test_classes_exclude_and_sample_is_stratified_and_deterministic(tmp_path):
    root = make_folder_layout(tmp_path / "fer", {"train": 5, "test": 1})
    source = fer2013.detect_source(str(root))
    classes = ("happy", "sad", "neutral")
    first = outcomes(source, "train", classes, sample=2)
    assert by_status(first) == {"ok": 6, "sampled_out": 9, "excluded": 20}
    kept = collections.Counter(o.label_name for o in first if o.status == "ok")
    assert kept == {"happy": 2, "sad": 2, "neutral": 2}
    assert [o.image_id for o in first if o.status == "ok"] == [
        o.image_id for o in outcomes(source, "train", classes, sample=2) if o.status == "ok"]


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "data folder is empty"),
    (lambda p: (p / "other").mkdir() or (p / "other" / "a.txt").write_text("x") and p / "other",
     "unrecognized layout"),
    (lambda p: make_csv(p / "fer2013.csv", [(0, "1", "Training")], "emotion,pixels"),
     "lacks column(s) usage"),
    (lambda p: make_csv(p / "fer2013.csv", [(0, "1", "Training")]), "no PublicTest records"),
    (lambda p: (p / "bad.zip").write_bytes(b"PK\x03\x04garbage") and p / "bad.zip", "not a readable zip"),
    (lambda p: (p / "nodata.bin").write_bytes(b"") or p / "nodata.bin", "data file is empty"),
])
def test_unusable_data_paths_raise_a_clear_error(tmp_path, make, message):
    with pytest.raises(fer2013.DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        fer2013.detect_source(str(make(tmp_path)))


def test_repeated_file_names_get_unique_image_ids(tmp_path):
    root = tmp_path / "data"
    for folder in ("neutral", "surprise"):
        (root / "train" / folder).mkdir(parents=True)
        (root / "train" / folder / "Training_1.png").write_bytes(
            encode(np.full((48, 48), 100 if folder == "neutral" else 200, np.uint8), "PNG"))
    (root / "train" / "happy").mkdir()
    (root / "train" / "happy" / "Training_2.png").write_bytes(encode(np.zeros((48, 48), np.uint8), "PNG"))
    (root / "test" / "happy").mkdir(parents=True)
    (root / "test" / "happy" / "PublicTest_1.png").write_bytes(encode(np.zeros((48, 48), np.uint8), "PNG"))
    refs = fer2013.enumerate_split(str(root), "folder", "train", features.EMOTIONS)
    assert sorted(r.image_id for r in refs) == ["Training_1-neutral", "Training_1-surprise", "Training_2"]


def test_the_real_kaggle_folder_has_two_repeated_file_names_made_unique(fer2013_root):
    refs = fer2013.enumerate_split(str(fer2013_root), "folder", "train", features.EMOTIONS)
    ids = [r.image_id for r in refs]
    assert len(ids) == len(set(ids)) == 28709
    assert {"Training_52789098-neutral", "Training_52789098-surprise",
            "Training_8475486-angry", "Training_8475486-surprise"} <= set(ids)
