"""Model builders: output shapes, parameter counts, the training wrapper."""
import numpy as np
import pytest

from components.trainer import model as model_lib
from pipeline.config import TrainingConfig


@pytest.mark.parametrize("num_classes, params", [(7, 2_395_591), (3, 2_395_075)])
def test_dcnn_shapes_and_parameters(num_classes, params):
    # conv 5x5x64 x2, 3x3x128 x2, 3x3x256 x2 (+BN), dense 9216->128 (+BN), 128->C
    network = model_lib.build("dcnn", num_classes)
    assert network.input_shape == (None, 48, 48, 1)
    assert network.output_shape == (None, num_classes)
    assert network.count_params() == params
    probabilities = network.predict(np.random.default_rng(0).random((4, 48, 48, 1)), verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_training_model_shares_weights_with_the_exported_network():
    network = model_lib.build("dcnn", 7)
    training = model_lib.compile_model(model_lib.with_augmentation(network), 1e-3)
    x = np.random.default_rng(1).random((8, 48, 48, 1)).astype("float32")
    y = np.eye(7, dtype="float32")[np.arange(8) % 7]
    before = network.get_layer("out_layer").get_weights()[0].copy()
    training.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert not np.allclose(before, network.get_layer("out_layer").get_weights()[0])
    np.testing.assert_allclose(training.predict(x, verbose=0), network.predict(x, verbose=0), atol=1e-5)


def test_unknown_model_name_is_rejected():
    with pytest.raises(ValueError, match="unknown model 'resnet9'"):
        model_lib.build("resnet9", 7)


def test_training_config_validates():
    with pytest.raises(ValueError, match="unknown emotion"):
        TrainingConfig(classes=("happy", "bored"))
    assert TrainingConfig.from_dict(TrainingConfig(classes=("sad", "happy")).to_dict()).classes == ("sad", "happy")
