"""The training recipe in pure Keras 3 (no TensorFlow here): it drives the fit inside the
TFX Trainer (TensorFlow backend) and in the standalone trainer (JAX backend).

- EarlyStopping and ReduceLROnPlateau on validation accuracy, TensorBoard logs.
- Checkpoints: `BackupAndRestore` after every epoch, so an interrupted fit started again
  with the same `checkpoint_dir` resumes from its last finished epoch; every epoch's
  metrics appended to `<phase>.history.csv`, which therefore covers interrupted and
  resumed fits alike; the best epoch's weights in `<phase>.best.weights.h5`, so a fit
  ends with the best weights of all its epochs, those before a resumption included
  (EarlyStopping alone only remembers the epochs of the current process). A training
  lives in `<checkpoint_dir>/<key>/`, the key a hash of its configuration and its data:
  a re-run of the same training resumes, anything else (new data, other
  hyperparameters) starts afresh beside it. How long to train (epochs, early-stopping
  patience) is not part of the key: a stopped training re-run with more epochs goes on
  where it stopped. Under the cosine the epoch count sets the curve and is part of the key;
  `carry_over` moves a stopped cosine run onto another epoch count (and weight averaging
  start), its finished epochs kept.
- Random streams (augmentation, dropout) set from the seed and the epoch at each epoch's
  start (`RandomnessByEpoch`), so a resumed training does not replay its first epochs.
  Epochs are counted over all phases (`ByEpoch`), so fine-tuning does not replay the
  first phase's either.
- Two-phase fine-tuning of transfer models built on ImageNet weights: the head on the
  frozen base, then the top block unfrozen at a lower learning rate. A finished phase
  leaves `<phase>.done.weights.h5` and is not repeated on resume.
- Time: each epoch's wall-clock seconds are logged with its metrics (`epoch_seconds`), so
  the time a training took is known across resumptions too.
- Weight averaging (`WeightAverage`, `recompute_batch_norm`): the mean of the network's
  weights over a phase's epochs from a given one on, kept across resumptions.
- Curves: accuracy and loss versus epoch as a PNG.
"""
import contextlib
import csv
import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import shutil
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import keras
import numpy as np

from components.trainer import model as model_lib
from pipeline.config import TrainingConfig

logger = logging.getLogger(__name__)

HISTORY_CSV = "history.csv"
EPOCH_SECONDS = "epoch_seconds"
CURVES_PNG = "curves.png"
_CONFIG_JSON = "config.json"
# How long to train, not how: they decide when a training stops, not what its epochs do,
# so a stopped training asked for more of them continues rather than starting afresh.
_STOPPING_FIELDS = ("epochs", "early_stopping_patience")
# Applied when the model is exported, not while it trains.
_EXPORT_FIELDS = ("prior_correction", "calibration_temperature")
# What a training carried over from an earlier one (`carry_over`) may change: the length of
# its schedule (under the cosine, its curve) and the epoch its weight average starts at.
_CARRIED_FIELDS = ("epochs", "average_from")


def class_weights(counts: Sequence[int]) -> Dict[int, float]:
    """Balanced weights n / (k * n_c): each class then carries the same total weight.
    A class without examples gets weight 1 (it contributes nothing either way)."""
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    total, k = counts.sum(), int(present.sum())
    return {c: float(total / (k * n)) if n > 0 else 1.0 for c, n in enumerate(counts)}


def prior_log_bias(counts: Sequence[int], strength: float) -> np.ndarray:
    """Per-class bias added to the log-probabilities: -strength x log(prior), the prior
    being the class frequencies of the training data (each count plus one, so a class
    without examples stays finite). Logit adjustment (Menon et al., 2021): with
    strength 1 the arg-max estimates the class that is most likely relative to how
    common it is in training, which favours rare classes; 0 changes nothing."""
    counts = np.asarray(counts, dtype=np.float64) + 1.0
    bias = -float(strength) * np.log(counts / counts.sum())
    return (bias - bias.mean()).astype(np.float32)


class StopWhenAsked(keras.callbacks.Callback):
    """Ends training cleanly at the end of the current epoch once `minutes` have passed
    or the process got SIGTERM; EarlyStopping then still restores the best weights and
    the caller saves them (a lease or a pod ending does not lose the run)."""

    def __init__(self, minutes: float = 0.0):
        super().__init__()
        import signal
        import time
        self._deadline = time.monotonic() + minutes * 60 if minutes > 0 else None
        self._asked = False
        self.stopped = False  # True once it ended a fit: that phase is not finished
        self._clock = time.monotonic
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "_asked", True))

    def on_epoch_end(self, epoch, logs=None):
        if self._asked or (self._deadline is not None and self._clock() >= self._deadline):
            logger.warning("stopping after epoch %d: %s", epoch + 1,
                           "SIGTERM" if self._asked else "time budget spent")
            self.model.stop_training = True
            self.stopped = True


# Random numbers one epoch may draw from one stream before the next epoch's begin.
_DRAWS_PER_EPOCH = 1 << 20
_SEED_STATE = "seed_generator_state"
_REPLICA_SEED_STEP = 1_000_003   # replica k's random streams: the seed plus k times this


class ByEpoch(keras.callbacks.Callback):
    """A callback that sets something from the number of the epoch under way (random
    streams, data order), counted over the whole training: `fit` sets `epoch_offset` to
    the epochs of the phases before the one under way, so the fine-tuning phase of a
    two-phase training goes on drawing new orders and transforms instead of repeating
    those of the first phase (Keras counts each fit's epochs from 0)."""

    epoch_offset = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.begin(epoch + self.epoch_offset)

    def begin(self, epoch: int) -> None:
        raise NotImplementedError


class RandomnessByEpoch(ByEpoch):
    """At each epoch's start, moves every random stream of the model (augmentation,
    dropout) to where its seed and the epoch number alone put it.

    A stream's position is not in the checkpoint: without this, a resumed training starts
    its streams from their seeds again and so replays the exact random transforms (and,
    with seeded dropout, masks) of its first epochs, in step with a data order that does
    the same. The network then trains on faces it has seen in exactly that form: measured
    on the DCNN, train accuracy 7-11 points higher on replayed epochs and 6-7 lower on the
    first epoch never drawn before, validation accuracy down and its loss up. With it, a
    resumed training draws what an uninterrupted one would.

    Under a TensorFlow distribution strategy (MirroredStrategy: one replica per GPU),
    each replica holds its own copy of a stream, and copies that agree draw the same
    transforms and dropout masks for the faces at the same place in every replica's
    batch. Replica k's copy gets the seed `seed + k * _REPLICA_SEED_STEP`: independent
    draws per replica, the first replica's those of a single-device training."""

    def begin(self, epoch: int) -> None:
        for variable in self.model.variables:
            if variable.path.split("/")[-1] == _SEED_STATE:
                seed = int(keras.ops.convert_to_numpy(variable)[0])   # the first replica's
                position = (epoch * _DRAWS_PER_EPOCH) % (1 << 32)   # JAX keeps it in uint32
                variable.assign(np.array([seed, position], dtype=variable.dtype))
                for replica, copy in enumerate(replica_copies(variable)[1:], start=1):
                    copy.assign(np.array([seed + replica * _REPLICA_SEED_STEP, position],
                                         dtype=variable.dtype))


def replica_copies(variable: keras.Variable) -> tuple:
    """The per-replica copies of a variable mirrored by a TensorFlow distribution
    strategy, first replica first; () for any other variable (one device, JAX)."""
    copies = getattr(variable.value, "values", None)
    return tuple(copies) if isinstance(copies, (tuple, list)) else ()


class EpochSeconds(keras.callbacks.Callback):
    """Adds `epoch_seconds` (wall-clock, validation included) to each epoch's logs, which
    the history CSV then keeps beside its metrics."""

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs[EPOCH_SECONDS] = round(time.monotonic() - self._started, 2)


class HistoryCSV(keras.callbacks.CSVLogger):
    """Keras's CSVLogger, appending, except that a fit resumed on a history file an earlier
    fit began keeps that file's columns (a metric the file lacks, such as `epoch_seconds`
    in one written before it was logged, is left out rather than shifting every column
    after it)."""

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if os.path.exists(self.filename):
            with open(self.filename, newline="") as f:
                header = next(csv.reader(f, delimiter=self.sep), None)
            if header and header[0] == "epoch":
                self.keys = header[1:]


def training_seconds(history: Dict[str, List[float]]) -> Optional[float]:
    """The summed `epoch_seconds` of every epoch in `history` (resumed fits' included), or
    None when an epoch lacks them (logged before they were recorded)."""
    seconds = history.get(EPOCH_SECONDS, [])
    if not seconds or len(seconds) != len(history.get("loss", [])) or np.isnan(seconds).any():
        return None
    return round(float(np.sum(seconds)), 1)


class WeightAverage(keras.callbacks.Callback):
    """Stochastic weight averaging (Izmailov et al., 2018): the running mean of the
    network's trainable weights at the end of every epoch of a phase from `start`
    (counted from 1) on. `fit` names the file that holds it (`average_path`: the mean, how
    many epochs it holds and the last one), so a fit stopped and resumed goes on with the
    same average. `apply` puts the mean into the network; its batch-normalisation
    statistics, which belong to none of the averaged weights, then need
    `recompute_batch_norm`."""

    def __init__(self, network: keras.Model, start: int):
        super().__init__()
        if start < 1:
            raise ValueError(f"weight averaging starts at an epoch >= 1, got {start}")
        self.network, self.start, self.path = network, start, ""

    def state(self) -> Tuple[int, int, List[np.ndarray]]:
        """(epochs averaged, the last of them, the mean weights); (0, 0, []) before any."""
        if not self.path or not os.path.exists(self.path):
            return 0, 0, []
        with np.load(self.path) as saved:
            count, last = int(saved["count"]), int(saved["last"])
            return count, last, [saved[f"w{i}"] for i in range(len(saved.files) - 2)]

    def on_epoch_end(self, epoch, logs=None):
        number = epoch + 1
        count, last, mean = self.state()
        if number < self.start or number <= last:
            return
        if number > max(last + 1, self.start):
            logger.warning("weight average: epochs %d to %d are missing from it (their weights were "
                           "not saved into it before the training stopped)",
                           max(last + 1, self.start), number - 1)
        weights = [keras.ops.convert_to_numpy(v) for v in self.network.trainable_variables]
        mean = [m + (w - m) / (count + 1) for m, w in zip(mean, weights)] if mean else weights
        partial = self.path + ".partial.npz"
        np.savez(partial, count=count + 1, last=number, **{f"w{i}": w for i, w in enumerate(mean)})
        os.replace(partial, self.path)
        logger.info("weight average: %d epoch(s), %d to %d", count + 1, number - count, number)

    def apply(self) -> int:
        """Puts the mean into the network; returns how many epochs it holds (0: none yet,
        the network is left as it is)."""
        count, _, mean = self.state()
        for variable, value in zip(self.network.trainable_variables, mean):
            variable.assign(value)
        return count


def _batch_norm_layers(layer) -> List[keras.layers.BatchNormalization]:
    found = [layer] if isinstance(layer, keras.layers.BatchNormalization) else []
    for inner in getattr(layer, "layers", []):
        found += _batch_norm_layers(inner)
    return found


def recompute_batch_norm(network: keras.Model, batches) -> int:
    """Sets every trainable batch-normalisation layer's moving mean and variance to the
    mean of its batch statistics over `batches` (input arrays), the network in training
    mode: what weights averaged over epochs need, since no epoch's statistics belong to
    them. Returns the number of batches."""
    norms = [layer for layer in _batch_norm_layers(network) if layer.trainable]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.moving_mean.assign(np.zeros(layer.moving_mean.shape, "float32"))
        layer.moving_variance.assign(np.ones(layer.moving_variance.shape, "float32"))
    count = 0
    try:
        for count, batch in enumerate(batches, start=1):
            for layer in norms:   # moving = the mean of the batches' statistics so far
                layer.momentum = (count - 1) / count
            network(batch, training=True)
    finally:
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum
    return count


def keep_average(network: keras.Model, averager: WeightAverage, inputs: Iterable,
                 score: Callable[[], Dict[str, float]], save_to: str = "") -> Optional[Dict]:
    """After the fit, on the network holding its best epoch's weights: puts the weight
    average in (`averager.apply`), recomputes its batch-normalisation statistics over
    `inputs` (training input batches, un-augmented) and saves it to `save_to` if given.
    `score()` measures the network as it stands ({'validation_accuracy': ..., and any
    other accuracies}); the average stays when its validation accuracy is at least the
    best epoch's, else the best epoch's weights come back. Returns the average's scores,
    the best epoch's (prefixed 'best_epoch_') and which was kept; None (and the network
    untouched) when no epoch was averaged."""
    if not averager.state()[0]:
        return None
    best_weights, best = network.get_weights(), score()
    epochs = averager.apply()
    batches = recompute_batch_norm(network, inputs)
    if save_to:
        network.save_weights(save_to)
    average = score()
    kept = "average" if average["validation_accuracy"] >= best["validation_accuracy"] else "best epoch"
    if kept != "average":
        network.set_weights(best_weights)
    logger.info("weight average of %d epochs: validation accuracy %.4f against the best epoch's "
                "%.4f; the %s is kept", epochs, average["validation_accuracy"],
                best["validation_accuracy"], kept)
    return {"from_epoch": averager.start, "epochs": epochs, "batch_norm_batches": batches, **average,
            **{f"best_epoch_{name}": value for name, value in best.items()}, "kept": kept}


def backup_dir(checkpoint_dir: str, phase: str) -> str:
    return os.path.join(checkpoint_dir, f"{phase}.backup")


def best_weights_path(checkpoint_dir: str, phase: str) -> str:
    return os.path.join(checkpoint_dir, f"{phase}.best.weights.h5")


def average_path(checkpoint_dir: str, phase: str) -> str:
    return os.path.join(checkpoint_dir, f"{phase}.average.npz")


def best_epoch(checkpoint_dir: str, phase: str) -> Optional[Tuple[int, float]]:
    """(epoch counted from 1 over every fit of the phase, resumed ones included; its
    validation accuracy) of the best epoch, whose weights the phase's best checkpoint
    holds, or None when it has none yet. Keras's EarlyStopping counts only the epochs of
    the fit it watched, so after a resume its "best epoch" can name another one."""
    scores = np.asarray(read_history(checkpoint_dir, [phase]).get("val_accuracy", []), dtype=float)
    if not np.any(~np.isnan(scores)) or not os.path.exists(best_weights_path(checkpoint_dir, phase)):
        return None
    index = int(np.nanargmax(scores))
    return index + 1, float(scores[index])


def _best_so_far(checkpoint_dir: str, phase: str) -> Optional[float]:
    """The best validation accuracy this phase's saved best weights hold (from its
    history), or None when it has none yet."""
    best = best_epoch(checkpoint_dir, phase)
    return None if best is None else best[1]


def cosine_learning_rate(learning_rate: float, epochs: int, epoch: int) -> float:
    """A half cosine from `learning_rate` at epoch 0 towards 0 at epoch `epochs` (never
    reached: the last epoch trains at learning_rate * (1 - cos(pi / epochs)) / 2)."""
    return 0.5 * learning_rate * (1.0 + math.cos(math.pi * min(epoch, epochs) / epochs))


def learning_rate_schedule(config: TrainingConfig, learning_rate: float,
                           epochs: int) -> keras.callbacks.Callback:
    """What moves the learning rate of a phase that starts at `learning_rate` and lasts
    `epochs`: ReduceLROnPlateau on validation accuracy, or the cosine (by the epoch number
    Keras passes, so a fit resumed from its backup continues the curve)."""
    if config.lr_schedule == "cosine":
        return keras.callbacks.LearningRateScheduler(
            functools.partial(cosine_learning_rate, learning_rate, epochs))
    return keras.callbacks.ReduceLROnPlateau(monitor="val_accuracy", mode="max",
                                             factor=config.reduce_lr_factor,
                                             patience=config.reduce_lr_patience, min_lr=1e-6, verbose=1)


def callbacks(config: TrainingConfig, log_dir: str, checkpoint_dir: str, phase: str,
              learning_rate: float, epochs: int) -> List[keras.callbacks.Callback]:
    return [
        RandomnessByEpoch(),
        EpochSeconds(),   # before the CSV logger, which writes what the logs hold
        keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max",
                                      patience=config.early_stopping_patience,
                                      restore_best_weights=True, verbose=1),
        learning_rate_schedule(config, learning_rate, epochs),
        HistoryCSV(os.path.join(checkpoint_dir, f"{phase}.{HISTORY_CSV}"), append=True),
    ] + ([keras.callbacks.TensorBoard(log_dir=os.path.join(log_dir, "tensorboard", phase))]
         # Keras writes TensorBoard logs with tf.summary: on the TensorFlow backend only
         # (history.csv and the curves cover the JAX backend).
         if keras.backend.backend() == "tensorflow" else []) + [
        # Only an epoch better than every earlier one, resumed fits' included, replaces it.
        keras.callbacks.ModelCheckpoint(best_weights_path(checkpoint_dir, phase), monitor="val_accuracy",
                                        mode="max", save_best_only=True, save_weights_only=True,
                                        initial_value_threshold=_best_so_far(checkpoint_dir, phase)),
        # Last, so that it saves after the others have updated their state. Kept when a
        # fit ends (`fit` removes it once the phase is finished), so a fit stopped on
        # request (time budget, SIGTERM) resumes from it when run again.
        keras.callbacks.BackupAndRestore(backup_dir(checkpoint_dir, phase), delete_checkpoint=False),
    ]


def _recipe_record(config: TrainingConfig) -> Dict:
    """The configuration as JSON holds it, without where its checkpoints go."""
    return json.loads(json.dumps(dict(config.to_dict(), checkpoint_dir="")))


def checkpoint_key(config: TrainingConfig, data_id: str) -> str:
    """The name of a training's checkpoint directory: a hash of the configuration, the
    augmentation (its layer's settings: checkpoints of the training model hold its random
    state) and the data."""
    recipe = _recipe_record(config)
    # The epoch count only says when to stop, except under the cosine, whose curve it sets.
    ignored = tuple(f for f in _STOPPING_FIELDS if not (f == "epochs" and config.lr_schedule == "cosine"))
    identity = {k: v for k, v in recipe.items() if k not in ignored + _EXPORT_FIELDS}
    for field in ("random_erasing", "camera", "average_from"):  # keys from before they existed stay valid
        if not getattr(config, field):
            identity.pop(field, None)
    if config.augment:
        identity["augmentation"] = dict(model_lib.AUGMENTATION, layer=model_lib.RandomFaceTransform.__name__,
                                        version=model_lib.RandomFaceTransform.VERSION)
        if config.random_erasing:
            identity["augmentation"]["erasing"] = dict(model_lib.ERASING,
                                                       version=model_lib.RandomErasing.VERSION)
        if config.camera:
            identity["augmentation"]["camera"] = dict(model_lib.CAMERA, version=model_lib.RandomCamera.VERSION)
    key = hashlib.sha256(json.dumps({"recipe": identity, "data": data_id}, sort_keys=True).encode())
    return key.hexdigest()[:16]


def training_dir(checkpoint_dir: str, config: TrainingConfig, data_id: str) -> str:
    """`<checkpoint_dir>/<key>/` (`checkpoint_key`), created; the configuration is written
    beside the checkpoints for people (and for `carry_over`)."""
    if "://" in checkpoint_dir:
        raise ValueError(f"checkpoint_dir {checkpoint_dir!r}: object storage is not supported for "
                         "checkpoints; use a local or mounted path (a volume, gcsfuse)")
    path = os.path.join(checkpoint_dir, checkpoint_key(config, data_id))
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, _CONFIG_JSON), "w") as f:
        json.dump({"recipe": _recipe_record(config), "data": data_id}, f, indent=1, sort_keys=True)
    return path


def _phases_begun(path: str) -> List[str]:
    """The phases of the training in `path` that have logged an epoch."""
    return sorted(name[:-len(HISTORY_CSV) - 1] for name in os.listdir(path) if name.endswith(f".{HISTORY_CSV}"))


def _epochs_done(path: str) -> int:
    """How many epochs the training in `path` has finished, over all its phases."""
    return len(read_history(path, _phases_begun(path))["phase"])


def carry_over(path: str, config: TrainingConfig, data_id: str) -> Optional[str]:
    """Starts the training in `path` (its `training_dir`) from the checkpoints of the one
    earlier training beside it that differs from it only in `_CARRIED_FIELDS`: a cosine run
    stopped and started again with another epoch count goes on at its next epoch, on the
    new curve, its finished epochs, best weights and history kept. Returns the directory
    carried from, or None when `path` has finished epochs of its own (it resumes those:
    the same command started again goes on as any other). Raises ValueError, naming the
    directories, when no earlier training or several match, when it has finished (train
    on from its weights with a warm start instead), when it is a two-phase fine-tuning
    (not carried: its phases count their epochs apart), or when its weight average cannot
    go on under this `average_from` (it would miss or hold the wrong epochs; 0, no
    average, is always possible)."""
    if _epochs_done(path):
        return None
    root, matches = os.path.dirname(path), []
    for other in sorted(os.path.join(root, name) for name in os.listdir(root)):
        if other == path or not os.path.isfile(os.path.join(other, _CONFIG_JSON)):
            continue
        done = _epochs_done(other)
        if not done:
            continue
        try:
            with open(os.path.join(other, _CONFIG_JSON)) as f:
                saved = json.load(f)
            before = TrainingConfig.from_dict(saved["recipe"])
        except (OSError, KeyError, TypeError, ValueError):  # another version's or unreadable: not this training
            continue
        moved = dataclasses.replace(before, **{f: getattr(config, f) for f in _CARRIED_FIELDS})
        if (saved.get("data") == data_id and checkpoint_key(before, data_id) == os.path.basename(other)
                and checkpoint_key(moved, data_id) == os.path.basename(path)):
            matches.append((other, before, done))
    fields = " or ".join(_CARRIED_FIELDS)
    if len(matches) != 1:
        raise ValueError(
            f"carry over into {path}: {len(matches) or 'no'} earlier trainings in {root} differ from "
            f"this one only in {fields}" + (f" ({', '.join(m for m, _, _ in matches)}); remove all but "
                                            "the one to go on from" if matches else ""))
    other, before, done = matches[0]
    begun = _phases_begun(other)
    if begun != ["train"]:
        raise ValueError(f"carry over from {other}: a training in phases ({', '.join(begun)}) is "
                         "not carried over; start it afresh, or from its weights with a warm start")
    if os.path.exists(os.path.join(other, "train.done.weights.h5")):
        raise ValueError(f"carry over from {other}: that training has finished ({done} epochs); "
                         "train on from its weights with a warm start instead")
    average = average_path(other, "train")
    if config.average_from and os.path.exists(average):
        with np.load(average) as saved:
            count, last = int(saved["count"]), int(saved["last"])
        if config.average_from != last - count + 1:
            raise ValueError(f"carry over from {other}: its weight average holds epochs "
                             f"{last - count + 1} to {last}; average_from {config.average_from} "
                             f"cannot go on from it (use {last - count + 1}, or 0 for none)")
    elif 0 < config.average_from <= done:
        raise ValueError(f"carry over from {other}: its {done} finished epochs hold no weight "
                         f"average, so one from epoch {config.average_from} would miss epochs; "
                         f"average from an epoch after {done}")
    # The histories last: they say how many epochs a directory has finished (`_epochs_done`),
    # so a copy cut short is not taken for a training to resume. No average without averaging.
    for name in sorted(os.listdir(other), key=lambda n: (n.endswith(HISTORY_CSV), n)):
        if name == _CONFIG_JSON or (name == os.path.basename(average) and not config.average_from):
            continue
        source, target = os.path.join(other, name), os.path.join(path, name)
        if os.path.isdir(source):
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            shutil.copy2(source, target)
    logger.info("carried over %d finished epoch(s) from %s (%s) into %s (%s)", done, other,
                ", ".join(f"{f} {getattr(before, f)}" for f in _CARRIED_FIELDS), path,
                ", ".join(f"{f} {getattr(config, f)}" for f in _CARRIED_FIELDS))
    return other


def class_weight_for(config: TrainingConfig, counts: Sequence[int]) -> Optional[Dict[int, float]]:
    """The loss weights per class id the configuration asks for (None: unweighted)."""
    return class_weights(counts) if config.imbalance == "class_weight" else None


def phases(config: TrainingConfig, network: keras.Model) -> List[Dict]:
    """[{name, epochs, learning_rate}]: one phase, or 'frozen' then 'fine_tune' for a
    transfer model on ImageNet weights."""
    if model_lib.fine_tuning(network) is None or config.freeze_epochs == 0:
        return [{"name": "train", "epochs": config.epochs, "learning_rate": config.learning_rate}]
    first = min(config.freeze_epochs, config.epochs)
    return [{"name": "frozen", "epochs": first, "learning_rate": config.learning_rate},
            {"name": "fine_tune", "epochs": config.epochs - first,
             "learning_rate": config.learning_rate * config.fine_tune_lr_factor}]


def read_history(checkpoint_dir: str, phase_names: Sequence[str]) -> Dict[str, List[float]]:
    """Every epoch's metrics of the named phases, in order, from their history CSVs
    (an epoch logged twice, by a fit and its resumption, counts once)."""
    history: Dict[str, List[float]] = {"phase": []}
    for name in phase_names:
        path = os.path.join(checkpoint_dir, f"{name}.{HISTORY_CSV}")
        if not os.path.exists(path):
            continue
        rows = {}
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                rows[int(row.pop("epoch"))] = row
        for epoch in sorted(rows):
            history["phase"].append(name)
            for key, value in rows[epoch].items():
                history.setdefault(key, []).append(float(value) if value not in ("", "NA", None)
                                                   else float("nan"))
    return history


def fit(model: keras.Model, network: keras.Model, train, validation, config: TrainingConfig,
        log_dir: str, checkpoint_dir: str = "", class_weight: Optional[Dict[int, float]] = None,
        scope: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
        extra_callbacks: Sequence[keras.callbacks.Callback] = (),
        data_id: str = "") -> Dict[str, List[float]]:
    """Compiles and trains `model` (the training model around `network`) in place, phase by
    phase; resumes a training of the same configuration and `data_id` (what identifies
    the training data) from `checkpoint_dir` (default `<log_dir>/checkpoints`; `carry_over`
    first to go on from one with another epoch count). Returns the per-epoch history of all
    phases (with a 'phase' column). `scope` wraps compilation (a distribution strategy's
    scope)."""
    checkpoint_dir = training_dir(checkpoint_dir or os.path.join(log_dir, "checkpoints"), config, data_id)
    plan = phases(config, network)
    offset = 0   # the epochs of the phases before this one
    for phase in plan:
        if phase["epochs"] <= 0:
            continue
        offset, phase_offset = offset + phase["epochs"], offset
        if phase["name"] == "fine_tune":
            base, prefix = model_lib.fine_tuning(network)
            unfrozen = model_lib.unfreeze_top(base, prefix)
            logger.info("fine-tuning: %d layers of %s unfrozen at learning rate %g", unfrozen,
                        base.name, phase["learning_rate"])
        done = os.path.join(checkpoint_dir, f"{phase['name']}.done.weights.h5")
        if os.path.exists(done):
            logger.info("phase %s already finished in %s: its weights are loaded (a finished "
                        "phase is not extended; to train on, start afresh from them with "
                        "--warm-start)", phase["name"], done)
            model.load_weights(done)
            continue
        with scope():
            model_lib.compile_model(model, phase["learning_rate"], config.optimizer,
                                    config.label_smoothing, config.momentum, config.weight_decay)
        # BackupAndRestore leaves the epoch it resumed from on the model, and Keras would
        # start the next phase's fit there too: each phase starts at its own epoch 0
        # unless its own backup says otherwise.
        model._initial_epoch = None
        # A weight average saves its epoch before the checkpoints record the epoch as done: a
        # training killed between the two resumes at that epoch (the average holds it once)
        # instead of resuming after an epoch its average never got.
        averages = [c for c in extra_callbacks if isinstance(c, WeightAverage)]
        phase_callbacks = averages + callbacks(config, log_dir, checkpoint_dir, phase["name"],
                                               phase["learning_rate"], phase["epochs"]) + [
            c for c in extra_callbacks if not isinstance(c, WeightAverage)]
        for callback in phase_callbacks:
            if isinstance(callback, ByEpoch):
                callback.epoch_offset = phase_offset
            if isinstance(callback, WeightAverage):
                callback.path = average_path(checkpoint_dir, phase["name"])
        model.fit(train, validation_data=validation, epochs=phase["epochs"],
                  callbacks=phase_callbacks, class_weight=class_weight, verbose=2)
        best = best_weights_path(checkpoint_dir, phase["name"])
        if os.path.exists(best):
            model.load_weights(best)
            epoch = best_epoch(checkpoint_dir, phase["name"])
            if epoch:
                logger.info("phase %s: the weights of its best epoch, %d of all its fits "
                            "(validation accuracy %.4f), are kept", phase["name"], *epoch)
        if any(isinstance(c, StopWhenAsked) and c.stopped for c in extra_callbacks):
            logger.warning("phase %s stopped before its end; the same command resumes it from %s",
                           phase["name"], backup_dir(checkpoint_dir, phase["name"]))
            break
        model.save_weights(done)
        shutil.rmtree(backup_dir(checkpoint_dir, phase["name"]), ignore_errors=True)
    return read_history(checkpoint_dir, [p["name"] for p in plan])


def write_curves(history: Dict[str, List[float]], path: str, title: str = "") -> None:
    """Accuracy and loss versus epoch (train and validation) as a PNG; a dashed line marks
    where fine-tuning began."""
    try:
        import matplotlib
    except ImportError:
        logger.warning("matplotlib is not installed: no %s", path)
        return
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("accuracy", "loss")):
        for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
            if history.get(key):
                ax.plot(epochs, history[key], marker="o", markersize=3, label=label)
        if "fine_tune" in history.get("phase", []):
            ax.axvline(history["phase"].index("fine_tune") + 0.5, linestyle="--", color="gray",
                       label="fine-tuning starts")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
