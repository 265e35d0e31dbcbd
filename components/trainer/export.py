"""Exports a trained Keras model with the Transform graph as a TF Serving SavedModel.

Signatures (names from pipeline.features):
  serving_default      serialized tf.Example [N] -> probabilities [N, C], label [N],
                       classes [N, C] (the class names, in the order of probabilities)
  predict_image        encoded JPEG/PNG/BMP/GIF bytes [N], any size, grayscale or
                       colour -> the same outputs
  predict_image_flip   as predict_image, each face and its mirror image; the answer is
                       their mean probability (test-time augmentation)
  predict_image_multiview  the same with the 8 views of model.TEST_TIME_VIEWS["multiview"]
                       (mirror x 4 zooms): the most accurate answer, 8 times the work
  predict_image_flip_when_unsure  as predict_image_flip for each face whose top
                       predict_image probability is under a threshold fitted on the
                       validation carve-out (`fitted_unsure_threshold`), as predict_image
                       for the others: the mirror image is asked only where it may matter
  transform_features   serialized tf.Example [N] -> transformed features (for TFMA)

Both prediction signatures call the same Transform layer and the same model,
so they agree for the same image. Keras 3 refuses `model.save(signatures=...)`,
hence the tf.Module wrapper.

With a prior correction (`TrainingConfig.prior_correction` > 0) the signatures return
the network's probabilities divided by the training class prior to that power and
renormalised (`recipe.prior_log_bias`), and `assets.extra/prior_correction.json` records
the strength, the training class counts and the bias
(`features.PRIOR_CORRECTION_ASSET`). With a calibration temperature T other than 1
(`TrainingConfig.calibration_temperature`) those logits are then divided by T
(temperature scaling: the label never changes) and `assets.extra/calibration.json` records T
(`features.CALIBRATION_ASSET`). Both follow one rule, `features.OUTPUT_RULE`; without
either the signatures return the network's own probabilities.

The network is exported as `model.fold_batch_norm` makes it: each BatchNormalization right
after a convolution or dense layer folded into that layer's weights (the same probabilities
to float rounding, fewer operations per face; the folded-away vectors stay in the SavedModel,
so `saved_weights` gives the trainable network back, to float rounding).

The export also carries TF Serving warm-up requests
(`assets.extra/tf_serving_warmup_requests`): TF Serving replays them when it
loads a version, so the first user request does not pay for graph tracing.
"""
import io
import json
import os
from typing import Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from PIL import Image
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from components.trainer.model import TEST_TIME_VIEWS, View, fold_batch_norm, served_probabilities, view_of
from pipeline import features

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
WARMUP_BATCH_SIZES = (1, 8, 64)


class ServingModule(tf.Module):
    """The model, the Transform layer and the class names, with the signatures."""

    def __init__(self, model: keras.Model, tf_transform_output: tft.TFTransformOutput,
                 classes: Sequence[str], class_log_bias: Optional[np.ndarray] = None,
                 temperature: float = 1.0, unsure_below: float = 1.0):
        super().__init__(name="fer_serving")
        self.unsure_below = tf.constant(unsure_below, tf.float32)
        self.model = model
        self.class_log_bias = None if class_log_bias is None else tf.constant(
            np.asarray(class_log_bias, np.float32).reshape(len(classes)))
        self.temperature = float(temperature)
        self.tft_layer = tf_transform_output.transform_features_layer()
        self.class_names = tf.constant(list(classes))
        raw_spec = tf_transform_output.raw_feature_spec()
        self._raw_spec = raw_spec
        self._image_spec = {features.IMAGE_KEY: raw_spec[features.IMAGE_KEY]}

    def _served(self, pixels):
        return served_probabilities(self.model(pixels, training=False), self.class_log_bias,
                                    self.temperature)

    def _predict(self, raw_features, views=(View(),)):
        """The outputs for each face; with several test-time `views` (`model.view_of` on the
        48x48 pixels the network sees, all in one batch), their mean served probability."""
        pixels = self.tft_layer(raw_features)[features.PIXELS_KEY]
        seen = tf.concat([view_of(pixels, view, take=tf.gather) for view in views], axis=0)
        probabilities = tf.reduce_mean(
            tf.reshape(self._served(seen), [len(views), -1, self.class_names.shape[0]]), axis=0)
        return self._outputs(probabilities)

    def _predict_flip_when_unsure(self, raw_features):
        """As `_predict` with the "flip" views for the faces whose top one-view probability is
        under `unsure_below`, with one view for the others; the network sees the mirror
        images of those faces only (none at all when every face is sure)."""
        pixels = self.tft_layer(raw_features)[features.PIXELS_KEY]
        one_view = self._served(pixels)
        unsure = tf.where(tf.reduce_max(one_view, axis=-1) < self.unsure_below)[:, 0]

        def with_mirror_images():
            mirrored = self._served(view_of(tf.gather(pixels, unsure), View(mirror=True), take=tf.gather))
            return tf.tensor_scatter_nd_update(one_view, unsure[:, None],
                                               (tf.gather(one_view, unsure) + mirrored) / 2)

        return self._outputs(tf.cond(tf.size(unsure) > 0, with_mirror_images, lambda: one_view))

    def _outputs(self, probabilities):
        labels = tf.gather(self.class_names, tf.argmax(probabilities, axis=-1))
        classes = tf.broadcast_to(self.class_names, tf.shape(probabilities))
        return {features.PROBABILITIES_OUTPUT: probabilities, features.LABEL_OUTPUT: labels,
                features.CLASSES_OUTPUT: classes}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=features.EXAMPLES_INPUT)])
    def serve_examples(self, examples):
        return self._predict(tf.io.parse_example(examples, self._image_spec))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=features.IMAGES_INPUT)])
    def predict_image(self, images):
        return self._predict({features.IMAGE_KEY: tf.reshape(images, [-1, 1])})

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=features.IMAGES_INPUT)])
    def predict_image_flip_when_unsure(self, images):
        return self._predict_flip_when_unsure({features.IMAGE_KEY: tf.reshape(images, [-1, 1])})

    def _views_function(self, views):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=features.IMAGES_INPUT)])
        def predict_image_views(images):
            return self._predict({features.IMAGE_KEY: tf.reshape(images, [-1, 1])}, views)
        return predict_image_views

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=features.EXAMPLES_INPUT)])
    def transform_features(self, examples):
        return self.tft_layer(tf.io.parse_example(examples, self._raw_spec))

    def signatures(self):
        return {
            features.SERVING_DEFAULT_SIGNATURE: self.serve_examples.get_concrete_function(),
            features.PREDICT_IMAGE_SIGNATURE: self.predict_image.get_concrete_function(),
            **{features.views_signature(name): self._views_function(views).get_concrete_function()
               for name, views in TEST_TIME_VIEWS.items()},
            features.FLIP_WHEN_UNSURE_SIGNATURE: self.predict_image_flip_when_unsure.get_concrete_function(),
            features.TRANSFORM_FEATURES_SIGNATURE: self.transform_features.get_concrete_function(),
        }


def validation_probabilities(model: keras.Model, validation: tf.data.Dataset) -> Tuple[np.ndarray, ...]:
    """(true class ids [N], the network's probabilities [N, C] for each face and [N, C] for its
    mirror image) on `validation`, batches of (pixels, one-hot labels): what the export's fits
    (the calibration temperature, `fitted_unsure_threshold`) are made on, in one pass."""
    truth, one_view, mirrored = [], [], []
    for pixels, labels in validation:
        one_view.append(np.asarray(model(pixels, training=False)))
        mirrored.append(np.asarray(model(view_of(pixels, View(mirror=True), take=tf.gather), training=False)))
        truth.append(np.argmax(np.asarray(labels), axis=-1))
    if not truth:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    return np.concatenate(truth), np.concatenate(one_view), np.concatenate(mirrored)


# The thresholds `unsure_threshold` tries, lowest first: a face is asked again mirrored
# when its top one-view probability is under the threshold (1.0: nearly every face).
UNSURE_THRESHOLDS = tuple(round(0.3 + 0.05 * i, 2) for i in range(15))
# How much validation accuracy the flip-when-unsure rule may give up against flipping
# every face: 0.1 points.
UNSURE_TOLERANCE = 0.001


def unsure_threshold(truth: np.ndarray, one_view: np.ndarray, mirrored: np.ndarray,
                     tolerance: float = UNSURE_TOLERANCE) -> dict:
    """The lowest of UNSURE_THRESHOLDS at which answering a face with the mean of its and its
    mirror image's served probabilities [N, C] when its top one-view probability is under
    the threshold (and with the one view otherwise) is at most `tolerance` less accurate
    than answering every face so. The record written beside the export: {"threshold",
    "faces", "accuracy": {"one_view", "flip", "flip_when_unsure"}, "flipped_fraction"}."""
    both = (one_view + mirrored) / 2
    accuracy = lambda probabilities: float(np.mean(np.argmax(probabilities, axis=-1) == truth))
    flip = accuracy(both)
    for threshold in UNSURE_THRESHOLDS:
        unsure = np.max(one_view, axis=-1) < threshold
        answered = accuracy(np.where(unsure[:, None], both, one_view))
        if answered >= flip - tolerance:
            break
    return {"threshold": threshold, "faces": int(len(truth)),
            "accuracy": {"one_view": round(accuracy(one_view), 4), "flip": round(flip, 4),
                         "flip_when_unsure": round(answered, 4)},
            "flipped_fraction": round(float(np.mean(unsure)), 4)}


def fitted_unsure_threshold(truth: np.ndarray, one_view: np.ndarray, mirrored: np.ndarray,
                            log_bias: np.ndarray, temperature: float) -> dict:
    """`unsure_threshold` on the network's probabilities of faces and of their mirror images
    (`validation_probabilities`) through the served rule (prior correction and calibration
    temperature) as the export applies it."""
    if not len(truth):
        return {"threshold": 1.0, "faces": 0, "fitted_on": "no validation faces: every face under 1.0 is asked again"}
    served = (np.asarray(served_probabilities(p, log_bias, temperature)) for p in (one_view, mirrored))
    return unsure_threshold(truth, *served)


def export_serving_model(model: keras.Model, tf_transform_output: tft.TFTransformOutput,
                         classes: Sequence[str], export_dir: str, prior_correction: float = 0.0,
                         class_counts: Optional[Sequence[int]] = None,
                         calibration_temperature: float = 1.0, fitted_on: str = "",
                         ensemble: Optional[dict] = None, unsure: Optional[dict] = None) -> str:
    """Writes the SavedModel to `export_dir` and returns it. `prior_correction` > 0 needs
    the training data's `class_counts` (in the order of `classes`); `fitted_on` says where
    the calibration temperature was fitted (recorded beside it); `ensemble`, the record of
    an ensemble network's members (`ensemble.description`), is written beside it too;
    `unsure`, `unsure_threshold`'s record, sets `predict_image_flip_when_unsure`'s threshold
    (without it 1.0: nearly every face is asked again mirrored)."""
    from components.trainer.recipe import prior_log_bias

    bias = None
    if prior_correction > 0:
        if class_counts is None or len(class_counts) != len(classes):
            raise ValueError(f"prior_correction {prior_correction}: needs the training count of "
                             f"each of the {len(classes)} classes, got {class_counts}")
        bias = prior_log_bias(class_counts, prior_correction)
    if calibration_temperature <= 0:
        raise ValueError(f"calibration_temperature must be > 0, got {calibration_temperature}")
    unsure = unsure or {"threshold": 1.0, "fitted_on": "not fitted: every face under 1.0 is asked again"}
    module = ServingModule(fold_batch_norm(model), tf_transform_output, classes, bias, calibration_temperature,
                           unsure["threshold"])
    tf.saved_model.save(module, export_dir, signatures=module.signatures())
    write_warmup_requests(export_dir)
    _write_asset(export_dir, features.FLIP_WHEN_UNSURE_ASSET, unsure)
    if bias is not None:
        _write_asset(export_dir, features.PRIOR_CORRECTION_ASSET, {
            "strength": prior_correction,
            "train_counts": {c: int(n) for c, n in zip(classes, class_counts)},
            "log_bias": {c: round(float(b), 4) for c, b in zip(classes, bias)},
            "rule": features.OUTPUT_RULE})
    if ensemble:
        _write_asset(export_dir, features.ENSEMBLE_ASSET, ensemble)
    if calibration_temperature != 1.0:
        _write_asset(export_dir, features.CALIBRATION_ASSET, dict(
            {"temperature": calibration_temperature, "rule": features.OUTPUT_RULE},
            **({"fitted_on": fitted_on} if fitted_on else {})))
    return export_dir


def _write_asset(export_dir: str, asset: str, content: dict) -> None:
    with tf.io.gfile.GFile(os.path.join(export_dir, asset), "w") as f:
        f.write(json.dumps(content, indent=1))


def _read_asset(model_dir: str, asset: str) -> Optional[dict]:
    path = os.path.join(model_dir, asset)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def read_prior_correction(model_dir: str) -> Optional[dict]:
    """What `export_serving_model` recorded of the prior correction of the SavedModel in
    `model_dir` (strength, train_counts, log_bias per class), or None without one."""
    return _read_asset(model_dir, features.PRIOR_CORRECTION_ASSET)


def read_calibration_temperature(model_dir: str) -> float:
    """The calibration temperature the SavedModel in `model_dir` was exported with (1.0
    without `features.CALIBRATION_ASSET`)."""
    return float((_read_asset(model_dir, features.CALIBRATION_ASSET) or {}).get("temperature", 1.0))


def read_flip_when_unsure(model_dir: str) -> Optional[dict]:
    """The threshold record of `predict_image_flip_when_unsure` in `model_dir` (None for a
    model exported before that signature)."""
    return _read_asset(model_dir, features.FLIP_WHEN_UNSURE_ASSET)


def read_ensemble(model_dir: str) -> Optional[dict]:
    """The members an ensemble SavedModel in `model_dir` was exported with (None for one network)."""
    return _read_asset(model_dir, features.ENSEMBLE_ASSET)


def _warmup_images(n: int) -> list:
    """Synthetic, face-free images (no user data in the model): a 48x48 grayscale PNG
    gradient and a 96x96 colour JPEG, so both decode paths and the resize are traced."""
    ramp = np.tile(np.linspace(0, 255, 48, dtype=np.uint8), (48, 1))
    colour = np.stack([np.tile(np.linspace(0, 255, 96, dtype=np.uint8), (96, 1))] * 3, axis=-1)
    encoded = []
    for array, fmt in ((ramp, "PNG"), (colour, "JPEG")):
        out = io.BytesIO()
        Image.fromarray(array).save(out, format=fmt)
        encoded.append(out.getvalue())
    return [encoded[i % 2] for i in range(n)]


def warmup_requests() -> list:
    """PredictionLogs: predict_image at each of WARMUP_BATCH_SIZES, serving_default at 1 and
    each test-time-view signature (flip_when_unsure too) at 1."""
    logs = []
    for signature, batch in ([(features.PREDICT_IMAGE_SIGNATURE, n) for n in WARMUP_BATCH_SIZES]
                             + [(features.SERVING_DEFAULT_SIGNATURE, 1)]
                             + [(features.views_signature(name), 1) for name in TEST_TIME_VIEWS]
                             + [(features.FLIP_WHEN_UNSURE_SIGNATURE, 1)]):
        images = _warmup_images(batch)
        if signature == features.SERVING_DEFAULT_SIGNATURE:
            values = [tf.train.Example(features=tf.train.Features(feature={
                features.IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[image]))
            })).SerializeToString() for image in images]
            name = features.EXAMPLES_INPUT
        else:
            values, name = images, features.IMAGES_INPUT
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(signature_name=signature))
        request.inputs[name].CopyFrom(tf.make_tensor_proto(values, dtype=tf.string))
        logs.append(prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)))
    return logs


def write_warmup_requests(export_dir: str) -> str:
    path = os.path.join(export_dir, WARMUP_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for log in warmup_requests():
            writer.write(log.SerializeToString())
    return path
