"""The Transform `preprocessing_fn`: decode, convert to grayscale, 48x48, scale to [0, 1].

Deliberately light (no analyzers): the same graph is embedded in the exported
SavedModel, so `serving_default` (tf.Example) and `predict_image` (encoded
bytes of any size, grayscale or colour) both go through exactly these ops.
Augmentation and model-specific resizing are layers inside the Keras model.
"""
from typing import Any, Dict, Mapping

import tensorflow as tf

from pipeline import features


def decode_images(encoded: tf.Tensor) -> tf.Tensor:
    """[N] or [N, 1] encoded JPEG/PNG/BMP/GIF bytes -> float32 [N, 48, 48, 1] in [0, 1]."""
    size = features.IMAGE_SIZE

    def decode_one(data: tf.Tensor) -> tf.Tensor:
        # JPEG with the accurate IDCT, so pixels match what PIL/OpenCV decode.
        image = tf.cond(
            tf.io.is_jpeg(data),
            lambda: tf.io.decode_jpeg(data, channels=features.IMAGE_CHANNELS,
                                      dct_method="INTEGER_ACCURATE"),
            lambda: tf.io.decode_image(data, channels=features.IMAGE_CHANNELS,
                                       expand_animations=False))
        image = tf.image.resize(tf.cast(image, tf.float32), [size, size], antialias=True)
        return tf.clip_by_value(image / 255.0, 0.0, 1.0)

    return tf.map_fn(decode_one, tf.reshape(encoded, [-1]),
                     fn_output_signature=tf.TensorSpec([size, size, features.IMAGE_CHANNELS],
                                                       tf.float32))


def class_ids(label_names: tf.Tensor, classes) -> tf.Tensor:
    """Emotion names -> int64 index into `classes` (-1 for a name not in `classes`)."""
    names = tf.reshape(label_names, [-1, 1])
    matches = tf.equal(names, tf.constant(list(classes))[tf.newaxis, :])
    index = tf.argmax(tf.cast(matches, tf.int64), axis=1)
    return tf.where(tf.reduce_any(matches, axis=1), index, tf.constant(-1, tf.int64))


def preprocessing_fn(inputs: Mapping[str, tf.Tensor],
                     custom_config: Dict[str, Any]) -> Dict[str, tf.Tensor]:
    """tf.Transform entry point; custom_config['classes'] is the configured class list."""
    classes = custom_config.get("classes") or features.EMOTIONS
    return {
        features.PIXELS_KEY: decode_images(inputs[features.IMAGE_KEY]),
        features.CLASS_ID_KEY: class_ids(inputs[features.LABEL_NAME_KEY], classes),
        # Passed through so the Trainer can carve validation data out of train by id.
        features.IMAGE_ID_KEY: tf.reshape(inputs[features.IMAGE_ID_KEY], [-1]),
    }
