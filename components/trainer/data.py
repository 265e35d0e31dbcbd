"""tf.data input for the Trainer: transformed examples -> (pixels, one-hot label) batches.

Validation data is carved out of the train split deterministically: an example
is held out when a fingerprint of its `image_id` falls in the first
`validation_fraction` of 1000 buckets. The eval split (PublicTest) is never
used for training decisions inside the Trainer: it is the Evaluator's.

Class imbalance: the class counts of the training examples (the carve-out
excluded) are measured in one pass; the trainer then weights the loss by
`class_weights` or draws every class equally often (`oversample`).
"""
from typing import List, Tuple

import numpy as np
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


def class_counts(examples: tf.data.Dataset, num_classes: int) -> np.ndarray:
    """Number of examples per class id in a dataset of parsed transformed examples."""
    return examples.map(
        lambda e: tf.one_hot(e[features.CLASS_ID_KEY], num_classes, dtype=tf.int64)
    ).reduce(tf.zeros([num_classes], tf.int64), lambda total, x: total + x).numpy()


def _oversampled(examples: tf.data.Dataset, counts: np.ndarray, seed: int) -> tf.data.Dataset:
    """Every present class drawn equally often; an epoch has as many examples as the data."""
    present = [c for c, n in enumerate(counts) if n > 0]
    if not present:
        raise ValueError("no training examples to oversample (the train split is empty after "
                         "the validation carve-out)")
    streams = [examples.filter(lambda e, c=c: tf.equal(e[features.CLASS_ID_KEY], c))
               .shuffle(int(min(counts[c], 2000)), seed=seed + c).repeat()
               for c in present]
    return tf.data.Dataset.sample_from_datasets(
        streams, weights=[1.0 / len(present)] * len(present), seed=seed).take(int(counts.sum()))


def make_datasets(file_pattern: List[str], tf_transform_output: tft.TFTransformOutput,
                  num_classes: int, batch_size: int, validation_fraction: float,
                  seed: int = 42, imbalance: str = "none"
                  ) -> Tuple[tf.data.Dataset, tf.data.Dataset, np.ndarray]:
    """(train, validation, train class counts): datasets of (pixels [B,48,48,1], one-hot
    labels [B,C]). imbalance='oversample' draws every class of train equally often."""
    parsed = _parsed(file_pattern, tf_transform_output).cache()

    def to_xy(example):
        return (example[features.PIXELS_KEY],
                tf.one_hot(example[features.CLASS_ID_KEY], num_classes))

    def held_out(example):
        return is_validation(example[features.IMAGE_ID_KEY], validation_fraction)

    train_examples = parsed.filter(lambda e: tf.logical_not(held_out(e)))
    counts = class_counts(train_examples, num_classes)
    if imbalance == "oversample":
        train_examples = _oversampled(train_examples, counts, seed)
    else:
        train_examples = train_examples.shuffle(20000, seed=seed, reshuffle_each_iteration=True)
    train = train_examples.map(to_xy).batch(batch_size).prefetch(tf.data.AUTOTUNE)
    validation = parsed.filter(held_out).map(to_xy).batch(256).prefetch(tf.data.AUTOTUNE)
    return train, validation, counts
