"""The model factory and the recipe: every builder's shape and size, two-phase fine-tuning
on (stand-in) ImageNet weights, checkpoints that resume an interrupted fit, the standalone
trainer on JAX, warm-starting the pipeline from its weights, and vgg16/resnet50 subset
runs through the pipeline (with the Tuner)."""
import dataclasses
import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from components.trainer import model as model_lib, recipe, standalone
from pipeline import features
from pipeline.config import TrainingConfig
from tests.conftest import FER2013, FER2013_TRAIN_COUNTS, run_smoke

SUBSET = ("happy", "sad", "neutral")


@pytest.mark.parametrize("name, params_7, params_3, gflops", [
    ("dcnn", 2_395_591, 2_395_075, 0.991),
    ("vggnet", 10_466_375, 10_462_275, 0.948),
    ("resnet18", 2_810_407, 2_809_379, 0.200),
    ("compact", 58_423, 53_811, 0.0127),
    ("compact_resnet", 705_559, 705_043, 0.0502),
    ("vgg16", 14_847_815, 14_846_787, 1.410),      # 14,714,688 in the no-top VGG16 base
    ("resnet50", 24_114_055, 24_113_027, 0.631),   # 23,587,712 in the no-top ResNet50 base
])
def test_every_builder_maps_a_face_to_class_probabilities(name, params_7, params_3, gflops):
    faces = np.random.default_rng(0).random((2, 48, 48, 1)).astype("float32")
    for classes, params in ((7, params_7), (3, params_3)):
        network = model_lib.build(name, classes)
        assert network.input_shape == (None, 48, 48, 1) and network.output_shape == (None, classes)
        assert network.count_params() == params
        np.testing.assert_allclose(network.predict(faces, verbose=0).sum(axis=1), 1.0, rtol=1e-5)
    assert model_lib.flops_per_image(network) / 1e9 == pytest.approx(gflops, abs=1e-3)


def test_the_configuration_knows_exactly_the_registered_models():
    from pipeline import config
    assert set(config.MODELS) == set(model_lib.BUILDERS) | {"ensemble"}   # exported models as one
    assert set(config.TRANSFER_MODELS) == set(model_lib.TRANSFER_BASES)


def test_missing_pretrained_weights_and_weights_for_a_scratch_model_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.h5"):
        model_lib.build("vgg16", 3, pretrained=str(tmp_path / "nowhere.h5"))
    with pytest.raises(ValueError, match="pretrained weights apply to vgg16, resnet50 only"):
        model_lib.build("dcnn", 3, pretrained=str(tmp_path / "x.h5"))
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TrainingConfig(optimizer="adagrad")


def _faces(split: str, per_class: int):
    x, y, _ = standalone.load_split(str(FER2013), split, SUBSET, per_class)
    return x, np.eye(len(SUBSET), dtype="float32")[y]


def test_vgg16_on_imagenet_weights_trains_its_head_then_fine_tunes_its_top_block(tmp_path):
    if not (FER2013 / "train").is_dir():
        pytest.skip("FER2013 not found")
    # Stand-in "ImageNet" weights (there is no download here): a saved VGG16 base.
    weights = str(tmp_path / "imagenet_vgg16.weights.h5")
    keras.applications.VGG16(include_top=False, weights=None, input_shape=(48, 48, 3)).save_weights(weights)
    network = model_lib.build("vgg16", 3, pretrained=weights)
    base, prefix = model_lib.fine_tuning(network)
    assert prefix == "block5_" and not base.trainable
    config = TrainingConfig(model="vgg16", classes=SUBSET, epochs=4, freeze_epochs=2, batch_size=16,
                            learning_rate=1e-3, fine_tune_lr_factor=0.1, imbalance="none",
                            early_stopping_patience=10, checkpoint_dir=str(tmp_path / "ckpt"))
    assert [(p["name"], p["epochs"]) for p in recipe.phases(config, network)] == [("frozen", 2), ("fine_tune", 2)]
    bottom, top = base.get_layer("block1_conv1"), base.get_layer("block5_conv3")
    before = [bottom.get_weights()[0].copy(), top.get_weights()[0].copy()]
    x, y = _faces("train", 16)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    with pytest.raises(KeyboardInterrupt):  # dies after the first frozen epoch
        recipe.fit(network, network, data, (x[::4], y[::4]), config, str(tmp_path / "run"),
                   checkpoint_dir=config.checkpoint_dir, extra_callbacks=[_Interrupt(after_epoch=0)])
    network = model_lib.build("vgg16", 3, pretrained=weights)
    base = model_lib.fine_tuning(network)[0]
    bottom, top = base.get_layer("block1_conv1"), base.get_layer("block5_conv3")
    epochs, drawn = _EpochLog(), _DrawLog()
    history = recipe.fit(network, network, data, (x[::4], y[::4]), config, str(tmp_path / "run"),
                         checkpoint_dir=config.checkpoint_dir, extra_callbacks=[epochs, drawn])
    # The frozen phase resumed at its second epoch; fine-tuning then ran all of its own,
    # its data orders and random draws going on from the frozen phase's (not repeating them).
    assert epochs.began == [1, 0, 1]
    assert drawn.began == [1, 2, 3]
    assert history["phase"] == ["frozen", "frozen", "fine_tune", "fine_tune"]
    np.testing.assert_array_equal(bottom.get_weights()[0], before[0])      # never unfrozen
    assert not np.allclose(top.get_weights()[0], before[1])                # fine-tuned
    assert float(network.optimizer.learning_rate) == pytest.approx(1e-4)  # the phase-2 rate


class _DrawLog(recipe.ByEpoch):
    def __init__(self):
        super().__init__()
        self.began = []

    def begin(self, epoch):
        self.began.append(epoch)


class _EpochLog(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.began = []

    def on_epoch_begin(self, epoch, logs=None):
        self.began.append(epoch)


class _Interrupt(keras.callbacks.Callback):
    def __init__(self, after_epoch: int):
        super().__init__()
        self.after_epoch = after_epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.after_epoch:
            raise KeyboardInterrupt("power cut")


def test_an_interrupted_fit_resumes_from_its_last_finished_epoch(tmp_path):
    if not (FER2013 / "train").is_dir():
        pytest.skip("FER2013 not found")
    x, y = _faces("train", 12)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(12)
    config = TrainingConfig(model="dcnn", classes=SUBSET, epochs=4, early_stopping_patience=10,
                            imbalance="none", checkpoint_dir=str(tmp_path / "ckpt"))

    def attempt(*extra):
        keras.utils.set_random_seed(1)
        network = model_lib.build("dcnn", len(SUBSET))
        return recipe.fit(network, network, data, (x, y), config, str(tmp_path / "run"),
                          checkpoint_dir=config.checkpoint_dir, extra_callbacks=extra)

    with pytest.raises(KeyboardInterrupt):
        attempt(_Interrupt(after_epoch=1))  # dies after its second epoch
    epochs = _EpochLog()
    history = attempt(epochs)
    assert epochs.began == [2, 3]           # only the epochs the first attempt did not finish
    assert len(history["loss"]) == 4 and history["phase"] == ["train"] * 4
    # Another configuration (or other data) never continues this training: it starts afresh.
    network, epochs = model_lib.build("dcnn", 3), _EpochLog()
    other = TrainingConfig(model="dcnn", classes=SUBSET, epochs=2, imbalance="none", learning_rate=5e-4)
    recipe.fit(network, network, data, (x, y), other, str(tmp_path / "run"),
               checkpoint_dir=config.checkpoint_dir, extra_callbacks=[epochs])
    assert epochs.began == [0, 1] and len(os.listdir(config.checkpoint_dir)) == 2


class _Snapshots(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append([w.copy() for w in self.model.get_weights()])


class _BlindValidation(keras.callbacks.Callback):
    """Validates with all weights zeroed (every score a tie: class 0 for every input),
    then puts the trained weights back: those epochs score 0 on class-1 data."""

    def on_test_begin(self, logs=None):
        self._kept = self.model.get_weights()
        self.model.set_weights([np.zeros_like(w) for w in self._kept])

    def on_test_end(self, logs=None):
        self.model.set_weights(self._kept)


def test_a_stopped_fit_given_more_epochs_goes_on_and_ends_with_its_best_epoch_before_the_stop(tmp_path):
    # All inputs zero and all labels class 1: the first step makes class 1 win, so every
    # honestly validated epoch scores 1.0; the first one is the best (ties do not replace it).
    x, y = np.zeros((8, 4), "float32"), np.eye(2, dtype="float32")[[1] * 8]
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    network = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    kept = str(tmp_path / "ckpt")

    def attempt(epochs, *extra):
        config = TrainingConfig(model="compact", classes=["happy", "sad"], epochs=epochs,
                                early_stopping_patience=10, imbalance="none")
        return recipe.fit(network, network, data, (x, y), config, str(tmp_path / "run"),
                          checkpoint_dir=kept, extra_callbacks=extra)

    snapshots = _Snapshots()
    with pytest.raises(KeyboardInterrupt):
        attempt(4, snapshots, _Interrupt(after_epoch=1))
    # Asked for 6 epochs instead of 4, the same training goes on at its third epoch; its
    # later epochs score worse, so it ends with the weights of its first epoch, from before
    # the interruption (EarlyStopping alone would keep the best epoch after it).
    epochs = _EpochLog()
    history = attempt(6, epochs, _BlindValidation())
    assert epochs.began == [2, 3, 4, 5] and len(os.listdir(kept)) == 1
    assert history["val_accuracy"] == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    for final, first, second in zip(network.get_weights(), *snapshots.weights):
        np.testing.assert_allclose(final, first)
    assert not np.allclose(snapshots.weights[0][1], snapshots.weights[1][1])  # it did train on


def test_the_cosine_schedule_runs_its_curve_once_over_the_epochs_and_a_resumed_fit_continues_it(tmp_path):
    x, y = np.zeros((8, 4), "float32"), np.eye(2, dtype="float32")[[1] * 8]
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    kept = str(tmp_path / "ckpt")

    def attempt(config, *extra):
        network = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
        return recipe.fit(network, network, data, (x, y), config, str(tmp_path / "run"),
                          checkpoint_dir=kept, extra_callbacks=extra)

    config = TrainingConfig(model="compact", classes=["happy", "sad"], epochs=4, learning_rate=0.01,
                            lr_schedule="cosine", early_stopping_patience=10, imbalance="none")
    with pytest.raises(KeyboardInterrupt):
        attempt(config, _Interrupt(after_epoch=1))
    epochs = _EpochLog()
    history = attempt(config, epochs)
    assert epochs.began == [2, 3]
    # 0.01 * (1 + cos(pi * epoch / 4)) / 2, the resumed epochs included: the curve goes on.
    np.testing.assert_allclose(history["learning_rate"], [0.01, 0.0085355, 0.005, 0.0014645], rtol=1e-4)
    # Under the cosine the epoch count shapes every epoch, so 6 epochs are another training
    # (under the plateau schedule they would continue this one: see the test above).
    epochs = _EpochLog()
    attempt(dataclasses.replace(config, epochs=6), epochs)
    assert epochs.began == list(range(6)) and len(os.listdir(kept)) == 2
    assert recipe.cosine_learning_rate(0.01, 4, 4) == 0.0
    with pytest.raises(ValueError, match="lr_schedule must be one of plateau, cosine"):
        TrainingConfig(lr_schedule="step")


def test_a_stopped_cosine_run_carried_over_to_another_epoch_count_goes_on_along_the_new_curve(tmp_path):
    x, y = np.zeros((8, 4), "float32"), np.eye(2, dtype="float32")[[1] * 8]
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)

    def attempt(kept, config, *extra, carry=True):
        network = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
        if config.average_from:   # after the interruptions: fit runs it before the checkpoints
            extra += (recipe.WeightAverage(network, config.average_from),)
        if carry:   # as the standalone trainer's --carry-over does, before the fit
            recipe.carry_over(recipe.training_dir(str(tmp_path / kept), config, "faces"), config, "faces")
        return recipe.fit(network, network, data, (x, y), config, str(tmp_path / "run"),
                          checkpoint_dir=str(tmp_path / kept), extra_callbacks=extra, data_id="faces")

    config = TrainingConfig(model="compact", classes=["happy", "sad"], epochs=8, learning_rate=0.01,
                            lr_schedule="cosine", early_stopping_patience=10, imbalance="none",
                            average_from=7)
    with pytest.raises(ValueError, match="no earlier trainings in .* differ from this one only in "
                                         "epochs or average_from"):
        attempt("a", config)   # nothing to carry over yet
    with pytest.raises(KeyboardInterrupt):
        attempt("a", config, _Interrupt(after_epoch=1), carry=False)
    # Cut to 4 epochs, the weights averaged from the 3rd: epochs 3 and 4 follow the 4-epoch curve.
    shorter, epochs = dataclasses.replace(config, epochs=4, average_from=3), _EpochLog()
    history = attempt("a", shorter, epochs)
    assert epochs.began == [2, 3]
    np.testing.assert_allclose(history["learning_rate"],   # the 8-epoch curve, then the 4-epoch one
                               [0.01, 0.0096194, 0.005, 0.0014645], rtol=1e-4)
    with np.load(os.path.join(tmp_path, "a", recipe.checkpoint_key(shorter, "faces"),
                              "train.average.npz")) as average:
        assert (int(average["count"]), int(average["last"])) == (2, 4)
    assert len(os.listdir(tmp_path / "a")) == 2   # the 8-epoch run is left as it was
    epochs = _EpochLog()
    attempt("a", shorter, epochs)   # the same command again: its own training, finished
    assert epochs.began == []
    with pytest.raises(ValueError, match="2 earlier trainings .* remove all but the one to go on from"):
        attempt("a", dataclasses.replace(shorter, epochs=6))
    shutil.rmtree(tmp_path / "a" / recipe.checkpoint_key(config, "faces"))
    with pytest.raises(ValueError, match="that training has finished .4 epochs.; train on from its "
                                         "weights with a warm start"):
        attempt("a", dataclasses.replace(shorter, epochs=6))
    # A weight average goes on only from the epoch it began at, and none is begun in retrospect.
    with pytest.raises(KeyboardInterrupt):
        attempt("b", dataclasses.replace(config, average_from=1), _Interrupt(after_epoch=1), carry=False)
    with pytest.raises(ValueError, match=r"holds epochs 1 to 2; average_from 2 cannot go on from it "
                                         r"\(use 1, or 0 for none\)"):
        attempt("b", dataclasses.replace(config, epochs=6, average_from=2))
    epochs, unaveraged = _EpochLog(), dataclasses.replace(config, epochs=4, average_from=0)
    attempt("b", unaveraged, epochs)   # averaging turned off: always possible, no average kept
    assert epochs.began == [2, 3] and not os.path.exists(
        tmp_path / "b" / recipe.checkpoint_key(unaveraged, "faces") / "train.average.npz")
    with pytest.raises(KeyboardInterrupt):   # (a directory name glob would misread)
        attempt("c[1]", config, _Interrupt(after_epoch=1), carry=False)
    with pytest.raises(ValueError, match="its 2 finished epochs hold no weight average"):
        attempt("c[1]", dataclasses.replace(config, epochs=6, average_from=2))
    stopped = tmp_path / "c[1]" / recipe.checkpoint_key(config, "faces")
    shutil.copy(stopped / f"train.{recipe.HISTORY_CSV}", stopped / f"frozen.{recipe.HISTORY_CSV}")
    with pytest.raises(ValueError, match=r"a training in phases \(frozen, train\) is not carried over"):
        attempt("c[1]", dataclasses.replace(config, epochs=6))


class _FirstBatchOfEachEpoch(keras.callbacks.Callback):
    """What an epoch will draw: its random streams' positions and its data order."""

    def __init__(self, data):
        super().__init__()
        self.data, self.seen = data, {}

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0:
            streams = [keras.ops.convert_to_numpy(v).tolist() for v in self.model.variables
                       if v.path.endswith("seed_generator_state")]
            self.seen[len(self.seen)] = (streams, self.data.order.tolist())


def test_a_resumed_training_draws_the_random_numbers_an_uninterrupted_one_would(tmp_path):
    x = np.random.default_rng(0).random((16, 48, 48, 1)).astype("float32")
    y = np.eye(3, dtype="float32")[np.arange(16) % 3]
    config = TrainingConfig(model="compact", classes=SUBSET, epochs=3, imbalance="none")

    def run(folder, *extra):   # a fresh process: new model, new streams, new data
        network = keras.Sequential([keras.Input((48, 48, 1)), keras.layers.Flatten(),
                                    keras.layers.Dropout(0.5, seed=7), keras.layers.Dense(3, activation="softmax")])
        model = model_lib.with_augmentation(network, seed=42)
        data = standalone._Shuffled(x, y, 8, seed=42)
        log = _FirstBatchOfEachEpoch(data)
        recipe.fit(model, network, data, (x, y), config, str(tmp_path / folder),
                   extra_callbacks=[standalone.ShuffleEachEpoch(data), log, *extra])
        return log.seen

    straight = run("straight")
    with pytest.raises(KeyboardInterrupt):
        run("resumed", _Interrupt(after_epoch=0))
    resumed = run("resumed")            # epochs 2 and 3 only
    assert len(straight[0][0]) == 2     # the augmentation's stream and the dropout's
    assert resumed[0] == straight[1] and resumed[1] == straight[2]
    assert straight[1] != straight[2] and straight[0][1] != straight[1][1]   # new draws, new order each epoch


def test_the_training_benchmark_times_a_model_with_and_without_its_augmentation(fer2013_root, tmp_path):
    from components.trainer import benchmark
    out = tmp_path / "trainer.json"
    assert benchmark.main(["--data", str(fer2013_root), "--models", "compact", "--steps", "2",
                           "--batch-size", "16", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    row, = result["models"]
    assert result["backend"] == keras.backend.backend() and row["parameters"] == 58423
    assert row["train_images_per_second"] > 0 and row["train_images_per_second_without_augmentation"] > 0
    assert row["seconds_per_epoch"] == round(benchmark.EPOCH_IMAGES / row["train_images_per_second"])


def test_curves_are_written_as_png(tmp_path):
    path = str(tmp_path / "curves.png")
    recipe.write_curves({"loss": [1.2, 0.9, 0.8], "val_loss": [1.3, 1.0, 1.1], "accuracy": [.3, .5, .6],
                         "val_accuracy": [.3, .45, .5], "phase": ["frozen", "fine_tune", "fine_tune"]}, path)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


STANDALONE = """
import json, runpy, sys

class NoTensorFlow:  # as on the GPU machine: TensorFlow cannot be imported at all
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tf_keras"):
            raise ModuleNotFoundError(f"No module named {name!r}")

sys.meta_path.insert(0, NoTensorFlow())
sys.argv = ["standalone"] + sys.argv[1:]
try:
    runpy.run_module("components.trainer.standalone", run_name="__main__")
except SystemExit as e:
    assert e.code == 0, e.code
import keras
print(json.dumps({"backend": keras.backend.backend()}))
"""


def test_standalone_trainer_on_jax_and_the_pipeline_warm_started_from_its_weights(fer2013_root, tmp_path):
    out = tmp_path / "gpu"
    teacher = str(tmp_path / "teacher.weights.h5")   # distilled from, as a compact model is
    model_lib.build("compact", len(SUBSET)).save_weights(teacher)
    done = subprocess.run(
        [sys.executable, "-c", STANDALONE, "--data", str(fer2013_root), "--output", str(out),
         "--model", "dcnn", "--classes", ",".join(SUBSET), "--epochs", "1", "--per-class", "30",
         "--teacher-model", "compact", "--teacher-weights", teacher, "--teacher-flip",
         "--teacher-online", "--imbalance", "none",   # the teacher inside the JAX training step
         "--camera", "0.5"],                            # and the camera distortions
        capture_output=True, text=True, timeout=900, env=dict(os.environ, KERAS_BACKEND="jax"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"backend": "jax"}  # and no TensorFlow
    result = json.loads((out / standalone.RESULT_JSON).read_text())
    assert (result["backend"], result["classes"], result["epochs_run"]) == ("jax", list(SUBSET), 1)
    assert result["finished"] is True   # not stopped by a time budget: scripts/reproduce.sh skips it
    assert result["test"]["examples"] == 90 and 0.0 <= result["test"]["accuracy"] <= 1.0
    assert result["teacher"] == {"model": "compact", "weights": teacher, "weight": 0.7,
                                 "temperature": 2.0, "views": "flip", "online": True}
    assert result["invocation_epochs"] == 1 and result["training_seconds"] == pytest.approx(
        result["history"][recipe.EPOCH_SECONDS][0], abs=0.1)
    assert (out / recipe.CURVES_PNG).is_file()

    # The pipeline exports those weights (0 epochs: nothing retrained) with its own signatures.
    weights = str(out / result["weights"])
    summary, _ = run_smoke(fer2013_root, tmp_path / "run", "--classes", ",".join(SUBSET),
                           "--warm-start", weights, "--epochs", "0", "--min-accuracy", "0")
    assert summary["pushed"]
    served = tf.saved_model.load(summary["pushed_path"]).signatures[features.PREDICT_IMAGE_SIGNATURE]
    paths = [p for e in SUBSET for p in sorted((fer2013_root / "test" / e).iterdir())[:3]]
    got = served(**{features.IMAGES_INPUT: tf.constant([p.read_bytes() for p in paths])})
    network = model_lib.build("dcnn", len(SUBSET))
    network.load_weights(weights)
    x = np.stack([standalone.load_split(str(fer2013_root), "test", [e], 3)[0] for e in SUBSET]).reshape(-1, 48, 48, 1)
    np.testing.assert_allclose(got[features.PROBABILITIES_OUTPUT].numpy(), network.predict(x, verbose=0), atol=1e-4)
    assert {l.decode() for l in got[features.LABEL_OUTPUT].numpy()} <= set(SUBSET)


def test_vgg16_subset_with_the_tuner_and_resnet50_subset_run_through_the_pipeline(fer2013_root, tmp_path):
    tuning = tmp_path / "tuning.yaml"
    tuning.write_text("max_trials: 2\nepochs: 1\nbatch_sizes: [16, 32]\nlearning_rates: [0.001, 0.0003]\n"
                      "optimizers: [adam, sgd]\n")
    summary, stdout = run_smoke(fer2013_root, tmp_path / "vgg16", "--model", "vgg16", "--epochs", "1",
                                "--classes", ",".join(SUBSET), "--tuning-config", str(tuning),
                                "--min-accuracy", "0")
    assert summary["components"]["Tuner"]["state"] == "COMPLETE"
    [best] = _outputs(tmp_path / "vgg16", "Tuner", "best_hyperparameters")
    from components.trainer.tuner import describe
    values = describe(os.path.join(best, "best_hyperparameters.txt"))
    assert values["batch_size"] in (16, 32) and values["optimizer"] in ("adam", "sgd")
    [run_dir] = _outputs(tmp_path / "vgg16", "Trainer", "model_run")
    used = json.load(open(os.path.join(run_dir, "training_config.json")))
    assert {k: used[k] for k in ("batch_size", "learning_rate", "optimizer")} == {
        k: values[k] for k in ("batch_size", "learning_rate", "optimizer")}
    assert os.path.isfile(os.path.join(run_dir, recipe.CURVES_PNG))
    _assert_subset_model(summary)

    summary, _ = run_smoke(fer2013_root, tmp_path / "resnet50", "--model", "resnet50", "--epochs", "1",
                           "--classes", ",".join(SUBSET), "--min-accuracy", "0")
    assert "Tuner" not in summary["components"]
    _assert_subset_model(summary)


def _outputs(output, component: str, key: str):
    import glob
    return sorted(glob.glob(os.path.join(output, "tfx", component, key, "*")))


def _assert_subset_model(summary):
    assert summary["pushed"] and summary["pushed_path"].split(os.sep)[-2].endswith("-happy-sad-neutral")
    served = tf.saved_model.load(summary["pushed_path"]).signatures[features.PREDICT_IMAGE_SIGNATURE]
    face = sorted((FER2013 / "test" / "angry").iterdir())[0].read_bytes()  # an emotion it does not know
    out = served(**{features.IMAGES_INPUT: tf.constant([face])})
    assert out[features.PROBABILITIES_OUTPUT].shape == (1, 3)
    assert out[features.LABEL_OUTPUT].numpy()[0].decode() in SUBSET


@pytest.mark.parametrize("extra, config_text, message", [
    (["--epochs", "0"], None, "epochs must be >= 1 (0 only with a warm start), got 0"),
    ([], "learning_rate: 1e-3\n", "learning_rate must be a number, got '1e-3'"),
    ([], "model: vgg16\n", "cannot set model"),
    (["--optimizer", "adagrad"], None, "invalid choice: 'adagrad'"),
    (["--label-smoothing", "1.5"], None, "label_smoothing must be in [0, 1)"),
    ([], "optimiser: sgd\n", "unknown training key(s) ['optimiser']"),
    (["--prior-correction", "-1"], None, "prior_correction must be in [0, 2], got -1.0"),
    (["--calibration-temperature", "0.01"], None,
     "calibration_temperature must be 0 (fit it) or in [0.05, 20], got 0.01"),
    (["--average-from", "-2"], None, "average_from must be >= 0 (0: off), got -2"),
    (["--warm-start", "gone.weights.h5", "--epochs", "0"], None, "warm start: no weights file at "),
    (["--model", "vgg16", "--pretrained-weights", "gone.h5", "--warm-start", "w.weights.h5"], None,
     "--pretrained-weights: no such file: "),
])
def test_bad_training_settings_give_one_line_and_exit_2(extra, config_text, message, tmp_path, capsys,
                                                        monkeypatch):
    from pipeline import cli
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    args = ["run", "--data", "data", "--output", "out", *extra]
    if config_text:
        (tmp_path / "training.yaml").write_text(config_text)
        args += ["--training-config", "training.yaml"]
    try:
        code = cli.main(args)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("model, classes", [("dcnn", ""), ("compact", "happy,sad,neutral")])
def test_warm_start_weights_of_another_model_or_classes_are_refused_before_any_data_is_read(
        model, classes, tmp_path, capsys):
    from pipeline import cli
    weights = str(tmp_path / "compact.weights.h5")
    model_lib.build("compact", 7).save_weights(weights)
    args = ["run", "--data", str(tmp_path / "no-data"), "--output", str(tmp_path / "out"), "--model", model,
            "--warm-start", weights, "--epochs", "0"] + (["--classes", classes] if classes else [])
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"fer-pipeline: error: warm start: cannot load {weights} into {model} with "
                          f"{len(classes.split(',')) if classes else 7} classes (the same --model and "
                          "--classes as the weights were trained with?): ")
    assert len(err.splitlines()) == 1 and len(err) < 600 and not (tmp_path / "out").exists()


def test_the_prior_correction_favours_rare_classes_in_proportion_to_its_strength():
    counts = FER2013_TRAIN_COUNTS
    assert np.allclose(recipe.prior_log_bias(counts, 0.0), 0.0)
    assert np.allclose(recipe.prior_log_bias([10, 10, 10], 1.0), 0.0)  # balanced: nothing to correct
    half, full = recipe.prior_log_bias(counts, 0.5), recipe.prior_log_bias(counts, 1.0)
    np.testing.assert_allclose(full, 2 * half, rtol=1e-6)
    assert np.argmax(full) == 1 and np.argmin(full) == 3  # disgust up most, happy down most
    # Exactly the log of the inverse prior up to a constant (which softmax ignores).
    np.testing.assert_allclose(np.diff(full), np.diff(-np.log((np.asarray(counts) + 1.0) / (sum(counts) + 7))),
                               rtol=1e-5)
    assert np.isfinite(recipe.prior_log_bias([0, 5, 100], 1.0)).all()


def test_distillation_targets_mix_labels_with_the_softened_teacher():
    teacher = np.array([[0.8, 0.1, 0.1], [0.2, 0.2, 0.6]], dtype=np.float32)
    targets = standalone.soft_targets(np.array([0, 1]), teacher, weight=0.5, temperature=1.0)
    np.testing.assert_allclose(targets, [[0.9, 0.05, 0.05], [0.1, 0.6, 0.3]], atol=1e-6)
    softer = standalone.soft_targets(np.array([0]), teacher[:1], weight=1.0, temperature=4.0)
    assert softer[0, 0] < 0.8 and softer.sum() == pytest.approx(1.0)   # a higher temperature flattens


def test_an_ensemble_teaches_the_mean_of_its_members_probabilities(tmp_path):
    faces = np.random.default_rng(0).uniform(0, 255, (6, 48, 48, 1)).astype(np.float32)
    paths, alone = [], []
    for seed in (1, 2):
        keras.utils.set_random_seed(seed)
        network = model_lib.build("compact", len(SUBSET))
        paths.append(str(tmp_path / f"member{seed}.weights.h5"))
        network.save_weights(paths[-1])
        alone.append(standalone.probabilities(network, faces, views=model_lib.TEST_TIME_VIEWS["flip"]))
    assert not np.allclose(alone[0], alone[1], atol=1e-4)   # two different members
    pair = standalone.Teacher("compact,compact", ",".join(paths), views="flip")
    assert pair.members() == [("compact", paths[0]), ("compact", paths[1])]
    np.testing.assert_allclose(pair.probabilities(faces, len(SUBSET)), (alone[0] + alone[1]) / 2,
                               atol=1e-5)
    single = standalone.Teacher("compact", paths[0], views="flip")
    np.testing.assert_allclose(single.probabilities(faces, len(SUBSET)), alone[0], atol=1e-5)
    # Any named set of test-time views teaches; the 8 views are not the flip's 2.
    network = model_lib.build("compact", len(SUBSET))
    network.load_weights(paths[0])
    eight = standalone.Teacher("compact", paths[0], views="multiview").probabilities(faces, len(SUBSET))
    np.testing.assert_allclose(
        eight, standalone.probabilities(network, faces, model_lib.TEST_TIME_VIEWS["multiview"]), atol=1e-5)
    assert not np.allclose(eight, alone[0], atol=1e-4)
    with pytest.raises(ValueError, match="teacher views 'sideways' are not one of"):
        standalone.Teacher("compact", paths[0], views="sideways")


def test_an_online_teacher_adds_its_softened_cross_entropy_in_training_only():
    faces = np.random.default_rng(0).uniform(0, 1, (5, 48, 48, 1)).astype(np.float32)
    student = np.random.default_rng(1).dirichlet(np.ones(len(SUBSET)), 5).astype(np.float32)
    keras.utils.set_random_seed(3)
    teacher = model_lib.build("compact", len(SUBSET))
    layer = model_lib.OnlineDistillation([teacher], weight=0.6, temperature=2.0,
                                         views=model_lib.TEST_TIME_VIEWS["flip"])
    assert not teacher.trainable   # frozen: the student alone learns
    out = layer(faces, student, training=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), student)   # passed through
    # The loss of the mixed target `soft_targets` makes, less the labels' share.
    taught = standalone.probabilities(teacher, faces, model_lib.TEST_TIME_VIEWS["flip"])
    softened = standalone.soft_targets(np.zeros(5, np.int64), taught, weight=1.0, temperature=2.0)
    expected = 0.6 * np.mean(-np.sum(softened * np.log(student), axis=1))
    assert [float(loss) for loss in layer.losses] == pytest.approx([expected], rel=1e-4)
    layer(faces, student, training=False)
    assert not layer.losses   # nothing at validation or inference
    with pytest.raises(ValueError, match="weight in \\(0, 1\\]"):
        model_lib.OnlineDistillation([teacher], weight=0.0)


def test_an_online_teacher_on_unaugmented_faces_gives_the_gradient_of_the_precomputed_mixed_targets():
    # What the standalone trainer fits with an online teacher (labels weighed by 1 - weight per
    # face, the teacher's share added by the layer) against the targets `soft_targets` makes
    # from the same teacher's answers for the same faces: one loss, one gradient. (A target of
    # (1 - weight) x one-hot would not do: Keras's cross-entropy assumes targets sum to one.)
    faces = np.random.default_rng(0).uniform(0, 1, (8, 48, 48, 1)).astype(np.float32)
    labels = np.arange(8) % len(SUBSET)
    keras.utils.set_random_seed(4)
    student, teacher = model_lib.build("compact", len(SUBSET)), model_lib.build("compact", len(SUBSET))
    for layer in student.layers:
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0   # the same forward pass twice
    inputs = keras.Input(student.input_shape[1:])
    distillation = model_lib.OnlineDistillation([teacher], weight=0.7, temperature=2.0)
    online = keras.Model(inputs, distillation(inputs, student(inputs)))
    mixed = standalone.soft_targets(labels, standalone.probabilities(teacher, faces), 0.7, 2.0)

    def loss_and_gradient(model, targets, weights=None):
        model_lib.compile_model(model, 1e-3)
        with tf.GradientTape() as tape:
            loss = model.compute_loss(x=faces, y=targets, y_pred=model(faces, training=True),
                                      sample_weight=weights, training=True)
        return float(loss), np.concatenate([g.numpy().ravel()
                                            for g in tape.gradient(loss, student.trainable_weights)])

    loss, gradient = loss_and_gradient(online, np.eye(len(SUBSET), dtype=np.float32)[labels],
                                       np.full(8, 0.3, np.float32))
    expected_loss, expected_gradient = loss_and_gradient(student, mixed)
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    np.testing.assert_allclose(gradient, expected_gradient, atol=1e-5 * np.abs(expected_gradient).max())


def test_standalone_trains_with_an_online_teacher_and_refuses_what_it_cannot_honour(tmp_path, capsys):
    if not (FER2013 / "train").is_dir():
        pytest.skip("FER2013 not found")
    teacher = str(tmp_path / "teacher.weights.h5")
    model_lib.build("compact", len(SUBSET)).save_weights(teacher)
    config = TrainingConfig(model="compact", classes=SUBSET, epochs=1, batch_size=16, imbalance="none")
    result = standalone.train(str(FER2013), str(tmp_path / "online"), config, per_class=12,
                              teacher=standalone.Teacher("compact", teacher, views="flip", online=True))
    assert result["teacher"]["online"] is True and result["epochs_run"] == 1
    assert result["parameters"] == model_lib.build("compact", len(SUBSET)).count_params()  # the student alone
    # Its best weights load into the student network alone.
    model_lib.build("compact", len(SUBSET)).load_weights(str(tmp_path / "online" / result["weights"]))
    base = ["--data", str(FER2013), "--output", str(tmp_path / "refused"), "--classes", ",".join(SUBSET),
            "--teacher-model", "compact", "--teacher-weights", teacher, "--teacher-online"]
    for extra, message in ((["--label-smoothing", "0.1"], "label smoothing (0.1)"),
                           (["--imbalance", "class_weight"], "class weights (--imbalance class_weight)")):
        assert standalone.main(base + extra) == 2
        assert f"an online teacher does not go with {message}" in capsys.readouterr().err
    assert standalone.main(base[:-5] + ["--teacher-online"]) == 2
    assert "--teacher-online needs --teacher-model" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()
    with pytest.raises(ValueError, match="it needs augmentation on"):
        model_lib.training_model(model_lib.build("compact", len(SUBSET)), dataclasses.replace(config, augment=False),
                                 model_lib.OnlineDistillation([model_lib.build("compact", len(SUBSET))]))


def test_a_teacher_with_a_missing_or_unmatched_member_is_refused_by_name(tmp_path):
    weights = tmp_path / "dcnn.weights.h5"
    weights.write_bytes(b"")
    with pytest.raises(ValueError, match=r"2 model\(s\) \(resnet18,dcnn\) but 1 weights"):
        standalone.Teacher("resnet18,dcnn", str(weights)).members()
    with pytest.raises(ValueError, match="'alexnet' is not one of"):
        standalone.Teacher("alexnet", str(weights)).members()
    with pytest.raises(FileNotFoundError, match="nowhere.weights.h5 \\(for resnet18\\) not found"):
        standalone.Teacher("resnet18,dcnn", f"{tmp_path}/nowhere.weights.h5,{weights}").members()
    # The command line says so before reading any data.
    assert standalone.main(["--data", str(tmp_path / "no-data"), "--output", str(tmp_path / "out"),
                            "--teacher-model", "resnet18,dcnn", "--teacher-weights", str(weights)]) == 2
    assert not (tmp_path / "out").exists()


def test_a_history_written_before_a_metric_was_logged_keeps_its_columns_on_resume(tmp_path):
    path = tmp_path / f"train.{recipe.HISTORY_CSV}"
    path.write_text("epoch,accuracy,loss,val_accuracy\n0,0.5,1.2,0.45\n")   # no epoch_seconds
    logger = recipe.HistoryCSV(str(path), append=True)
    logger.on_train_begin()
    logger.on_epoch_end(1, {"accuracy": 0.6, "epoch_seconds": 3.5, "loss": 1.0, "val_accuracy": 0.55})
    logger.on_train_end()
    history = recipe.read_history(str(tmp_path), ["train"])
    assert history["accuracy"] == [0.5, 0.6] and history["val_accuracy"] == [0.45, 0.55]
    assert recipe.EPOCH_SECONDS not in history and recipe.training_seconds(history) is None


def test_the_best_epoch_counts_the_epochs_of_resumed_fits_too(tmp_path):
    # Two fits of one phase: the second (resumed) never beat the first's epoch 2, which
    # Keras's EarlyStopping of the second fit cannot know.
    (tmp_path / f"train.{recipe.HISTORY_CSV}").write_text(
        "epoch,accuracy,loss,val_accuracy\n0,0.5,1.2,0.45\n1,0.6,1.0,0.61\n2,0.62,0.9,nan\n"
        "3,0.63,0.9,0.58\n4,0.64,0.8,0.60\n")
    assert recipe.best_epoch(str(tmp_path), "train") is None   # no best weights saved yet
    (tmp_path / "train.best.weights.h5").write_bytes(b"")
    assert recipe.best_epoch(str(tmp_path), "train") == (2, pytest.approx(0.61))
    assert recipe._best_so_far(str(tmp_path), "train") == pytest.approx(0.61)
    assert recipe.best_epoch(str(tmp_path), "finetune") is None   # another phase's history


def test_the_weight_average_is_the_mean_of_its_epochs_and_a_resumed_fit_continues_it(tmp_path, caplog):
    network = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    path = str(tmp_path / "train.average.npz")

    def averaging(start):
        averager = recipe.WeightAverage(network, start)
        averager.path = path   # as recipe.fit names it
        return averager

    def epoch_ends_with(averager, epoch, value):
        network.set_weights([np.full((2, 1), value, "float32"), np.full((1,), -value, "float32")])
        averager.on_epoch_end(epoch - 1)   # Keras counts epochs from 0

    first = averaging(start=2)
    assert first.apply() == 0   # nothing averaged yet: the network is left as it is
    for epoch, value in ((1, 1.0), (2, 2.0), (3, 4.0)):
        epoch_ends_with(first, epoch, value)
    assert first.state()[:2] == (2, 3)   # epochs 2 and 3, not the first

    resumed = averaging(start=2)        # a new process, the same checkpoint directory
    epoch_ends_with(resumed, 3, 100.0)  # an epoch the average already holds counts once
    epoch_ends_with(resumed, 4, 6.0)
    assert resumed.apply() == 3
    np.testing.assert_allclose(network.get_weights()[0], np.full((2, 1), 4.0))   # (2 + 4 + 6) / 3
    np.testing.assert_allclose(network.get_weights()[1], [-4.0])
    with caplog.at_level("WARNING"):    # an epoch it never got is said, not lost silently
        epoch_ends_with(resumed, 6, 0.0)
    assert "weight average: epochs 5 to 5 are missing from it" in caplog.text
    with pytest.raises(ValueError, match="starts at an epoch >= 1"):
        recipe.WeightAverage(network, 0)


def test_batch_norm_statistics_are_recomputed_as_the_mean_over_the_batches():
    inner = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization(momentum=0.9)])
    network = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3, use_bias=False), inner])
    network.layers[0].set_weights([np.eye(3, dtype="float32")])
    batches = [np.random.default_rng(i).normal(i, 1 + i, (16, 3)).astype("float32") for i in range(3)]
    assert recipe.recompute_batch_norm(network, iter(batches)) == 3
    norm = inner.layers[0]   # found inside the nested model
    np.testing.assert_allclose(norm.moving_mean.numpy(), np.mean([b.mean(axis=0) for b in batches], axis=0),
                               rtol=1e-5)
    np.testing.assert_allclose(norm.moving_variance.numpy(), np.mean([b.var(axis=0) for b in batches], axis=0),
                               rtol=1e-4)
    assert norm.momentum == 0.9   # restored


def test_standalone_weight_averaging_keeps_the_better_on_validation_and_saves_the_average(tmp_path):
    if not (FER2013 / "train").is_dir():
        pytest.skip("FER2013 not found")
    config = TrainingConfig(model="compact", classes=SUBSET, epochs=3, batch_size=16, imbalance="none",
                            early_stopping_patience=10, average_from=2)
    result = standalone.train(str(FER2013), str(tmp_path), config, per_class=12)
    average = result["weight_average"]
    assert (average["from_epoch"], average["epochs"]) == (2, 2)
    assert average["kept"] == ("average" if average["validation_accuracy"] >= average["best_epoch_validation_accuracy"]
                               else "best epoch")
    assert result["test"]["accuracy"] == pytest.approx(
        average["test_accuracy"] if average["kept"] == "average" else average["best_epoch_test_accuracy"])
    averaged = model_lib.build("compact", len(SUBSET))
    averaged.load_weights(str(tmp_path / "compact.average.weights.h5"))
    x_test, y_test, _ = standalone.load_split(str(FER2013), "test", SUBSET, 12)
    assert standalone.evaluate(averaged, x_test, y_test, SUBSET)["accuracy"] == pytest.approx(
        average["test_accuracy"])


def test_standalone_refuses_a_negative_average_from(tmp_path, capsys):
    assert standalone.main(["--data", str(tmp_path), "--output", str(tmp_path / "o"),
                            "--average-from", "-1"]) == 2
    assert "average_from must be >= 0" in capsys.readouterr().err


def test_training_seconds_are_unknown_when_an_epoch_lacks_its_time():
    assert recipe.training_seconds({"loss": [1.0, 0.9], recipe.EPOCH_SECONDS: [3.0, 4.5]}) == 7.5
    assert recipe.training_seconds({"loss": [1.0, 0.9], recipe.EPOCH_SECONDS: [float("nan"), 4.5]}) is None
    assert recipe.training_seconds({"loss": [1.0, 0.9]}) is None


def test_flip_averaged_probabilities_are_the_mean_over_each_face_and_its_mirror():
    network = model_lib.build("compact", 3)
    faces = np.random.default_rng(1).random((4, 48, 48, 1), dtype=np.float32)
    plain = standalone.probabilities(network, faces)
    mirrored = network.predict(faces[:, :, ::-1], verbose=0)
    assert not np.allclose(plain, mirrored, atol=1e-4)   # the network is not mirror-symmetric
    np.testing.assert_allclose(standalone.probabilities(network, faces, views=model_lib.TEST_TIME_VIEWS["flip"]),
                               (plain + mirrored) / 2, rtol=1e-5, atol=1e-6)
    symmetric = (faces + faces[:, :, ::-1]) / 2   # a mirror-symmetric face gains nothing from the flip
    np.testing.assert_allclose(standalone.probabilities(network, symmetric, views=model_lib.TEST_TIME_VIEWS["flip"]),
                               standalone.probabilities(network, symmetric), rtol=1e-5, atol=1e-6)


def test_multiview_probabilities_are_the_mean_over_the_views():
    network = model_lib.build("compact", 3)
    faces = np.random.default_rng(2).random((4, 48, 48, 1), dtype=np.float32)
    views = model_lib.TEST_TIME_VIEWS["multiview"]
    each = [network.predict(np.asarray(model_lib.view_of(faces, view)), verbose=0) for view in views]
    assert not np.allclose(each[0], each[-1], atol=1e-4)   # the views differ
    np.testing.assert_allclose(standalone.probabilities(network, faces, views=views), np.mean(each, axis=0),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(standalone.probabilities(network, faces, views=model_lib.TEST_TIME_VIEWS["flip"]),
                               np.mean(each[:2], axis=0), rtol=1e-5, atol=1e-6)


def test_the_standalone_result_says_whether_a_time_budget_stopped_it(tmp_path):
    if not (FER2013 / "train").is_dir():
        pytest.skip("FER2013 not found")
    config = TrainingConfig(model="compact", classes=SUBSET, epochs=3, batch_size=16, imbalance="none")
    result = standalone.train(str(FER2013), str(tmp_path), config, per_class=6, max_minutes=1e-6)
    assert (result["epochs_run"], result["finished"]) == (1, False)
    assert json.loads((tmp_path / standalone.RESULT_JSON).read_text())["finished"] is False


def test_a_spent_time_budget_stops_training_cleanly_with_the_best_weights(tmp_path):
    if not (FER2013 / "train").is_dir():
        pytest.skip("FER2013 not found")
    x, y = _faces("train", 8)
    network = model_lib.build("compact", len(SUBSET))
    config = TrainingConfig(model="compact", classes=SUBSET, epochs=50, imbalance="none")
    history = recipe.fit(network, network, tf.data.Dataset.from_tensor_slices((x, y)).batch(8), (x, y),
                         config, str(tmp_path), extra_callbacks=[recipe.StopWhenAsked(minutes=1e-6)])
    assert len(history["loss"]) == 1   # stopped after its first epoch instead of 50

    # Not finished: the same command resumes it (at epoch 2) instead of taking it as done.
    history = recipe.fit(network, network, tf.data.Dataset.from_tensor_slices((x, y)).batch(8), (x, y),
                         config, str(tmp_path), extra_callbacks=[recipe.StopWhenAsked(minutes=1e-6)])
    assert len(history["loss"]) == 2
    history = recipe.fit(network, network, tf.data.Dataset.from_tensor_slices((x, y)).batch(8), (x, y),
                         config, str(tmp_path), extra_callbacks=[recipe.StopWhenAsked()])
    assert len(history["loss"]) > 2   # ran to its end (early stopping or 50): finished, backup gone
    # Every epoch's time is kept, the resumed fits' included, and they add up to the training's.
    assert len(history[recipe.EPOCH_SECONDS]) == len(history["loss"])
    assert all(s > 0 for s in history[recipe.EPOCH_SECONDS])
    assert recipe.training_seconds(history) == pytest.approx(sum(history[recipe.EPOCH_SECONDS]), abs=0.1)
    [run_dir] = [d for d in (tmp_path / "checkpoints").iterdir() if d.is_dir()]
    assert (run_dir / "train.done.weights.h5").is_file() and not (run_dir / "train.backup").exists()


@pytest.mark.parametrize("name", ["compact", "dcnn", "resnet18"])
def test_a_subset_model_starts_from_a_seven_class_model_as_its_renormalised_probabilities(name, tmp_path):
    full = model_lib.build(name, 7)
    path = str(tmp_path / "full.weights.h5")
    full.save_weights(path)
    subset = ["happy", "sad", "neutral"]
    narrow = model_lib.build(name, len(subset))
    model_lib.load_weights_for_classes(narrow, name, path, features.EMOTIONS, subset)
    faces = np.random.default_rng(0).random((5, 48, 48, 1), dtype=np.float32)
    seven = full.predict(faces, verbose=0)[:, [features.EMOTIONS.index(c) for c in subset]]
    np.testing.assert_allclose(narrow.predict(faces, verbose=0),
                               seven / seven.sum(axis=1, keepdims=True), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="lacks surprise"):
        model_lib.load_weights_for_classes(model_lib.build(name, 2), name, path,
                                           ["happy", "sad", "neutral"], ["happy", "surprise"])


def test_standalone_warm_start_classes_needs_warm_start(tmp_path, capsys):
    assert standalone.main(["--data", str(tmp_path), "--output", str(tmp_path / "o"), "--classes",
                            "happy,sad", "--warm-start-classes", ",".join(features.EMOTIONS)]) == 2
    assert "--warm-start-classes needs --warm-start" in capsys.readouterr().err


def test_standalone_refuses_a_negative_reduce_lr_patience(tmp_path, capsys):
    assert standalone.main(["--data", str(tmp_path), "--output", str(tmp_path / "o"),
                            "--reduce-lr-patience", "-1"]) == 2
    assert "reduce_lr_patience must be >= 0" in capsys.readouterr().err


def test_the_standalone_trainer_scores_publictest_only_and_counts_privatetest_files_kept_back(
        fer2013_root, tmp_path, caplog):
    source = sorted((fer2013_root / "test" / "happy").iterdir())[:3]
    folder = tmp_path / "test" / "happy"
    folder.mkdir(parents=True)
    for name, image in zip(("PublicTest_1.jpg", "PublicTest_2.jpg", "PrivateTest_3.jpg"), source):
        (folder / name).write_bytes(image.read_bytes())
    with caplog.at_level("WARNING"):
        x, y, ids = standalone.load_split(str(tmp_path), "test", ["happy"])
    assert ids == ["PublicTest_1-happy", "PublicTest_2-happy"] and x.shape == (2, 48, 48, 1)
    assert "1 PrivateTest file(s) kept back" in caplog.text
    assert features.folder_split("train", "PrivateTest_3.jpg") == "train"


def test_the_learning_probe_reports_loss_and_held_out_accuracy_per_block_of_steps(fer2013_root, tmp_path):
    from components.trainer import probe
    out = tmp_path / "probe.json"
    assert probe.main(["--data", str(fer2013_root), "--model", "compact", "--learning-rates", "1e-3,1e-4",
                       "--per-class", "12", "--held-out", "14", "--blocks", "2", "--steps-per-block", "2",
                       "--batch-size", "8", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["chance_loss"] == 1.9459 and report["per_class"] == 12
    assert [run["learning_rate"] for run in report["runs"]] == [1e-3, 1e-4]
    for run in report["runs"]:
        assert [block["steps"] for block in run["blocks"]] == [2, 4]
        for block in run["blocks"]:
            assert 0.5 < block["loss"] < 10 and 1 <= block["distinct_predictions"] <= 7
            assert any(abs(block["held_out_accuracy"] - k / 14) < 1e-4 for k in range(15))  # of 14 faces
    with pytest.raises(ValueError, match="need 800 training faces; the subset has 70"):
        probe.main(["--data", str(fer2013_root), "--model", "compact", "--per-class", "12",
                    "--held-out", "14", "--blocks", "1", "--steps-per-block", "25", "--batch-size", "32"])
    with pytest.raises(ValueError, match="--held-out 0: must be at least 1 and under the subset's 84 faces"):
        probe.main(["--data", str(fer2013_root), "--model", "compact", "--per-class", "12", "--held-out", "0"])


def test_weights_cast_to_float16_halve_the_file_and_load_into_the_float32_network(tmp_path):
    from components.trainer import weights_dtype

    network = model_lib.build("dcnn", 3)
    network.save_weights(str(tmp_path / "full.weights.h5"))
    half, back = tmp_path / "half.weights.h5", tmp_path / "back.weights.h5"
    assert weights_dtype.cast(str(tmp_path / "full.weights.h5"), str(half), "float16") == \
        len(network.weights)
    assert weights_dtype.main([str(half), str(back), "--dtype", "float32"]) == 0
    assert os.path.getsize(half) < 0.55 * os.path.getsize(tmp_path / "full.weights.h5")
    faces = np.random.default_rng(1).random((16, 48, 48, 1)).astype("float32")
    expected = network.predict(faces, verbose=0)
    for path in (half, back):
        restored = model_lib.build("dcnn", 3)
        restored.load_weights(str(path))
        assert all(w.dtype == "float32" for w in restored.weights)
        np.testing.assert_allclose(restored.predict(faces, verbose=0), expected, atol=2e-3)
    (tmp_path / "not.weights.h5").write_text("no")
    with pytest.raises(ValueError, match="not.weights.h5: not an HDF5 file"):
        weights_dtype.cast(str(tmp_path / "not.weights.h5"), str(tmp_path / "x.h5"), "float16")
    with pytest.raises(ValueError, match="would overwrite its input"):
        weights_dtype.cast(str(half), str(half), "float32")


def test_checkpoint_key_ignores_what_only_the_export_applies(tmp_path):
    """The prior correction and the calibration temperature change the exported model, not
    the training: a training resumed with other values goes on from the same checkpoints."""
    key = lambda **fields: recipe.training_dir(str(tmp_path), TrainingConfig(**fields), "data-id")
    assert key(prior_correction=0.5, calibration_temperature=1.3) == key()


@pytest.mark.parametrize("field, value, other", [("random_erasing", 0.5, 0.25), ("camera", 0.5, 0.25),
                                                  ("average_from", 3, 1)])
def test_checkpoint_key_follows_a_newer_setting_only_when_it_is_on(field, value, other, tmp_path):
    """Turning random erasing or weight averaging on starts a fresh checkpoint directory
    (an average holds the epochs of its own run only); leaving it off keeps the directory a
    configuration had before the setting existed (its key omits the field)."""
    key = lambda **fields: recipe.training_dir(str(tmp_path), TrainingConfig(**fields), "data-id")
    off = key()
    assert key(**{field: type(value)(0)}) == off
    on = key(**{field: value})
    assert on != off and key(**{field: other}) not in (on, off)
    with open(os.path.join(on, recipe._CONFIG_JSON)) as f:
        assert json.load(f)["recipe"][field] == value


def test_the_trainer_holds_out_exactly_the_faces_the_standalone_trainer_holds_out():
    """Weights from the standalone trainer are warm-started, fine-tuned and calibrated in the
    Trainer: both must validate on the same faces, or the Trainer's validation (and the
    temperature it fits) would use faces the weights were trained on. On the whole real
    train/ folder, with ids as ingestion assigns them (two file names repeat there)."""
    from components.example_gen import fer2013 as ingestion
    from components.trainer import data

    refs = [r for r in ingestion.enumerate_split(str(FER2013), "folder", "train", features.EMOTIONS)
            if r.label_name]
    assert len({r.image_id for r in refs}) == len(refs) > len({os.path.basename(r.source) for r in refs})
    pairs = tf.data.Dataset.from_tensor_slices(
        ([r.image_id for r in refs], [features.EMOTIONS.index(r.label_name) for r in refs]))
    in_trainer = np.fromiter(pairs.map(lambda i, c: data.is_validation(i, c, features.EMOTIONS, 0.1))
                             .as_numpy_iterator(), dtype=bool)
    keys = [standalone.image_id(r.source, r.label_name) for r in refs]
    assert [features.carve_out_key(r.image_id, r.label_name) for r in refs] == keys
    assert np.array_equal(in_trainer, standalone.is_validation(keys, 0.1))
    # ~10% of the 28,709 training faces, per class too
    assert in_trainer.sum() == 2919
    labels = np.array([r.label_name for r in refs])
    for emotion in features.EMOTIONS:
        share = in_trainer[labels == emotion].mean()
        assert 0.07 < share < 0.13, (emotion, share)
