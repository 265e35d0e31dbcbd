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


def test_augmentation_draws_each_transform_independently():
    flip, rotation, translation, zoom = model_lib.augmentation(seed=42).layers
    faces = np.zeros((512, 48, 48, 1), "float32")
    flipped = np.asarray(flip.get_random_transformation(faces)["flips"]).reshape(-1)
    angles = np.asarray(rotation.get_random_transformation(faces)["angle"]).reshape(-1)
    shifts = np.asarray(translation.get_random_transformation(faces)["translations"])
    zooms = zoom.get_random_transformation(faces)
    # About half the faces flipped, and rotated either way whether flipped or not.
    assert 0.4 < flipped.mean() < 0.6
    assert (angles[flipped] < 0).mean() == pytest.approx(0.5, abs=0.1)
    assert (angles[~flipped] < 0).mean() == pytest.approx(0.5, abs=0.1)
    for shift in shifts.T:   # and shifted and zoomed independently
        for factor in (zooms["height_zoom"], zooms["width_zoom"]):
            assert abs(np.corrcoef(shift, np.ravel(factor))[0, 1]) < 0.15


def test_unknown_model_name_is_rejected():
    with pytest.raises(ValueError, match="unknown model 'resnet9'"):
        model_lib.build("resnet9", 7)


def test_training_config_validates():
    with pytest.raises(ValueError, match="unknown emotion"):
        TrainingConfig(classes=("happy", "bored"))
    assert TrainingConfig.from_dict(TrainingConfig(classes=("sad", "happy")).to_dict()).classes == ("sad", "happy")


MIRRORED_SCRIPT = """
import json, numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from components.trainer import model as model_lib, training
strategy = training.distribution_strategy([d.name for d in tf.config.list_logical_devices("CPU")])
with strategy.scope():
    network = model_lib.build("dcnn", 3)
    model = model_lib.compile_model(model_lib.with_augmentation(network), 1e-3)
x = np.random.default_rng(0).random((16, 48, 48, 1)).astype("float32")
y = np.eye(3, dtype="float32")[np.arange(16) % 3]
history = model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(8), epochs=1, verbose=0)
print(json.dumps({"replicas": strategy.num_replicas_in_sync, "kind": type(strategy).__name__,
                  "loss": history.history["loss"][0]}))
"""


def test_mirrored_strategy_trains_on_two_logical_cpu_devices():
    import json
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert (result["replicas"], result["kind"]) == (2, "MirroredStrategy")
    assert np.isfinite(result["loss"])
