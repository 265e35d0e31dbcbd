"""tf.data input for the Trainer: transformed examples -> (pixels, one-hot label) batches.

Validation data is carved out of the train split deterministically: an example
is held out when a fingerprint of its `image_id` falls in the first
`validation_fraction` of 1000 buckets. The eval split (PublicTest) is never
used for training decisions inside the Trainer: it is the Evaluator's.
"""
from typing import List, Tuple

import tensorflow as tf
import tensorflow_transform as tft

from pipeline import features

_BUCKETS = 1000


def is_validation(image_ids: tf.Tensor, validation_fraction: float) -> tf.Tensor:
    """Boolean mask: which examples belong to the validation carve-out."""
    bucket = tf.strings.to_hash_bucket_fast(image_ids, _BUCKETS)
    return bucket < int(round(validation_fraction * _BUCKETS))


def _parsed(file_patterns: List[str], tf_transform_output: tft.TFTransformOutput) -> tf.data.Dataset:
    files = [f for pattern in file_patterns for f in tf.io.gfile.glob(pattern)]
    spec = tf_transform_output.transformed_feature_spec()
    return (tf.data.TFRecordDataset(files, compression_type="GZIP")
            .map(lambda record: tf.io.parse_single_example(record, spec),
                 num_parallel_calls=tf.data.AUTOTUNE))


def make_datasets(file_pattern: List[str], tf_transform_output: tft.TFTransformOutput,
                  num_classes: int, batch_size: int, validation_fraction: float,
                  seed: int = 42) -> Tuple[tf.data.Dataset, tf.data.Dataset]:
    """(train, validation) datasets of (pixels [B,48,48,1], one-hot labels [B,C])."""
    parsed = _parsed(file_pattern, tf_transform_output).cache()

    def to_xy(example):
        return (example[features.PIXELS_KEY],
                tf.one_hot(example[features.CLASS_ID_KEY], num_classes))

    def held_out(example):
        return is_validation(example[features.IMAGE_ID_KEY], validation_fraction)

    train = (parsed.filter(lambda e: tf.logical_not(held_out(e)))
             .shuffle(20000, seed=seed, reshuffle_each_iteration=True)
             .map(to_xy).batch(batch_size).prefetch(tf.data.AUTOTUNE))
    validation = parsed.filter(held_out).map(to_xy).batch(256).prefetch(tf.data.AUTOTUNE)
    return train, validation
