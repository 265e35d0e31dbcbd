"""Model builders in pure Keras 3 (keras.layers only): they run on TensorFlow inside
TFX and on JAX on a GPU machine outside it.

Every builder takes `(input_shape, num_classes)` and returns an uncompiled
`keras.Model` from a [48, 48, 1] float image in [0, 1] to class probabilities:
the network that is exported for serving. `with_augmentation` wraps it in the
training model, whose augmentation layers run on the accelerator during fit
(and are not part of the export: they hold random-seed state that a serving
graph must not capture).
"""
from typing import Callable, Dict, Tuple

import keras
from keras import layers

from pipeline import features

INPUT_SHAPE: Tuple[int, int, int] = (features.IMAGE_SIZE, features.IMAGE_SIZE,
                                     features.IMAGE_CHANNELS)


def augmentation(seed: int = 42) -> keras.Sequential:
    """Random flip, small rotation, shift and zoom; identity at inference."""
    return keras.Sequential([
        layers.RandomFlip("horizontal", seed=seed),
        layers.RandomRotation(0.05, fill_mode="nearest", seed=seed),
        layers.RandomTranslation(0.1, 0.1, fill_mode="nearest", seed=seed),
        layers.RandomZoom(0.1, fill_mode="nearest", seed=seed),
    ], name="augmentation")


def with_augmentation(network: keras.Model, seed: int = 42) -> keras.Model:
    """The training model: augmentation layers, then `network` (sharing its weights)."""
    inputs = keras.Input(shape=network.input_shape[1:], name=features.PIXELS_KEY)
    return keras.Model(inputs, network(augmentation(seed)(inputs)), name=f"{network.name}_training")


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


BUILDERS: Dict[str, Callable[..., keras.Model]] = {"dcnn": build_dcnn}


def build(name: str, num_classes: int) -> keras.Model:
    """The network registered as `name`, for `num_classes` classes."""
    if name not in BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(sorted(BUILDERS))}")
    return BUILDERS[name](INPUT_SHAPE, num_classes)


def compile_model(model: keras.Model, learning_rate: float) -> keras.Model:
    """Nadam + categorical cross-entropy + accuracy, the seed's recipe."""
    model.compile(optimizer=keras.optimizers.Nadam(learning_rate=learning_rate),
                  loss=keras.losses.CategoricalCrossentropy(),
                  metrics=["accuracy"])
    return model
