"""Model builders in pure Keras 3 (keras.layers and keras.ops): they run on TensorFlow inside
TFX and on JAX on a GPU machine outside it.

Models: `dcnn` (the seed notebook's), `vggnet` (the strong one), `resnet18` (a
ResNet-18 layout at half width that trains fast on a CPU), `compact` and
`compact_resnet` (for CPU serving),
`vgg16` and `resnet50` (keras.applications transfer models). Every builder takes
`(input_shape, num_classes)` and returns an uncompiled
`keras.Model` from a [48, 48, 1] float image in [0, 1] to class probabilities:
the network that is exported for serving. `with_augmentation` wraps it in the
training model, whose augmentation layer runs on the accelerator during fit
(and is not part of the export: it holds random-seed state that a serving
graph must not capture).
"""
import dataclasses
import logging
import math
import os
from typing import Callable, Dict, NamedTuple, Optional, Sequence, Tuple

import keras
import numpy as np
from keras import layers, ops

from pipeline import config, features

logger = logging.getLogger(__name__)

INPUT_SHAPE: Tuple[int, int, int] = (features.IMAGE_SIZE, features.IMAGE_SIZE,
                                     features.IMAGE_CHANNELS)


AUGMENTATION = dict(flip=True, rotation=0.05, shift=0.1, zoom=0.1)
# Random erasing's rectangle (`RandomErasing`): its share of the face and height / width.
ERASING = dict(area=(0.02, 0.4), aspect=(0.3, 3.3))
# Camera distortions (`RandomCamera`): the least exposure and contrast factor, the most
# noise (sigma, of the [0, 1] grey range: 24 grey levels) and the most blur (weight of a
# 3x3 binomial blur, applied twice).
CAMERA = dict(exposure=0.35, contrast=0.35, noise=24 / 255, blur=1.0)


@keras.saving.register_keras_serializable(package="fer")
class RandomFaceTransform(layers.Layer):
    """Training-time augmentation of a batch of [H, W, C] images: a random horizontal flip,
    rotation (up to `rotation` of a full turn), shift (up to `shift` of the side) and zoom
    (1 +- `zoom`), drawn independently per face and applied as one affine map with
    bilinear sampling; outside the face, the nearest edge pixel ('nearest' fill). The
    identity at inference.

    Pure keras.ops: one gather per corner of a flattened batch, on any backend (not yet
    timed on a GPU). The Keras RandomFlip, RandomRotation, RandomTranslation
    and RandomZoom layers it replaces (three resamplings through
    jax.scipy.ndimage.map_coordinates under JAX) added 0.5 s to a 3 ms DCNN training step
    at batch 64 on an H100 (keras 3.15, jax 0.11)."""

    # Part of the checkpoint key (recipe.training_dir): change it when the meaning of the
    # random draws changes, so that a resumed training does not reinterpret them.
    VERSION = 1

    def __init__(self, flip: bool = AUGMENTATION["flip"], rotation: float = AUGMENTATION["rotation"],
                 shift: float = AUGMENTATION["shift"], zoom: float = AUGMENTATION["zoom"],
                 seed: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        if not (0 <= rotation <= 0.5 and 0 <= shift < 1 and 0 <= zoom < 1):
            raise ValueError(f"rotation must be in [0, 0.5] and shift, zoom in [0, 1), got "
                             f"rotation={rotation}, shift={shift}, zoom={zoom}")
        self.flip, self.rotation, self.shift, self.zoom, self.seed = flip, rotation, shift, zoom, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def draw(self, batch_size):
        """[batch, 5] uniform(-1, 1) draws: flip (< 0 flips), angle, shift x, shift y, zoom."""
        return keras.random.uniform((batch_size, 5), -1.0, 1.0, seed=self.seed_generator)

    def call(self, images, training=None):
        if not training:
            return images
        return self.transform(images, self.draw(ops.shape(images)[0]))

    def transform(self, images, draws):
        """`images` moved by the transforms that `draws` (see `draw`) stand for. Integer
        images come back as float32 (interpolated values are not whole numbers)."""
        if not keras.backend.standardize_dtype(images.dtype).startswith(("float", "bfloat")):
            images = ops.cast(images, "float32")
        height, width, channels = images.shape[1:]
        draws = ops.cast(draws, "float32")
        flip = ops.where(draws[:, 0:1] < 0, -1.0, 1.0) if self.flip else 1.0
        angle = draws[:, 1:2] * (self.rotation * 2 * math.pi)
        zoom = 1.0 + draws[:, 4:5] * self.zoom
        shift_x, shift_y = draws[:, 2:3] * (self.shift * width), draws[:, 3:4] * (self.shift * height)
        # Each output pixel's place in the source face, about the centre: flip, rotate,
        # zoom, shift. [1, H*W] grids against [batch, 1] parameters give [batch, H*W].
        centre_x, centre_y = (width - 1) / 2, (height - 1) / 2
        rows, cols = ops.meshgrid(ops.arange(height, dtype="float32"), ops.arange(width, dtype="float32"),
                                  indexing="ij")
        x = (ops.reshape(cols, (1, -1)) - centre_x) * flip
        y = ops.reshape(rows, (1, -1)) - centre_y
        cos, sin = ops.cos(angle), ops.sin(angle)
        source_x = ops.clip((cos * x - sin * y) * zoom + shift_x + centre_x, 0.0, width - 1.0)
        source_y = ops.clip((sin * x + cos * y) * zoom + shift_y + centre_y, 0.0, height - 1.0)
        x0, y0 = ops.floor(source_x), ops.floor(source_y)
        x1, y1 = ops.minimum(x0 + 1, width - 1.0), ops.minimum(y0 + 1, height - 1.0)
        weight_x = ops.expand_dims(ops.cast(source_x - x0, images.dtype), -1)
        weight_y = ops.expand_dims(ops.cast(source_y - y0, images.dtype), -1)
        flat = ops.reshape(images, (-1, height * width, channels))

        def pixels(row, col):
            index = ops.cast(row * width + col, "int32")
            return ops.take_along_axis(flat, ops.repeat(ops.expand_dims(index, -1), channels, axis=-1),
                                       axis=1)

        top = pixels(y0, x0) * (1 - weight_x) + pixels(y0, x1) * weight_x
        bottom = pixels(y1, x0) * (1 - weight_x) + pixels(y1, x1) * weight_x
        return ops.reshape(top * (1 - weight_y) + bottom * weight_y, (-1, height, width, channels))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "flip": self.flip, "rotation": self.rotation,
                "shift": self.shift, "zoom": self.zoom, "seed": self.seed}


@keras.saving.register_keras_serializable(package="fer")
class RandomErasing(layers.Layer):
    """Random erasing (Zhong et al., AAAI 2020), after the affine transform: with probability
    `probability`, one rectangle of each training face is filled with a single random grey
    level in [0, 1]. The rectangle covers a fraction of the face drawn uniformly from `area`,
    at an aspect ratio (height / width) drawn log-uniformly from `aspect`, at a uniformly
    drawn place inside the face. It hides an eye, a mouth or a cheek, so the network cannot
    lean on one region. The identity at inference. Pure keras.ops (a mask, no gathers)."""

    # Part of the checkpoint key, as RandomFaceTransform.VERSION.
    VERSION = 1

    def __init__(self, probability: float = 0.5, area: Sequence[float] = ERASING["area"],
                 aspect: Sequence[float] = ERASING["aspect"], seed: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        area, aspect = tuple(float(a) for a in area), tuple(float(a) for a in aspect)
        if not (0 <= probability <= 1 and len(area) == 2 and 0 < area[0] <= area[1] <= 1
                and len(aspect) == 2 and 0 < aspect[0] <= aspect[1]):
            raise ValueError(f"probability must be in [0, 1], area a range inside (0, 1] and aspect a "
                             f"positive range, got probability={probability}, area={area}, "
                             f"aspect={aspect}")
        self.probability, self.area, self.aspect, self.seed = probability, area, aspect, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def draw(self, batch_size):
        """[batch, 6] uniform [0, 1) draws: erase (< probability), area, aspect, top, left, grey."""
        return keras.random.uniform((batch_size, 6), 0.0, 1.0, seed=self.seed_generator)

    def call(self, images, training=None):
        if not training or self.probability == 0:
            return images
        return self.erase(images, self.draw(ops.shape(images)[0]))

    def erase(self, images, draws):
        """`images` with the rectangles that `draws` (see `draw`) stand for filled in."""
        height, width = images.shape[1:3]
        draws = ops.cast(draws, "float32")
        area = (self.area[0] + draws[:, 1:2] * (self.area[1] - self.area[0])) * (height * width)
        low, high = math.log(self.aspect[0]), math.log(self.aspect[1])
        aspect = ops.exp(low + draws[:, 2:3] * (high - low))
        box_height = ops.minimum(ops.sqrt(area * aspect), float(height))
        box_width = ops.minimum(ops.sqrt(area / aspect), float(width))
        top = draws[:, 3:4] * (height - box_height)
        left = draws[:, 4:5] * (width - box_width)
        rows = ops.reshape(ops.arange(height, dtype="float32"), (1, -1)) + 0.5  # pixel centres
        cols = ops.reshape(ops.arange(width, dtype="float32"), (1, -1)) + 0.5
        in_rows = ops.logical_and(rows >= top, rows < top + box_height)          # [batch, H]
        in_cols = ops.logical_and(cols >= left, cols < left + box_width)         # [batch, W]
        inside = ops.logical_and(ops.expand_dims(in_rows, 2), ops.expand_dims(in_cols, 1))
        inside = ops.logical_and(inside, ops.reshape(draws[:, 0] < self.probability, (-1, 1, 1)))
        mask = ops.expand_dims(ops.cast(inside, images.dtype), -1)              # [batch, H, W, 1]
        grey = ops.reshape(ops.cast(draws[:, 5], images.dtype), (-1, 1, 1, 1))
        return images * (1 - mask) + grey * mask

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "probability": self.probability, "area": list(self.area),
                "aspect": list(self.aspect), "seed": self.seed}


@keras.saving.register_keras_serializable(package="fer")
class RandomCamera(layers.Layer):
    """Training-time camera distortions, after the affine transform and random erasing: each
    of four drawn independently per face with probability `probability`, at a strength drawn
    uniformly: exposure (darker, x f, or brighter, 1 - (1 - x) f, for f in [`exposure`, 1]),
    contrast (about the face's mean, x c for c in [`contrast`, 1]), out-of-focus blur (a 3x3
    binomial blur applied twice, mixed in at a weight up to `blur`) and Gaussian sensor noise
    (sigma up to `noise`), clipped to [0, 1]. FER2013's faces are clean web crops; a network
    trained on them alone loses most of its accuracy to camera noise a webcam makes
    (`pipeline.robustness`, RESULTS.md *Robustness*). The identity at inference. Pure
    keras.ops (a depthwise convolution, masks), any backend."""

    # Part of the checkpoint key, as RandomFaceTransform.VERSION.
    VERSION = 1

    def __init__(self, probability: float = 0.5, exposure: float = CAMERA["exposure"],
                 contrast: float = CAMERA["contrast"], noise: float = CAMERA["noise"],
                 blur: float = CAMERA["blur"], seed: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        if not (0 <= probability <= 1 and 0 <= exposure <= 1 and 0 <= contrast <= 1 and 0 <= noise <= 1
                and 0 <= blur <= 1):
            raise ValueError(f"probability, exposure, contrast, noise and blur must be in [0, 1], got "
                             f"probability={probability}, exposure={exposure}, contrast={contrast}, "
                             f"noise={noise}, blur={blur}")
        self.probability, self.exposure, self.contrast = probability, exposure, contrast
        self.noise, self.blur, self.seed = noise, blur, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def draw(self, batch_size):
        """[batch, 9] uniform [0, 1) draws: exposure (< probability), its strength, darker (<
        0.5) or brighter, contrast (< probability), its strength, blur (< probability), its
        weight, noise (< probability), its sigma."""
        return keras.random.uniform((batch_size, 9), 0.0, 1.0, seed=self.seed_generator)

    def call(self, images, training=None):
        if not training or self.probability == 0:
            return images
        noise = keras.random.normal(ops.shape(images), seed=self.seed_generator)
        return self.distort(images, self.draw(ops.shape(images)[0]), noise)

    def distort(self, images, draws, noise):
        """`images` ([N, H, W, C] in [0, 1]) with the distortions that `draws` (see `draw`) and
        `noise` (standard normal, the images' shape) stand for."""
        draws = ops.cast(draws, images.dtype)

        def per_face(column):
            return ops.reshape(draws[:, column], (-1, 1, 1, 1))

        def chosen(column):
            return ops.cast(per_face(column) < self.probability, images.dtype)

        factor = 1 - chosen(0) * per_face(1) * (1 - self.exposure)
        darker = ops.cast(per_face(2) < 0.5, images.dtype)
        x = darker * images * factor + (1 - darker) * (1 - (1 - images) * factor)
        mean = ops.mean(x, axis=(1, 2, 3), keepdims=True)
        x = mean + (x - mean) * (1 - chosen(3) * per_face(4) * (1 - self.contrast))
        channels = images.shape[-1]
        taps = np.outer([1, 2, 1], [1, 2, 1]).astype("float32") / 16
        kernel = ops.cast(np.tile(taps[:, :, None, None], (1, 1, channels, 1)), images.dtype)
        blurred = x
        for _ in range(2):
            padded = ops.pad(blurred, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="symmetric")
            blurred = ops.depthwise_conv(padded, kernel, padding="valid")
        x = x + chosen(5) * per_face(6) * self.blur * (blurred - x)
        x = x + chosen(7) * per_face(8) * self.noise * ops.cast(noise, images.dtype)
        return ops.clip(x, 0.0, 1.0)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "probability": self.probability, "exposure": self.exposure,
                "contrast": self.contrast, "noise": self.noise, "blur": self.blur, "seed": self.seed}


class View(NamedTuple):
    """One test-time view of a face: mirrored left-right or not, and scaled by `zoom` about
    its centre (under 1 magnifies: the border is cut off)."""
    mirror: bool = False
    zoom: float = 1.0


# Test-time augmentation: the views whose mean probability is the prediction. "flip": the
# face and its mirror image. "multiview": both at four zooms, chosen on the validation
# carve-out with the shipped ResNet-18 and DCNN (RESULTS.md, *Multi-view test-time
# augmentation*).
TEST_TIME_VIEWS: Dict[str, Tuple[View, ...]] = {
    "flip": (View(), View(mirror=True)),
    "multiview": tuple(View(mirror, zoom) for zoom in (1.0, 0.95, 0.9, 0.85) for mirror in (False, True)),
}


def view_of(images, view: View, take=None):
    """`images` [N, H, W, C] (float in [0, 1], or uint8) as seen in `view`: the augmentation's
    affine map and bilinear sampling (`RandomFaceTransform.transform` with no rotation or
    shift, so each output pixel's source row and column are found apart), so every view is
    one the network met in training. The face itself and its mirror image are exact
    (whole-pixel sampling); tests check the two agree.

    With `take` None: in NumPy (float32 out), so that a client builds a face's views in well
    under a millisecond (the Keras layer takes about 10 ms a call in eager TensorFlow).
    A graph passes its gather op with `numpy.take`'s (array, indices, axis) call, e.g.
    `tf.gather`, and float images whose height and width are known: the exported model's
    test-time signatures build their views so, with the same map."""
    if not 0.5 < view.zoom < 1.5:
        raise ValueError(f"{view}: zoom must be in (0.5, 1.5)")
    if take is None:
        images, take = np.asarray(images, np.float32), np.take
    height, width = int(images.shape[1]), int(images.shape[2])
    if view.zoom == 1.0:
        return take(images, np.arange(width)[::-1], axis=2) if view.mirror else images

    def taps(size: int, direction: float):
        centre = (size - 1) / 2
        source = np.clip((np.arange(size) - centre) * direction * view.zoom + centre, 0.0, size - 1.0)
        low = np.floor(source).astype(np.int64)
        return low, np.minimum(low + 1, size - 1), (source - low).astype(np.float32)

    y0, y1, weight_y = taps(height, 1.0)
    x0, x1, weight_x = taps(width, -1.0 if view.mirror else 1.0)
    weight_y, weight_x = weight_y[None, :, None, None], weight_x[None, None, :, None]
    rows = take(images, y0, axis=1) * (1 - weight_y) + take(images, y1, axis=1) * weight_y
    return take(rows, x0, axis=2) * (1 - weight_x) + take(rows, x1, axis=2) * weight_x


def augmentation(seed: int = 42) -> RandomFaceTransform:
    """The recipe's augmentation (`AUGMENTATION`: flip, rotation up to 18 degrees, shift and
    zoom up to 10%), drawn from `seed`; identity at inference."""
    return RandomFaceTransform(**AUGMENTATION, seed=seed, name="augmentation")


class OnlineDistillation(layers.Layer):
    """Distillation from a teacher that sees what the student sees ("consistent teaching",
    Beyer et al., CVPR 2022, "Knowledge distillation: A good teacher is patient and
    consistent"): in training, the frozen `teachers` (their mean) answer each augmented
    face, over the test-time `views` of it, and the layer adds
    `weight` x cross-entropy(teacher's probabilities softened by `temperature`, student's)
    to the loss; the student's probabilities pass through unchanged. The labels' loss is
    then weighed by (1 - weight) per face (cross-entropy is linear in its target, so the sum
    is the loss of the mixed target `soft_targets` would make). The share goes into the
    face's weight, not into a (1 - weight) x one-hot target: Keras's cross-entropy
    differentiates through the softmax's logits as if every target summed to one, which
    gives a target of another sum the wrong gradient. Nothing is added at inference or
    validation."""

    def __init__(self, teachers: Sequence[keras.Model], weight: float = 0.7, temperature: float = 2.0,
                 views: Sequence[View] = (), **kwargs):
        super().__init__(**kwargs)
        if not teachers or not 0 < weight <= 1 or temperature <= 0:
            raise ValueError(f"online distillation needs a teacher, a weight in (0, 1] and a positive "
                             f"temperature, got {len(teachers)} teacher(s), weight={weight}, "
                             f"temperature={temperature}")
        for teacher in teachers:
            teacher.trainable = False
        self.teachers, self.weight, self.temperature = list(teachers), weight, temperature
        self.views = tuple(views) or (View(),)

    def teacher_probabilities(self, images):
        """The teachers' mean probabilities over the views of `images`, softened."""
        total = 0.0
        for teacher in self.teachers:
            for view in self.views:
                total = total + teacher(view_of(images, view, take=ops.take), training=False)
        probabilities = ops.clip(total / (len(self.teachers) * len(self.views)), 1e-8, 1.0)
        softened = ops.power(probabilities, 1.0 / self.temperature)
        return ops.stop_gradient(softened / ops.sum(softened, axis=-1, keepdims=True))

    def call(self, images, student, training=None):
        if training:
            targets = self.teacher_probabilities(images)
            # The compiled loss's own cross-entropy: on TensorFlow it differentiates through
            # the softmax's logits, so a class the student all but rules out (p < 1e-7)
            # still gets its push from the teacher; a clipped log(p) would stop it there.
            cross_entropy = keras.losses.categorical_crossentropy(targets, student)
            self.add_loss(self.weight * ops.mean(cross_entropy))
        return student

    def compute_output_shape(self, images_shape, student_shape):
        return student_shape


def served_probabilities(probabilities, log_bias=None, temperature: float = 1.0):
    """`features.OUTPUT_RULE` in Keras ops: softmax((log(probabilities) + log_bias) /
    temperature), or `probabilities` unchanged without a bias and at temperature 1. The
    export applies it to the network, an `Ensemble` to each member (pipeline.prior.corrected
    is the NumPy twin the scans use)."""
    if log_bias is None and temperature == 1.0:
        return probabilities
    logits = ops.log(ops.maximum(probabilities, 1e-12))
    if log_bias is not None:
        logits = logits + log_bias
    return ops.softmax(logits / temperature, axis=-1)


class Ensemble(keras.Model):
    """Trained networks served as one: each member's probabilities go through its own output
    rule (`features.OUTPUT_RULE`: its prior correction's per-class `log_bias`, its calibration
    `temperature`), exactly as that member's SavedModel serves them, and the ensemble answers
    their mean. A [48, 48, 1] face in [0, 1] to class probabilities, like every network
    here; it is exported, not trained (its members are frozen)."""

    def __init__(self, members: Sequence[keras.Model], log_biases: Sequence[Sequence[float]] = (),
                 temperatures: Sequence[float] = (), name: str = "ensemble", **kwargs):
        super().__init__(name=name, **kwargs)
        if not members:
            raise ValueError("an ensemble needs at least one member")
        classes = {int(member.output_shape[-1]) for member in members}
        if len(classes) != 1:
            raise ValueError(f"the members predict different numbers of classes: {sorted(classes)}")
        n = classes.pop()
        log_biases = list(log_biases) or [np.zeros(n)] * len(members)
        temperatures = list(temperatures) or [1.0] * len(members)
        if len(log_biases) != len(members) or len(temperatures) != len(members):
            raise ValueError(f"{len(members)} members, {len(log_biases)} log-biases, "
                             f"{len(temperatures)} temperatures: one each")
        if any(t <= 0 for t in temperatures) or any(np.shape(b) != (n,) for b in log_biases):
            raise ValueError(f"each member needs a positive temperature and {n} log-biases")
        for member in members:
            member.trainable = False
        self.members = list(members)
        self.log_biases = [np.asarray(b, np.float32) for b in log_biases]
        self.temperatures = [float(t) for t in temperatures]
        self.num_classes = n

    def call(self, images, training=False):
        total = 0.0
        for member, bias, temperature in zip(self.members, self.log_biases, self.temperatures):
            total = total + served_probabilities(member(images, training=False),
                                                 bias if np.any(bias) else None, temperature)
        return total / len(self.members)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)


# ---------------------------------------------------------------------------
# Batch normalisation folded away for serving

FOLDABLE_LAYERS = (layers.Conv2D, layers.Dense)


class FoldedBatchNormalization(layers.Layer):
    """Where a BatchNormalization was, in `fold_batch_norm`'s serving copy: the identity,
    holding the folded layer's four vectors (not used in the forward pass) so that
    `unfold_batch_norm` can give the trainable network back (to float rounding)."""

    def __init__(self, channels: int, epsilon: float, **kwargs):
        super().__init__(**kwargs)
        self.channels, self.epsilon = int(channels), float(epsilon)
        # Named apart from BatchNormalization's own, so that a checkpoint of one never
        # reads silently into the other (checkpoints match variables by attribute name).
        self.folded_gamma, self.folded_beta, self.folded_mean, self.folded_variance = (
            self.add_weight(shape=(self.channels,), initializer="zeros", trainable=False, name=name)
            for name in ("gamma", "beta", "moving_mean", "moving_variance"))

    def call(self, inputs, training=None, mask=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return dict(super().get_config(), channels=self.channels, epsilon=self.epsilon)


def batch_norm_folds(network: keras.Model) -> Dict[str, str]:
    """{BatchNormalization layer: the Conv2D or Dense layer it can be folded into} of
    `network`: the BatchNormalizations (over the last axis, with scale and offset) whose
    only input is the output of a Conv2D or Dense layer with no activation that feeds
    nothing else. (The DCNN's come after an ELU: none of them folds.)"""
    folds = {}
    for layer in network.layers:
        if not isinstance(layer, layers.BatchNormalization) or len(layer._inbound_nodes) != 1:
            continue
        parents = layer._inbound_nodes[0].parent_nodes
        producer = parents[0].operation if len(parents) == 1 else None
        if (type(producer) in FOLDABLE_LAYERS and producer.get_config().get("activation") == "linear"
                and len(producer._inbound_nodes) == 1 and len(producer._outbound_nodes) == 1
                and layer.axis in (-1, len(layer.input.shape) - 1) and layer.center and layer.scale):
            folds[layer.name] = producer.name
    return folds


def fold_batch_norm(network: keras.Model) -> keras.Model:
    """A serving copy of `network` (an `Ensemble`: of each member) with every BatchNormalization
    of `batch_norm_folds` folded into the layer before it: kernel x gamma / sqrt(variance +
    epsilon), the bias shifted to match. Inference only (training would normalise by the
    batch); the same probabilities to float rounding, two element-wise ops fewer per folded
    layer per face. Its weights are a copy; `unfold_batch_norm` gives the network back.
    `network` itself when nothing folds."""
    if isinstance(network, Ensemble):
        return Ensemble([fold_batch_norm(m) for m in network.members], network.log_biases,
                        network.temperatures, name=network.name)
    folds = batch_norm_folds(network)
    if not folds:
        return network
    producers = {producer: norm for norm, producer in folds.items()}

    def clone(layer):
        if isinstance(layer, keras.Model):
            return layer
        if layer.name in folds:
            return FoldedBatchNormalization(layer.gamma.shape[0], layer.epsilon, name=layer.name)
        config = layer.get_config()
        if layer.name in producers:
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    folded = keras.models.clone_model(network, clone_function=clone)
    for layer in network.layers:
        target = folded.get_layer(layer.name)
        if layer.name in folds:
            target.set_weights(layer.get_weights())
        elif layer.name in producers:
            target.set_weights(_folded_weights(layer, network.get_layer(producers[layer.name])))
        elif layer is not target:
            target.set_weights(layer.get_weights())
    return folded


def _affine(norm) -> Tuple[np.ndarray, np.ndarray]:
    """(scale, shift) of a BatchNormalization or `FoldedBatchNormalization` at inference:
    it maps x to x * scale + shift."""
    gamma, beta, mean, variance = (np.asarray(w, np.float64) for w in norm.get_weights())
    scale = gamma / np.sqrt(variance + norm.epsilon)
    return scale, beta - mean * scale


def _folded_weights(producer, norm) -> list:
    weights = producer.get_weights()
    kernel = np.asarray(weights[0], np.float64)
    bias = np.asarray(weights[1], np.float64) if len(weights) > 1 else 0.0
    scale, shift = _affine(norm)
    return [(kernel * scale).astype(weights[0].dtype), (bias * scale + shift).astype(weights[0].dtype)]


def unfold_batch_norm(folded: keras.Model, network: keras.Model) -> keras.Model:
    """Sets the weights of `network` (the architecture `folded` was folded from, as
    `build` makes it) from `folded`'s, undoing `fold_batch_norm`: each BatchNormalization
    gets its four vectors back, the layer before it its kernel (and bias) divided out
    again (to float rounding; channels whose gamma was 0 get a zero kernel, as good as any
    since the normalisation multiplies them by 0). Returns `network`."""
    producers = {producer: norm for norm, producer in batch_norm_folds(network).items()}
    for layer in network.layers:
        source = folded.get_layer(layer.name)
        if layer.name in producers:
            kernel, bias = source.get_weights()
            scale, shift = _affine(folded.get_layer(producers[layer.name]))
            safe = np.where(scale == 0, 1.0, scale)
            unfolded = [np.where(scale == 0, 0.0, kernel / safe)]
            if layer.use_bias:
                unfolded.append(np.where(scale == 0, 0.0, (bias - shift) / safe))
            layer.set_weights([w.astype(kernel.dtype) for w in unfolded])
        elif layer is not source:  # a FoldedBatchNormalization holds its BatchNormalization's vectors
            layer.set_weights(source.get_weights())
    return network


def with_augmentation(network: keras.Model, seed: int = 42, erasing: float = 0.0,
                      distillation: Optional[OnlineDistillation] = None, camera: float = 0.0) -> keras.Model:
    """The training model: the augmentation layer, random erasing with probability `erasing`
    (none at 0), camera distortions each with probability `camera` (none at 0), then
    `network` (sharing its weights); with `distillation`, its teachers see the same
    augmented faces as `network`."""
    inputs = keras.Input(shape=network.input_shape[1:], name=features.PIXELS_KEY)
    x = augmentation(seed)(inputs)
    if erasing:
        x = RandomErasing(erasing, **ERASING, seed=seed + 1, name="random_erasing")(x)
    if camera:
        x = RandomCamera(camera, **CAMERA, seed=seed + 2, name="camera")(x)
    outputs = network(x)
    if distillation is not None:
        outputs = distillation(x, outputs)
    return keras.Model(inputs, outputs, name=f"{network.name}_training")


def training_model(network: keras.Model, training: "config.TrainingConfig",
                   distillation: Optional[OnlineDistillation] = None) -> keras.Model:
    """What is fitted: `network` behind the augmentation layers (and `distillation`'s
    teachers, beside it), or itself without them."""
    if not training.augment:
        if distillation is not None:
            raise ValueError("online distillation teaches on the augmented faces: it needs augmentation on "
                             "(without it, the same teacher's precomputed targets are the same and cheaper)")
        return network
    return with_augmentation(network, training.seed, training.random_erasing, distillation, training.camera)


def build_dcnn(input_shape: Tuple[int, int, int] = INPUT_SHAPE, num_classes: int = 7) -> keras.Model:
    """The seed notebook's DCNN: Conv 5x5 then 3x3 blocks with BatchNorm, MaxPool, Dropout,
    a 128-unit Dense head and softmax; ELU activations, he_normal initialisation."""
    def conv(x, filters, kernel, name):
        x = layers.Conv2D(filters, kernel, padding="same", activation="elu",
                          kernel_initializer="he_normal", name=name)(x)
        return layers.BatchNormalization(name=f"{name}_bn")(x)

    inputs = keras.Input(shape=input_shape, name=features.PIXELS_KEY)
    x = conv(inputs, 64, (5, 5), "conv2d_1")
    x = conv(x, 64, (5, 5), "conv2d_2")
    x = layers.MaxPooling2D(pool_size=(2, 2), name="maxpool2d_1")(x)
    x = layers.Dropout(0.4, name="dropout_1")(x)
    x = conv(x, 128, (3, 3), "conv2d_3")
    x = conv(x, 128, (3, 3), "conv2d_4")
    x = layers.MaxPooling2D(pool_size=(2, 2), name="maxpool2d_2")(x)
    x = layers.Dropout(0.4, name="dropout_2")(x)
    x = conv(x, 256, (3, 3), "conv2d_5")
    x = conv(x, 256, (3, 3), "conv2d_6")
    x = layers.MaxPooling2D(pool_size=(2, 2), name="maxpool2d_3")(x)
    x = layers.Dropout(0.5, name="dropout_3")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(128, activation="elu", kernel_initializer="he_normal", name="dense_1")(x)
    x = layers.BatchNormalization(name="dense_1_bn")(x)
    x = layers.Dropout(0.6, name="dropout_4")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="out_layer")(x)
    return keras.Model(inputs, outputs, name="dcnn")


def build_vggnet(input_shape: Tuple[int, int, int] = INPUT_SHAPE, num_classes: int = 7) -> keras.Model:
    """The strong model: the VGG-style network of Khaireddin & Chen (2021, "Facial Emotion
    Recognition: State of the Art Performance on FER2013", 73.28% single-network accuracy):
    four stages of two 3x3 Conv-BN-ReLU blocks and a max-pool (64, 128, 256, 512 filters),
    then two fully connected layers and softmax. The fully connected layers are 1024 wide
    here instead of 4096 (a quarter of the parameters, so the served model stays small)."""
    inputs = keras.Input(shape=input_shape, name=features.PIXELS_KEY)
    x = inputs
    for stage, filters in enumerate((64, 128, 256, 512), start=1):
        for block in (1, 2):
            name = f"stage{stage}_conv{block}"
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False,
                              kernel_initializer="he_normal", name=name)(x)
            x = layers.BatchNormalization(name=f"{name}_bn")(x)
            x = layers.Activation("relu", name=f"{name}_relu")(x)
        x = layers.MaxPooling2D(2, name=f"stage{stage}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    for i in (1, 2):
        x = layers.Dropout(0.4, name=f"dropout_{i}")(x)
        x = layers.Dense(1024, activation="relu", kernel_initializer="he_normal", name=f"dense_{i}")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="out_layer")(x)
    return keras.Model(inputs, outputs, name="vggnet")


def build_resnet18(input_shape: Tuple[int, int, int] = INPUT_SHAPE, num_classes: int = 7,
                   widths: Tuple[int, ...] = (32, 64, 128, 256),
                   model_name: str = "resnet18") -> keras.Model:
    """ResNet-18's layout for 48x48 faces: a stem of two 3x3 Conv-BN-ReLU at full resolution,
    then four stages (24, 12, 6 and 3 pixels) of two basic residual blocks (two 3x3
    convolutions, BatchNorm, identity shortcut; a 1x1 convolution where the width changes),
    each stage entered through a 2x2 max-pool, then global average pooling, dropout and
    softmax. At half ResNet-18's widths: 2.8 M parameters and a fifth of the DCNN's FLOPs,
    so it trains about 6x faster than the DCNN on a CPU. No strided convolution: a strided
    1x1 convolution crashes TensorFlow 2.16's oneDNN CPU kernels in training (see
    `build_compact`)."""
    def conv_bn(x, filters, kernel, name):
        x = layers.Conv2D(filters, kernel, padding="same", use_bias=False,
                          kernel_initializer="he_normal", name=name)(x)
        return layers.BatchNormalization(name=f"{name}_bn")(x)

    inputs = keras.Input(shape=input_shape, name=features.PIXELS_KEY)
    x = inputs
    for i in (1, 2):
        x = layers.Activation("relu", name=f"stem_conv{i}_relu")(conv_bn(x, widths[0], 3, f"stem_conv{i}"))
    for stage, filters in enumerate(widths, start=1):
        x = layers.MaxPooling2D(2, name=f"stage{stage}_pool")(x)
        for block in (1, 2):
            name = f"stage{stage}_block{block}"
            shortcut = x if x.shape[-1] == filters else conv_bn(x, filters, 1, f"{name}_shortcut")
            y = layers.Activation("relu", name=f"{name}_conv1_relu")(conv_bn(x, filters, 3, f"{name}_conv1"))
            y = conv_bn(y, filters, 3, f"{name}_conv2")
            x = layers.Activation("relu", name=f"{name}_relu")(layers.Add(name=f"{name}_add")([y, shortcut]))
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(0.4, name="dropout_1")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="out_layer")(x)
    return keras.Model(inputs, outputs, name=model_name)


def build_compact_resnet(input_shape: Tuple[int, int, int] = INPUT_SHAPE,
                         num_classes: int = 7) -> keras.Model:
    """`resnet18` at a quarter of ResNet-18's widths (16-128), for CPU serving: 0.7 M
    parameters and 50 MFLOPs per face. Dense 3x3 convolutions run several times more
    FLOPs per second on a CPU than `compact`'s depthwise-separable ones, so it serves
    at about the compact model's latency with four times its FLOPs."""
    return build_resnet18(input_shape, num_classes, widths=(16, 32, 64, 128),
                          model_name="compact_resnet")


def build_compact(input_shape: Tuple[int, int, int] = INPUT_SHAPE, num_classes: int = 7,
                  widths: Tuple[int, ...] = (16, 32, 64, 128)) -> keras.Model:
    """The compact model for CPU serving, after mini-Xception (Arriaga et al., 2017): a
    3x3 convolution stem, then residual modules of two depthwise-separable 3x3
    convolutions and a strided max-pool (average pool and 1x1 convolution on the shortcut), then
    a 3x3 convolution to one map per class, global average pooling and softmax."""
    inputs = keras.Input(shape=input_shape, name=features.PIXELS_KEY)
    x = inputs
    for i in (1, 2):
        x = layers.Conv2D(8, 3, padding="same", use_bias=False, kernel_initializer="he_normal",
                          name=f"stem_conv{i}")(x)
        x = layers.BatchNormalization(name=f"stem_conv{i}_bn")(x)
        x = layers.Activation("relu", name=f"stem_conv{i}_relu")(x)
    for m, filters in enumerate(widths, start=1):
        # ResNet-D shortcut (average pool, then 1x1 convolution): a strided 1x1 convolution
        # here crashes TensorFlow 2.16's oneDNN CPU kernels in training (malloc corruption).
        shortcut = layers.AveragePooling2D(2, padding="same", name=f"module{m}_shortcut_pool")(x)
        shortcut = layers.Conv2D(filters, 1, use_bias=False, name=f"module{m}_shortcut")(shortcut)
        shortcut = layers.BatchNormalization(name=f"module{m}_shortcut_bn")(shortcut)
        for j in (1, 2):
            x = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False,
                                       depthwise_initializer="he_normal",
                                       pointwise_initializer="he_normal", name=f"module{m}_sep{j}")(x)
            x = layers.BatchNormalization(name=f"module{m}_sep{j}_bn")(x)
            if j == 1:
                x = layers.Activation("relu", name=f"module{m}_sep{j}_relu")(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same", name=f"module{m}_pool")(x)
        x = layers.Add(name=f"module{m}_add")([x, shortcut])
    x = layers.Conv2D(num_classes, 3, padding="same", name="class_maps")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Activation("softmax", name="out_layer")(x)
    return keras.Model(inputs, outputs, name="compact")


# ---------------------------------------------------------------------------
# Transfer models: keras.applications bases on the grayscale face
# ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TransferBase:
    application: Callable[..., keras.Model]
    weights_file: str          # the no-top ImageNet weights file name in the Keras cache
    fine_tune_prefix: str      # layers unfrozen in the second fine-tuning phase
    image_size: int            # the face is resized to image_size x image_size inside the model


TRANSFER_BASES: Dict[str, TransferBase] = {
    "vgg16": TransferBase(keras.applications.VGG16,
                          "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", "block5_", 48),
    "resnet50": TransferBase(keras.applications.ResNet50,
                             "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", "conv5_", 64),
}
# keras.applications' "caffe" preprocessing of VGG16 and ResNet50: 0-255 BGR minus the
# ImageNet channel means (a gray face has three equal channels, so the order is moot).
IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)
BASE_SUFFIX = "_base"


def local_file(path: str) -> str:
    """`path` itself, or for object storage (gs://, s3://, ...) a local copy of it (read
    with TensorFlow's file system, which exists wherever a pipeline component runs)."""
    if "://" not in path:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"weights file {path!r} does not exist")
        return path
    import tempfile
    import tensorflow as tf  # only for object storage: the JAX path reads local files

    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"weights file {path!r} does not exist")
    local = os.path.join(tempfile.mkdtemp(), os.path.basename(path))
    tf.io.gfile.copy(path, local)
    return local


def imagenet_weights(name: str, path: str = "") -> Optional[str]:
    """The ImageNet weights file of transfer model `name`: `path` when given (it must exist;
    object storage is fetched), else the file in the Keras cache ($KERAS_HOME or
    ~/.keras, models/) when present, else None (there is no download here: the base
    then starts from random initialisation)."""
    if path:
        return local_file(path)
    cache = os.path.join(os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras")), "models",
                         TRANSFER_BASES[name].weights_file)
    return cache if os.path.isfile(cache) else None


def _transfer(name: str, input_shape: Tuple[int, int, int], num_classes: int,
              pretrained: str = "") -> keras.Model:
    spec = TRANSFER_BASES[name]
    weights = imagenet_weights(name, pretrained)
    if weights is None:
        logger.warning(
            "%s: no ImageNet weights (none given and %s is not in the Keras cache; there is no "
            "download here): the whole network trains in one phase, from random initialisation "
            "unless warm-started from weights of our own",
            name, spec.weights_file)
    size = spec.image_size
    base = spec.application(include_top=False, weights=weights, input_shape=(size, size, 3),
                            name=f"{name}{BASE_SUFFIX}")
    inputs = keras.Input(shape=input_shape, name=features.PIXELS_KEY)
    x = inputs
    if input_shape[:2] != (size, size):
        x = layers.Resizing(size, size, interpolation="bilinear", name="resize")(x)
    x = layers.Concatenate(name="gray_to_rgb")([x, x, x])
    x = layers.Rescaling(255.0, name="to_0_255")(x)
    x = layers.Normalization(mean=IMAGENET_BGR_MEAN, variance=(1.0, 1.0, 1.0), name="imagenet_mean")(x)
    if weights is not None:
        # Phase 1 trains the head on a frozen base, called in inference mode so its
        # BatchNorm statistics stay ImageNet's in both phases (see fine_tuning).
        base.trainable = False
        x = base(x, training=False)
    else:
        x = base(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(0.5, name="dropout_1")(x)
    x = layers.Dense(256, activation="relu", kernel_initializer="he_normal", name="dense_1")(x)
    x = layers.Dropout(0.5, name="dropout_2")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="out_layer")(x)
    return keras.Model(inputs, outputs, name=name)


def build_vgg16(input_shape=INPUT_SHAPE, num_classes: int = 7, pretrained: str = "") -> keras.Model:
    """VGG16 (keras.applications, no top) on the face resized inside the model, with a
    GlobalAveragePooling-Dense(256) head. ImageNet weights when available (see
    `imagenet_weights`); then the base starts frozen for two-phase fine-tuning."""
    return _transfer("vgg16", input_shape, num_classes, pretrained)


def build_resnet50(input_shape=INPUT_SHAPE, num_classes: int = 7, pretrained: str = "") -> keras.Model:
    """ResNet50 (keras.applications, no top), otherwise like `build_vgg16`."""
    return _transfer("resnet50", input_shape, num_classes, pretrained)


def fine_tuning(network: keras.Model) -> Optional[Tuple[keras.Model, str]]:
    """(frozen base, prefix of the layers to unfreeze) when `network` is a transfer model
    built on ImageNet weights (two-phase fine-tuning), else None (one phase)."""
    for layer in network.layers:
        if layer.name.endswith(BASE_SUFFIX) and not layer.trainable:
            return layer, TRANSFER_BASES[layer.name[:-len(BASE_SUFFIX)]].fine_tune_prefix
    return None


def unfreeze_top(base: keras.Model, prefix: str) -> int:
    """Phase 2: makes the base's layers named `prefix`* trainable (BatchNorm layers stay
    frozen); returns how many layers were unfrozen."""
    base.trainable = True
    unfrozen = 0
    for layer in base.layers:
        layer.trainable = layer.name.startswith(prefix) and not isinstance(
            layer, layers.BatchNormalization)
        unfrozen += int(layer.trainable)
    return unfrozen


BUILDERS: Dict[str, Callable[..., keras.Model]] = {
    "dcnn": build_dcnn, "vggnet": build_vggnet, "resnet18": build_resnet18, "compact": build_compact,
    "compact_resnet": build_compact_resnet, "vgg16": build_vgg16, "resnet50": build_resnet50}


def build(name: str, num_classes: int, pretrained: str = "") -> keras.Model:
    """The network registered as `name`, for `num_classes` classes. `pretrained`: an
    ImageNet weights file for the transfer models (see `imagenet_weights`)."""
    if name not in BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(sorted(BUILDERS))}")
    if name in TRANSFER_BASES:
        return BUILDERS[name](INPUT_SHAPE, num_classes, pretrained=pretrained)
    if pretrained:
        raise ValueError(f"pretrained weights apply to {', '.join(config.TRANSFER_MODELS)} only, "
                         f"not {name!r}")
    return BUILDERS[name](INPUT_SHAPE, num_classes)


def load_trained_weights(network: keras.Model, name: str, path: str) -> None:
    """Loads the `.weights.h5` at `path` (local or object storage), trained as model `name`,
    into `network`. A missing file, or weights of another model or class count, is a
    one-line ValueError naming the file, the model and the classes."""
    try:
        local = local_file(path)
    except FileNotFoundError:
        raise ValueError(f"warm start: no weights file at {path}") from None
    try:
        network.load_weights(local)
    except (ValueError, OSError) as error:
        detail = " ".join(str(error).split())   # Keras lists the layers over many lines
        raise ValueError(f"warm start: cannot load {path} into {name} with {network.output_shape[-1]} "
                         f"classes (the same --model and --classes as the weights were trained "
                         f"with?): {detail[:300]}{'...' if len(detail) > 300 else ''}") from None


def load_weights_for_classes(network: keras.Model, name: str, path: str,
                             trained_classes: Sequence[str], classes: Sequence[str]) -> None:
    """Loads into `network` (model `name` built for `classes`) the weights at `path` of the
    same model trained on `trained_classes`, a superset: every layer as trained, and the
    classifier's outputs for `classes` only. The network's probabilities are then the
    trained model's probabilities renormalised over `classes` (softmax of a subset of the
    logits), e.g. a happy/sad/neutral model started from a 7-emotion one."""
    missing = [c for c in classes if c not in trained_classes]
    if missing:
        raise ValueError(f"{path}: trained on {', '.join(trained_classes)}, which lacks "
                         f"{', '.join(missing)}")
    trained = build(name, len(trained_classes))
    trained.load_weights(local_file(path))
    keep = [list(trained_classes).index(c) for c in classes]
    for source, target in zip(trained.layers, network.layers):
        values = []
        for value, wanted in zip(source.get_weights(), target.get_weights()):
            if value.shape != wanted.shape:  # the classifier: keep the wanted classes' outputs
                value = value[..., keep]
            values.append(value)
        target.set_weights(values)


def optimizer(name: str, learning_rate: float, momentum: float = 0.9,
              weight_decay: float = 0.0) -> keras.optimizers.Optimizer:
    """Nadam (the seed's), Adam, AdamW, SGD with Nesterov momentum, or RMSprop."""
    if name == "nadam":
        return keras.optimizers.Nadam(learning_rate=learning_rate)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=weight_decay or 1e-4)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum, nesterov=True)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=learning_rate, momentum=momentum)
    raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(config.OPTIMIZERS)}")


def compile_model(model: keras.Model, learning_rate: float, optimizer_name: str = "nadam",
                  label_smoothing: float = 0.0, momentum: float = 0.9,
                  weight_decay: float = 0.0) -> keras.Model:
    """Categorical cross-entropy (optionally label-smoothed) + accuracy; Nadam by default,
    as in the seed."""
    model.compile(optimizer=optimizer(optimizer_name, learning_rate, momentum, weight_decay),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
                  metrics=["accuracy"])
    return model


# ---------------------------------------------------------------------------
# Cost: floating-point operations of one forward pass
# ---------------------------------------------------------------------------

def _layer_flops(layer) -> int:
    if isinstance(layer, keras.Model):
        return sum(_layer_flops(inner) for inner in layer.layers)
    if isinstance(layer, layers.SeparableConv2D):
        out = layer.output.shape
        kh, kw = layer.kernel_size
        cin = layer.input.shape[-1]
        return 2 * out[1] * out[2] * (kh * kw * cin * layer.depth_multiplier
                                      + cin * layer.depth_multiplier * out[3])
    if isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D)):
        out = layer.output.shape  # (None, H, W, C)
        kh, kw = layer.kernel_size
        cin = layer.input.shape[-1]
        if isinstance(layer, layers.DepthwiseConv2D):
            per_output = kh * kw
        else:
            per_output = kh * kw * cin // layer.groups
        return 2 * per_output * out[1] * out[2] * out[3]
    if isinstance(layer, layers.Dense):
        return 2 * layer.input.shape[-1] * layer.units
    return 0


def flops_per_image(network: keras.Model) -> int:
    """Multiply-adds x 2 of the convolution and dense layers for one image (BatchNorm,
    activations and pooling, a few percent more, are not counted)."""
    return sum(_layer_flops(layer) for layer in network.layers)
