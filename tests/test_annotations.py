"""Per-image annotations joined at ingestion, and the proxy bands every example carries."""
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from components.example_gen import annotations, fer2013
from pipeline import cli, features
from tests.conftest import make_folder_layout, real_images


def test_annotations_are_joined_by_image_id_with_unannotated_for_missing_rows(tmp_path):
    root = make_folder_layout(tmp_path / "data", {"train": 2, "test": 1})
    ids = sorted(p.stem for p in (root / "train" / "happy").iterdir())
    csv = tmp_path / "attributes.csv"
    csv.write_text(f"age_group,image_id,gender\n30-39,{ids[0]},female\n,{ids[1]},male\n")
    columns, _ = annotations.read(str(csv))
    assert columns == ("age_group", "gender")
    source = fer2013.detect_source(str(root))
    refs = fer2013.enumerate_split(source.input_base, "folder", "train", features.EMOTIONS, 0)
    found = {}
    for ref in refs:
        outcome = fer2013.to_outcome(ref, features.EMOTIONS, str(csv), columns)
        example = tf.train.Example.FromString(outcome.example).features.feature
        found[outcome.image_id] = {c: example[c].bytes_list.value[0].decode() for c in columns}
    assert found[ids[0]] == {"age_group": "30-39", "gender": "female"}
    assert found[ids[1]] == {"age_group": "unannotated", "gender": "male"}  # empty cell
    others = [v for k, v in found.items() if k not in ids[:2]]
    assert others and all(v == {"age_group": "unannotated", "gender": "unannotated"} for v in others)


def test_every_example_carries_brightness_and_contrast_bands():
    path = real_images("test", "sad", 1)[0]
    pixels = np.asarray(Image.open(path))
    example = tf.train.Example.FromString(
        fer2013.make_example(path.read_bytes(), "sad", "PublicTest", path.stem, pixels)).features.feature
    brightness = example[features.BRIGHTNESS_KEY].float_list.value[0]
    assert brightness == pytest.approx(pixels.mean() / 255, abs=1e-6)
    band = example[features.BRIGHTNESS_BAND_KEY].bytes_list.value[0].decode()
    assert band == features.band(brightness, features.BRIGHTNESS_BANDS)
    assert [features.band(v, features.BRIGHTNESS_BANDS) for v in (0.1, 0.45, 0.5, 0.56, 0.9)] == [
        "dark", "medium", "medium", "bright", "bright"]
    assert [features.band(v, features.CONTRAST_BANDS) for v in (0.0, 0.19, 0.3)] == [
        "low", "medium", "high"]


@pytest.mark.parametrize("content, message", [
    ("id,gender\nx,f\n", "no 'image_id' column"),
    ("image_id\nx\n", "no column besides 'image_id'"),
    ("image_id,label\nx,3\n", "column 'label' clashes with a feature"),
    ("image_id,skin tone\nx,3\n", "column name 'skin tone' must be letters"),
    ("image_id,gender\nx,f\ny,m\nx,m\n", "line 4: image_id 'x' appears twice"),
    ("image_id,gender\nx,f,extra\n", "line 2: 3 values, expected 2"),
    ("", "is empty"),
])
def test_bad_annotations_files_are_named_with_the_line(content, message, tmp_path):
    path = tmp_path / "a.csv"
    path.write_text(content)
    with pytest.raises(annotations.AnnotationError, match=message):
        annotations.read(str(path))


def test_cli_rejects_a_bad_annotations_file_in_one_line(tmp_path, capsys, fer2013_root):
    path = tmp_path / "a.csv"
    path.write_text("image_id,gender\nx,f\nx,m\n")
    code = cli.main(["validate", "--data", str(fer2013_root), "--output", str(tmp_path / "o"),
                     "--annotations", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and "line 3: image_id 'x' appears twice" in err
    assert len(err.strip().splitlines()) == 1
