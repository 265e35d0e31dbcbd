"""tf.data input for the Trainer: transformed examples -> (pixels, one-hot label) batches.

Validation data is carved out of the train split deterministically: an example
is held out when the MD5 of its `image_id` and emotion falls in the first
`validation_fraction` of 1000 buckets (`features.in_carve_out`: the same faces the
standalone trainer holds out, so its weights can be warm-started, fine-tuned and
calibrated here without validating on faces they were trained on). The eval split (PublicTest) is never
used for training decisions inside the Trainer: it is the Evaluator's.

Class imbalance: the class counts of the training examples (the carve-out
excluded) are measured in one pass; the trainer then weights the loss by
`class_weights` or draws every class equally often (`oversample`).

Order: given an `EpochNumber` (a callback), each epoch's order of the training examples
is drawn from the seed and the epoch number alone, so a training resumed at epoch k
from its checkpoint sees the order an uninterrupted one would have had at epoch k, not
the first epochs' orders again.
"""
from typing import List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from components.trainer import recipe
from pipeline import features

_HELD_OUT = "_held_out"   # the carve-out flag, computed once per example and cached
_SEEDS_PER_EPOCH = 1_000_003   # a prime: (seed, epoch) pairs give distinct shuffle seeds


class EpochNumber(recipe.ByEpoch):
    """Holds the number of the epoch under way (Keras counts it across a resumption,
    `recipe.fit` across the phases of a fine-tuning) in the variable that
    `make_datasets(..., epoch=)` draws each epoch's order from."""

    def __init__(self):
        super().__init__()
        with tf.device("/CPU:0"):   # read by the input pipeline, which runs on the host
            self.variable = tf.Variable(0, dtype=tf.int64, trainable=False, name="data_epoch")

    def begin(self, epoch: int) -> None:
        self.variable.assign(epoch)


def is_validation(image_id: tf.Tensor, class_id: tf.Tensor, classes: Sequence[str],
                  validation_fraction: float) -> tf.Tensor:
    """Whether one example (its scalar id and class id, an index into `classes`) belongs
    to the validation carve-out: `features.in_carve_out`, the standalone trainer's faces."""
    def flag(image_id: bytes, class_id: np.int64) -> bool:
        emotion = classes[class_id] if 0 <= class_id < len(classes) else "unknown"
        key = features.carve_out_key(image_id.decode("utf-8"), emotion)
        return np.bool_(features.in_carve_out([key], validation_fraction)[0])

    held_out = tf.numpy_function(flag, [image_id, class_id], tf.bool, stateful=False)
    return tf.ensure_shape(held_out, [])


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


def _oversampled(examples: tf.data.Dataset, counts: np.ndarray, seed) -> tf.data.Dataset:
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


def training_order(examples: tf.data.Dataset, counts: np.ndarray, seed: int, imbalance: str,
                   epoch: Optional[tf.Variable] = None) -> tf.data.Dataset:
    """The training examples shuffled (imbalance='oversample': every class drawn equally
    often) in a new order each epoch: drawn from `seed` and the value of `epoch` when an
    epoch starts iterating, or, without `epoch`, from tf.data's reshuffling, which starts
    from the seed again in every new process."""
    def ordered(seed):
        if imbalance == "oversample":
            return _oversampled(examples, counts, seed)
        return examples.shuffle(20000, seed=seed, reshuffle_each_iteration=epoch is None)

    if epoch is None:
        return ordered(seed)
    # The function runs, and reads the variable, each time an iterator is made: once an epoch.
    by_epoch = tf.data.Dataset.from_tensors(0).flat_map(
        lambda _: ordered(tf.constant(seed, tf.int64) * _SEEDS_PER_EPOCH + epoch))
    # flat_map hides the size, which Keras uses for the epoch's length and progress.
    return by_epoch.apply(tf.data.experimental.assert_cardinality(int(np.sum(counts))))


def make_datasets(file_pattern: List[str], tf_transform_output: tft.TFTransformOutput,
                  classes: Sequence[str], batch_size: int, validation_fraction: float,
                  seed: int = 42, imbalance: str = "none", epoch: Optional[tf.Variable] = None
                  ) -> Tuple[tf.data.Dataset, tf.data.Dataset, np.ndarray]:
    """(train, validation, train class counts): datasets of (pixels [B,48,48,1], one-hot
    labels [B,C]). imbalance='oversample' draws every class of train equally often;
    `epoch` (`EpochNumber().variable`, updated by that callback during the fit): see
    `training_order`."""
    num_classes = len(classes)

    def flagged(example):
        return {**example, _HELD_OUT: is_validation(example[features.IMAGE_ID_KEY],
                                                     example[features.CLASS_ID_KEY], classes,
                                                     validation_fraction)}

    parsed = _parsed(file_pattern, tf_transform_output).map(flagged).cache()

    def to_xy(example):
        return (example[features.PIXELS_KEY],
                tf.one_hot(example[features.CLASS_ID_KEY], num_classes))

    train_examples = parsed.filter(lambda e: tf.logical_not(e[_HELD_OUT]))
    counts = class_counts(train_examples, num_classes)
    train_examples = training_order(train_examples, counts, seed, imbalance, epoch)
    train = train_examples.map(to_xy).batch(batch_size).prefetch(tf.data.AUTOTUNE)
    validation = parsed.filter(lambda e: e[_HELD_OUT]).map(to_xy).batch(256).prefetch(tf.data.AUTOTUNE)
    return train, validation, counts
