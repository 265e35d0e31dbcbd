"""Model builders: output shapes, parameter counts, the training wrapper."""
import gc
import logging

import keras
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


FACES = np.random.default_rng(3).random((6, 48, 48, 1)).astype("float32")


def draws(**values):
    """`RandomFaceTransform.draw` output with the named columns set, the others 0."""
    columns = ("flip", "angle", "shift_x", "shift_y", "zoom")
    table = np.zeros((len(FACES), 5), "float32")
    for name, value in values.items():
        table[:, columns.index(name)] = value
    return table


def test_augmentation_moves_faces_as_its_draws_say():
    layer = model_lib.RandomFaceTransform(rotation=0.25, shift=0.25, zoom=0.5, seed=1)
    moved = lambda **values: np.asarray(layer.transform(FACES, draws(**values)))
    np.testing.assert_allclose(moved(), FACES, atol=1e-6)                    # all zero: the identity
    np.testing.assert_allclose(moved(flip=-0.5), FACES[:, :, ::-1], atol=1e-6)
    # shift 0.25 * 0.5 of 48 pixels = 6: output column c shows source column c + 6, and the
    # last 6 columns repeat the edge ('nearest' fill)
    shifted = moved(shift_x=0.5)
    np.testing.assert_allclose(shifted[:, :, :42], FACES[:, :, 6:], atol=1e-5)
    np.testing.assert_allclose(shifted[:, :, 42:], np.repeat(FACES[:, :, 47:], 6, axis=2), atol=1e-5)
    np.testing.assert_allclose(moved(shift_y=-0.5)[:, 6:], FACES[:, :42], atol=1e-5)
    # a quarter turn (0.25 * 1.0 of a full turn) of a square face is a transpose and flip
    np.testing.assert_allclose(moved(angle=1.0), np.rot90(FACES, k=1, axes=(1, 2)), atol=1e-4)
    # zoom 1 - 0.5: each output pixel samples half as far from the centre (23.5), so on a
    # left-to-right ramp column c shows the ramp at 23.5 + (c - 23.5) / 2 (bilinear is exact)
    ramp = np.broadcast_to(np.arange(48, dtype="float32")[None, None, :, None], FACES.shape)
    zoomed = np.asarray(layer.transform(np.ascontiguousarray(ramp), draws(zoom=-1.0)))
    np.testing.assert_allclose(zoomed[0, 20], 23.5 + (np.arange(48)[:, None] - 23.5) / 2, atol=1e-4)


def test_test_time_views_are_the_face_its_mirror_and_magnified_centres():
    views = model_lib.TEST_TIME_VIEWS
    assert views["flip"] == (model_lib.View(), model_lib.View(mirror=True))
    assert len(set(views["multiview"])) == 8 and set(views["flip"]) <= set(views["multiview"])
    np.testing.assert_array_equal(np.asarray(model_lib.view_of(FACES, model_lib.View())), FACES)
    np.testing.assert_array_equal(np.asarray(model_lib.view_of(FACES, model_lib.View(mirror=True))),
                                  FACES[:, :, ::-1])
    # zoom 0.9 on a left-to-right ramp: column c shows the ramp at 23.5 + 0.9 (c - 23.5), so
    # the outer 2.35 pixels on each side are cut off; mirrored, the ramp runs backwards
    ramp = np.broadcast_to(np.arange(48, dtype=np.uint8)[None, None, :, None], (2, 48, 48, 1))
    expected = 23.5 + 0.9 * (np.arange(48) - 23.5)
    zoomed = np.asarray(model_lib.view_of(ramp, model_lib.View(zoom=0.9)))
    assert zoomed.dtype == np.float32
    np.testing.assert_allclose(zoomed[1, 7, :, 0], expected, atol=1e-4)
    np.testing.assert_allclose(np.asarray(model_lib.view_of(ramp, model_lib.View(True, 0.9)))[0, 40, :, 0],
                               expected[::-1], atol=1e-4)
    with pytest.raises(ValueError, match="zoom must be in"):
        model_lib.view_of(FACES, model_lib.View(zoom=2.0))
    # every view is the training augmentation's own map: RandomFaceTransform with the draws
    # that stand for it (zoom 1 + 0.5 x draw), on random faces and on a non-square crop
    layer = model_lib.RandomFaceTransform(rotation=0.0, shift=0.0, zoom=0.5)
    crop = np.random.default_rng(5).integers(0, 256, (2, 30, 41, 1)).astype(np.uint8)
    for view in (*views["multiview"], model_lib.View(True, 1.3), model_lib.View(False, 0.6)):
        flip = -1.0 if view.mirror else 1.0
        for images in (FACES, crop):
            table = np.tile(np.float32([[flip, 0, 0, 0, (view.zoom - 1) / 0.5]]), (len(images), 1))
            np.testing.assert_allclose(model_lib.view_of(images, view),
                                       np.asarray(layer.transform(images, table)), rtol=1e-5, atol=1e-4)
            # the same map with the backend's gather, as the exported model's views use it
            tensor = keras.ops.convert_to_tensor(images.astype(np.float32))
            np.testing.assert_allclose(keras.ops.convert_to_numpy(model_lib.view_of(tensor, view, take=keras.ops.take)),
                                       model_lib.view_of(images, view), rtol=1e-6, atol=1e-5)


def test_augmentation_combines_its_transforms_as_one_affine_map():
    from scipy import ndimage
    layer = model_lib.RandomFaceTransform(rotation=0.1, shift=0.2, zoom=0.3)
    table = np.random.default_rng(4).uniform(-1, 1, (len(FACES), 5)).astype("float32")
    moved = np.asarray(layer.transform(FACES, table))
    rows, cols = np.mgrid[0:48, 0:48].astype("float64") - 23.5
    for face, out, (flip, angle, shift_x, shift_y, zoom) in zip(FACES, moved, table):
        x, turn, scale = cols * (-1 if flip < 0 else 1), angle * 0.1 * 2 * np.pi, 1 + zoom * 0.3
        source_x = (np.cos(turn) * x - np.sin(turn) * rows) * scale + shift_x * 0.2 * 48 + 23.5
        source_y = (np.sin(turn) * x + np.cos(turn) * rows) * scale + shift_y * 0.2 * 48 + 23.5
        expected = ndimage.map_coordinates(face[..., 0], [source_y, source_x], order=1, mode="nearest")
        np.testing.assert_allclose(out[..., 0], expected, atol=1e-4)


def test_augmentation_interpolates_integer_faces_as_floats():
    ramp = np.broadcast_to(np.arange(48, dtype="uint8")[None, None, :, None], (1, 48, 48, 1))
    layer = model_lib.RandomFaceTransform(shift=0.25)
    half_pixel = np.asarray(layer.transform(np.ascontiguousarray(ramp), draws(shift_x=0.5 / 12)[:1]))
    np.testing.assert_allclose(half_pixel[0, 0, :47, 0], np.arange(47) + 0.5, atol=1e-4)


def test_augmentation_is_the_identity_at_inference_and_random_in_training():
    layer = model_lib.augmentation(seed=42)
    np.testing.assert_array_equal(np.asarray(layer(FACES, training=False)), FACES)
    first, second = (np.asarray(layer(FACES, training=True)) for _ in range(2))
    assert not np.allclose(first, FACES) and not np.allclose(first, second)
    assert 0.0 <= first.min() and first.max() <= 1.0   # bilinear: no pixel outside the face's range
    again = model_lib.augmentation(seed=42)            # the same seed draws the same transforms
    np.testing.assert_allclose(np.asarray(again(FACES, training=True)), first, atol=1e-6)


def test_augmentation_draws_each_transform_independently():
    table = np.asarray(model_lib.augmentation(seed=42).draw(2048))
    assert 0.45 < (table[:, 0] < 0).mean() < 0.55                 # about half the faces flipped
    assert np.abs(np.corrcoef(table.T) - np.eye(5)).max() < 0.1   # flip, angle, shifts, zoom apart
    assert table.min() >= -1 and table.max() <= 1


def test_augmentation_rejects_out_of_range_settings():
    with pytest.raises(ValueError, match="rotation must be in"):
        model_lib.RandomFaceTransform(rotation=0.7)
    with pytest.raises(ValueError, match="shift=1.5"):
        model_lib.RandomFaceTransform(shift=1.5)


def test_random_erasing_fills_the_rectangle_its_draws_say():
    layer = model_lib.RandomErasing(probability=0.5, area=(0.25, 0.25), aspect=(1.0, 1.0))
    # erase (0.1 < 0.5), a quarter of the face as a 24 x 24 square, at top 0.5 * 24 = 12 and
    # left 0, grey 0.75; the second face's draw (0.9) keeps it whole
    table = np.array([[0.1, 0.0, 0.0, 0.5, 0.0, 0.75], [0.9, 0.0, 0.0, 0.5, 0.0, 0.75]], "float32")
    erased = np.asarray(layer.erase(FACES[:2], table))
    expected = FACES[0].copy()
    expected[12:36, 0:24] = 0.75
    np.testing.assert_allclose(erased[0], expected, atol=1e-6)
    np.testing.assert_array_equal(erased[1], FACES[1])


def test_random_erasing_is_the_identity_at_inference_and_covers_its_area_in_training():
    layer = model_lib.RandomErasing(probability=1.0, area=(0.02, 0.4), seed=7)
    np.testing.assert_array_equal(np.asarray(layer(FACES, training=False)), FACES)
    many = np.repeat(FACES[:1], 512, axis=0)
    changed = (np.abs(np.asarray(layer(many, training=True)) - many) > 1e-6).mean(axis=(1, 2, 3))
    # every face loses one rectangle of 2-40% of its pixels (a little less where the random
    # grey lands on the pixel's own value, a little more or less from whole-pixel rounding)
    assert changed.min() > 0.005 and changed.max() < 0.45
    assert 0.15 < changed.mean() < 0.25
    none = model_lib.RandomErasing(probability=0.0)
    np.testing.assert_array_equal(np.asarray(none(FACES, training=True)), FACES)
    with pytest.raises(ValueError, match="probability must be in"):
        model_lib.RandomErasing(probability=1.5)


def test_training_model_adds_random_erasing_only_when_asked():
    network = model_lib.build("compact", 7)
    names = lambda config: [layer.name for layer in model_lib.training_model(network, config).layers]
    assert "random_erasing" not in names(TrainingConfig(model="compact"))
    assert "random_erasing" in names(TrainingConfig(model="compact", random_erasing=0.5))
    with pytest.raises(ValueError, match="random_erasing must be in"):
        TrainingConfig(random_erasing=2.0)


def test_camera_distortions_are_the_ones_their_draws_say():
    layer = model_lib.RandomCamera(probability=0.5, exposure=0.4, contrast=0.5, noise=0.1, blur=1.0)
    noise = np.random.default_rng(4).standard_normal(FACES[:4].shape).astype("float32")
    never = [0.9, 0, 0, 0.9, 0, 0.9, 0, 0.9, 0]
    table = np.array([
        [0.1, 1.0, 0.2, 0.9, 0, 0.9, 0, 0.9, 0],      # darker by the whole range: x 0.4
        [0.1, 0.5, 0.7, 0.9, 0, 0.9, 0, 0.9, 0],      # brighter, half the range: 1 - (1 - x) 0.7
        [0.9, 0, 0, 0.1, 1.0, 0.9, 0, 0.1, 0.5],      # contrast x 0.5 about the mean, noise sigma 0.05
        never], "float32")
    seen = np.asarray(layer.distort(FACES[:4], table, noise))
    np.testing.assert_allclose(seen[0], FACES[0] * 0.4, atol=1e-6)
    np.testing.assert_allclose(seen[1], 1 - (1 - FACES[1]) * 0.7, atol=1e-6)
    mean = FACES[2].mean()
    np.testing.assert_allclose(seen[2], np.clip(mean + (FACES[2] - mean) * 0.5 + 0.05 * noise[2], 0, 1), atol=1e-5)
    np.testing.assert_allclose(seen[3], FACES[3], atol=1e-6)
    # blur at full weight: twice the 3x3 binomial, edges mirrored; a constant face stays constant
    flat = np.full((1, 48, 48, 1), 0.3, "float32")
    blurred = np.asarray(layer.distort(flat, np.array([[0.9, 0, 0, 0.9, 0, 0.1, 1.0, 0.9, 0]], "float32"),
                                       np.zeros_like(flat)))
    np.testing.assert_allclose(blurred, flat, atol=1e-6)
    sharp = np.zeros((1, 48, 48, 1), "float32")
    sharp[0, 24, 24] = 1.0
    spread = np.asarray(layer.distort(sharp, np.array([[0.9, 0, 0, 0.9, 0, 0.1, 1.0, 0.9, 0]], "float32"),
                                      np.zeros_like(sharp)))[0, :, :, 0]
    taps = np.array([1, 4, 6, 4, 1]) / 16
    np.testing.assert_allclose(spread[22:27, 22:27], np.outer(taps, taps), atol=1e-6)
    assert spread.sum() == pytest.approx(1.0, abs=1e-5)


def test_camera_distortions_are_the_identity_at_inference_and_stay_in_range_in_training():
    layer = model_lib.RandomCamera(probability=1.0, seed=5)
    np.testing.assert_array_equal(np.asarray(layer(FACES, training=False)), FACES)
    seen = np.asarray(layer(np.repeat(FACES[:1], 64, axis=0), training=True))
    assert seen.shape == (64, 48, 48, 1) and seen.min() >= 0 and seen.max() <= 1
    assert (np.abs(seen - FACES[:1]).mean(axis=(1, 2, 3)) > 1e-3).all()   # every face changed
    assert len({float(np.round(face.mean(), 4)) for face in seen}) > 32   # each its own way
    np.testing.assert_array_equal(np.asarray(model_lib.RandomCamera(0.0)(FACES, training=True)), FACES)
    with pytest.raises(ValueError, match="must be in \\[0, 1\\], got probability=1.5"):
        model_lib.RandomCamera(probability=1.5)


def test_training_model_adds_camera_distortions_only_when_asked():
    network = model_lib.build("compact", 7)
    names = lambda config: [layer.name for layer in model_lib.training_model(network, config).layers]
    assert "camera" not in names(TrainingConfig(model="compact"))
    assert names(TrainingConfig(model="compact", camera=0.5, random_erasing=0.5))[1:4] == \
        ["augmentation", "random_erasing", "camera"]
    with pytest.raises(ValueError, match="camera must be in"):
        TrainingConfig(camera=-0.1)


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
from components.trainer import data, model as model_lib, recipe, training
strategy = training.distribution_strategy([d.name for d in tf.config.list_logical_devices("CPU")])
with strategy.scope():
    network = model_lib.build("dcnn", 3)
    model = model_lib.compile_model(model_lib.with_augmentation(network), 1e-3)
x = np.random.default_rng(0).random((16, 48, 48, 1)).astype("float32")
y = np.eye(3, dtype="float32")[np.arange(16) % 3]
epoch = data.EpochNumber()   # the Trainer's input: its order drawn from the epoch number
train = data.training_order(tf.data.Dataset.from_tensor_slices((x, y)), y.sum(axis=0), 42, "none",
                            epoch.variable)
history = model.fit(train.batch(8), epochs=2, verbose=0, callbacks=[epoch, recipe.RandomnessByEpoch()])
assert int(epoch.variable.numpy()) == 1
# Each replica's copy of each random stream (augmentation, dropout), after two epochs.
streams = [[copy.numpy().tolist() for copy in recipe.replica_copies(v)]
           for v in model.variables if v.path.endswith("seed_generator_state")]
layer = model.get_layer("augmentation")
draws = strategy.experimental_local_results(strategy.run(tf.function(lambda: layer.draw(4))))
print(json.dumps({"replicas": strategy.num_replicas_in_sync, "kind": type(strategy).__name__,
                  "loss": history.history["loss"][0], "streams": streams,
                  "draws": [d.numpy().tolist() for d in draws]}))
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
    # The replicas draw their own transforms and dropout masks: the second replica's
    # streams are the first's with another seed, at the same position.
    assert result["streams"]
    for first, second in result["streams"]:
        assert second[0] - first[0] == 1_000_003 and second[1] == first[1] > 0
    first, second = np.array(result["draws"])
    assert first.shape == (4, 5) and not np.allclose(first, second)


def _with_batch_norm_statistics(network, seed=0):
    """`network` with random (not initial) normalisation vectors, so folding has work to do.
    Build `network` after `keras.utils.set_random_seed`: with unseeded random weights a few
    draws give logits large enough that float32 rounding through 21 folded layers moves a
    probability by more than 1e-5."""
    rng = np.random.default_rng(seed)
    for layer in network.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.1, n),
                               rng.normal(0, 0.1, n), rng.uniform(0.5, 1.5, n)])
    return network


@pytest.mark.parametrize("name, folds, left", [("compact_resnet", 21, 0), ("compact", 6, 8), ("dcnn", 0, 7)])
def test_folding_batch_norm_keeps_the_probabilities_and_unfolding_gives_the_weights_back(name, folds, left):
    # compact: the BNs after its separable convolutions stay; dcnn: its BNs follow an ELU.
    keras.utils.set_random_seed(0)
    network = _with_batch_norm_statistics(model_lib.build(name, 7))
    folded = model_lib.fold_batch_norm(network)
    assert len(model_lib.batch_norm_folds(network)) == folds
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers) == left
    assert (folded is network) == (folds == 0)
    faces = np.random.default_rng(1).random((8, 48, 48, 1)).astype("float32")
    np.testing.assert_allclose(folded(faces, training=False), network(faces, training=False), atol=1e-5)
    unfolded = model_lib.unfold_batch_norm(folded, model_lib.build(name, 7))
    for before, after in zip(network.weights, unfolded.weights):
        np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-7, err_msg=before.path)


def test_weights_are_read_back_from_a_saved_model_with_or_without_folded_batch_norm(tmp_path):
    import tensorflow as tf
    from components.trainer import saved_weights

    keras.utils.set_random_seed(0)
    network = _with_batch_norm_statistics(model_lib.build("compact_resnet", 7))
    faces = np.random.default_rng(2).random((4, 48, 48, 1)).astype("float32")
    for layout, exported in (("trained", network), ("folded", model_lib.fold_batch_norm(network))):
        module = tf.Module()
        module.model = exported
        tf.saved_model.save(module, str(tmp_path / layout))
        back = saved_weights.network_from_saved_model(str(tmp_path / layout), "compact_resnet", 7)
        for before, after in zip(network.weights, back.weights):
            np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-7, err_msg=f"{layout}: {before.path}")
        np.testing.assert_allclose(back(faces, training=False), network(faces, training=False), atol=1e-5)
    # The networks that failed to read (both layouts of a resnet18) are dropped quietly: no
    # warning of their unrestored values (a hundred lines) at their deletion or at exit.
    warned = []
    handler = logging.Handler()
    handler.emit = lambda record: warned.append(record.getMessage())
    tf.get_logger().addHandler(handler)
    try:
        with pytest.raises(ValueError, match="do not fit a 'resnet18' network with 7 classes"):
            saved_weights.network_from_saved_model(str(tmp_path / "folded"), "resnet18", 7)
        gc.collect()
    finally:
        tf.get_logger().removeHandler(handler)
    assert not [message for message in warned if "unrestored" in message or "could not be found" in message]
