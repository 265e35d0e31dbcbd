"""The Transform preprocessing_fn, run through tf.Transform on real FER2013 rows."""
import functools

import numpy as np
import tensorflow as tf
import tensorflow_data_validation as tfdv
import tensorflow_transform.beam as tft_beam
from PIL import Image
from tensorflow_transform.tf_metadata import dataset_metadata

from components.transform import preprocessing
from pipeline import features
from pipeline.run import SCHEMA_FILE
from tests.conftest import encode, real_images


def transform(rows, classes, tmp_path):
    schema = tfdv.load_schema_text(SCHEMA_FILE)
    metadata = dataset_metadata.DatasetMetadata(schema)
    fn = functools.partial(preprocessing.preprocessing_fn, custom_config={"classes": list(classes)})
    with tft_beam.Context(temp_dir=str(tmp_path)):
        (transformed, _), _ = ((rows, metadata) | tft_beam.AnalyzeAndTransformDataset(fn))
    return transformed


def row(image: bytes, emotion: str, image_id: str):
    return {features.IMAGE_KEY: [image], features.LABEL_KEY: [features.EMOTIONS.index(emotion)],
            features.LABEL_NAME_KEY: [emotion.encode()], features.SOURCE_SPLIT_KEY: [b"Training"],
            features.IMAGE_ID_KEY: [image_id.encode()], features.BRIGHTNESS_KEY: [0.5],
            features.CONTRAST_KEY: [0.2], features.BRIGHTNESS_BAND_KEY: [b"medium"],
            features.CONTRAST_BAND_KEY: [b"medium"]}


def test_real_jpegs_are_decoded_exactly_and_labels_follow_classes(tmp_path):
    paths = {e: real_images("train", e, 1)[0] for e in ("happy", "sad", "neutral", "angry")}
    rows = [row(p.read_bytes(), e, p.stem) for e, p in paths.items()]
    out = transform(rows, features.EMOTIONS, tmp_path / "all")
    assert [o[features.CLASS_ID_KEY] for o in out] == [3, 4, 6, 0]
    for o, path in zip(out, paths.values()):
        pixels = np.asarray(o[features.PIXELS_KEY], np.float32).reshape(48, 48)
        expected = np.asarray(Image.open(path), np.float32) / 255.0
        assert np.abs(pixels - expected).max() < 1e-5
        assert o[features.IMAGE_ID_KEY] == path.stem.encode()
    subset = transform(rows, ("happy", "sad", "neutral"), tmp_path / "subset")
    assert [o[features.CLASS_ID_KEY] for o in subset] == [0, 1, 2, -1]


def test_colour_png_of_another_size_becomes_48x48_gray(tmp_path):
    face = Image.open(real_images("test", "surprise", 1)[0])
    big = np.asarray(face.resize((96, 96), Image.Resampling.NEAREST).convert("RGB"))
    out = transform([row(encode(big, "PNG"), "surprise", "big")], features.EMOTIONS, tmp_path)
    pixels = np.asarray(out[0][features.PIXELS_KEY], np.float32).reshape(48, 48)
    assert np.abs(pixels - np.asarray(face, np.float32) / 255.0).mean() < 0.02
    assert 0.0 <= pixels.min() and pixels.max() <= 1.0


def test_decode_images_handles_a_batch_of_mixed_formats():
    face = np.asarray(Image.open(real_images("train", "fear", 1)[0]))
    batch = tf.constant([encode(face, "JPEG"), encode(face, "PNG"),
                         encode(np.stack([face] * 3, -1), "PNG")])
    decoded = preprocessing.decode_images(batch).numpy()
    assert decoded.shape == (3, 48, 48, 1)
    np.testing.assert_allclose(decoded[1], decoded[2], atol=1 / 255)
