"""Exports a trained Keras model with the Transform graph as a TF Serving SavedModel.

Signatures (names from pipeline.features):
  serving_default      serialized tf.Example [N] -> probabilities [N, C], label [N]
  predict_image        encoded JPEG/PNG/BMP/GIF bytes [N], any size, grayscale or
                       colour -> probabilities [N, C], label [N]
  transform_features   serialized tf.Example [N] -> transformed features (for TFMA)

Both prediction signatures call the same Transform layer and the same model,
so they agree for the same image. Keras 3 refuses `model.save(signatures=...)`,
hence the tf.Module wrapper.
"""
from typing import Sequence

import keras
import tensorflow as tf
import tensorflow_transform as tft

from pipeline import features


class ServingModule(tf.Module):
    """The model, the Transform layer and the class names, with the signatures."""

    def __init__(self, model: keras.Model, tf_transform_output: tft.TFTransformOutput,
                 classes: Sequence[str]):
        super().__init__(name="fer_serving")
        self.model = model
        self.tft_layer = tf_transform_output.transform_features_layer()
        self.class_names = tf.constant(list(classes))
        raw_spec = tf_transform_output.raw_feature_spec()
        self._raw_spec = raw_spec
        self._image_spec = {features.IMAGE_KEY: raw_spec[features.IMAGE_KEY]}

    def _predict(self, raw_features):
        transformed = self.tft_layer(raw_features)
        probabilities = self.model(transformed[features.PIXELS_KEY], training=False)
        labels = tf.gather(self.class_names, tf.argmax(probabilities, axis=-1))
        return {features.PROBABILITIES_OUTPUT: probabilities, features.LABEL_OUTPUT: labels}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=features.EXAMPLES_INPUT)])
    def serve_examples(self, examples):
        return self._predict(tf.io.parse_example(examples, self._image_spec))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=features.IMAGES_INPUT)])
    def predict_image(self, images):
        return self._predict({features.IMAGE_KEY: tf.reshape(images, [-1, 1])})

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=features.EXAMPLES_INPUT)])
    def transform_features(self, examples):
        return self.tft_layer(tf.io.parse_example(examples, self._raw_spec))

    def signatures(self):
        return {
            features.SERVING_DEFAULT_SIGNATURE: self.serve_examples.get_concrete_function(),
            features.PREDICT_IMAGE_SIGNATURE: self.predict_image.get_concrete_function(),
            features.TRANSFORM_FEATURES_SIGNATURE: self.transform_features.get_concrete_function(),
        }


def export_serving_model(model: keras.Model, tf_transform_output: tft.TFTransformOutput,
                         classes: Sequence[str], export_dir: str) -> str:
    """Writes the SavedModel to `export_dir` and returns it."""
    module = ServingModule(model, tf_transform_output, classes)
    tf.saved_model.save(module, export_dir, signatures=module.signatures())
    return export_dir
