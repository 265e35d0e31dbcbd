"""Trains a model outside TFX, on any Keras 3 backend: the GPU path.

The GPU machine has JAX but no TensorFlow, so this module imports no TensorFlow: it
reads a FER2013 image folder (train/<emotion>/*.jpg, test/<emotion>/*.jpg) with
Pillow into NumPy, builds the same network as the Trainer (`model.build`), trains it
with the same recipe (`recipe.fit`: augmentation, class weights, Nadam, EarlyStopping
and ReduceLROnPlateau on validation accuracy, checkpoints and resume, curves) and saves

    OUT/<model>.weights.h5   the network's weights
    OUT/result.json          classes, recipe, history, test accuracy, per-class recall, timings,
                             whether training finished (a stopped run resumes when started again)
    OUT/curves.png           accuracy and loss versus epoch
    OUT/<model>.average.weights.h5  with --average-from: the mean of the epochs' weights

The Trainer then starts from those weights and exports them as the pipeline's
SavedModel (`fer-pipeline run ... --warm-start OUT/<model>.weights.h5 --epochs 0`).

Weight averaging (`--average-from K`, stochastic weight averaging): the running mean of
the network's weights at the end of epochs K, K+1, ..., its batch-normalisation
statistics then recomputed over the training faces; it replaces the best epoch's weights
when it is no worse on validation, and result.json says which was kept. Train at a
constant learning rate for it (`--lr-schedule plateau` with a `--reduce-lr-patience`
longer than the run), so the epochs it averages differ.

    KERAS_BACKEND=jax python -m components.trainer.standalone --data DIR --model vggnet \
        --epochs 100 --output OUT

Distillation (e.g. the compact model from the strong one): `--teacher-model vggnet
--teacher-weights OUT/vggnet.weights.h5` trains on a mix of the one-hot labels and the
teacher's softened probabilities (`soft_targets`); `--teacher-views flip` (or
`--teacher-flip`) averages the teacher's probabilities over each face and its mirror
image, `--teacher-views multiview` over the 8 test-time views. An ensemble can teach
(`--teacher-model resnet18,dcnn --teacher-weights R.weights.h5,D.weights.h5`: the mean of
their probabilities). `--teacher-online` has the teacher answer each augmented face as
the student sees it, during training (`model.OnlineDistillation`), instead of each face
once before it. A shipped model can teach:
`python -m components.trainer.saved_weights` takes its weights out of the SavedModel.

Validation data is carved from train/ by a hash of the file name and emotion: the same
faces as the Trainer's carve-out (`features.in_carve_out`); test/ (PublicTest) is only
evaluated, never trained on.
"""
import argparse
import dataclasses
import json
import logging
import os
import platform
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np
from PIL import Image

from components.trainer import model as model_lib, recipe
from pipeline import features
from pipeline.scoring import classification_metrics
from pipeline.config import LR_SCHEDULES, OPTIMIZERS, TrainingConfig

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
RESULT_JSON = "result.json"


def image_files(folder: str) -> List[str]:
    """The image files of `folder`, sorted; anything else there is logged as skipped."""
    names = sorted(os.listdir(folder))
    images = [os.path.join(folder, n) for n in names if n.lower().endswith(IMAGE_SUFFIXES)]
    if len(images) < len(names):
        logging.getLogger(__name__).warning("%s: skipped %d file(s) that are not %s images", folder,
                                            len(names) - len(images), "/".join(IMAGE_SUFFIXES))
    return images


def split_images(root: str, folder: str, emotion: str) -> List[str]:
    """The image files of root/<folder>/<emotion>/ that this trainer uses: all of train/,
    and of test/ the PublicTest ones (the model-selection split). PrivateTest_* files,
    which a full Kaggle download has in test/, are kept back: counted in the log, never read."""
    images = image_files(os.path.join(root, folder, emotion))
    kept = [p for p in images if features.folder_split(folder, os.path.basename(p)) != "test"]
    if len(kept) < len(images):
        logging.getLogger(__name__).warning(
            "%s: %d PrivateTest file(s) kept back, not used", os.path.join(root, folder, emotion),
            len(images) - len(kept))
    return kept


def load_split(root: str, split: str, classes: Sequence[str],
               per_class: int = 0) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """(pixels [N, 48, 48, 1] float32 in [0, 1], class ids [N], image ids) of
    root/split/<emotion>/ for the given classes (`split_images`: test/ means PublicTest);
    at most `per_class` images per class (sorted by name) when > 0. Unreadable or
    wrongly sized images raise, naming the file."""
    images, labels, ids = [], [], []
    for class_id, emotion in enumerate(classes):
        folder = os.path.join(root, split, emotion)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{folder}: no such folder (expected {split}/<emotion>/ images)")
        for path in split_images(root, split, emotion)[:per_class or None]:
            try:
                with Image.open(path) as image:
                    array = np.asarray(image.convert("L"), dtype=np.float32)
            except OSError as error:
                raise ValueError(f"{path}: not a readable image ({error})") from None
            if array.shape != (features.IMAGE_SIZE, features.IMAGE_SIZE):
                raise ValueError(f"{path}: {array.shape[1]}x{array.shape[0]} pixels, expected "
                                 f"{features.IMAGE_SIZE}x{features.IMAGE_SIZE}")
            images.append(array / 255.0)
            labels.append(class_id)
            ids.append(image_id(path, emotion))
    if not images:
        raise ValueError(f"{os.path.join(root, split)}: no images of {', '.join(classes)}")
    return np.stack(images)[..., None], np.asarray(labels, np.int64), ids


def image_id(path: str, emotion: str) -> str:
    """The key the validation carve-out hashes: file name without suffix, then the emotion."""
    return features.carve_out_key(os.path.splitext(os.path.basename(path))[0], emotion)


def is_validation(image_ids: Sequence[str], fraction: float) -> np.ndarray:
    """Deterministic carve-out (`features.in_carve_out`), the Trainer's faces."""
    return np.asarray(features.in_carve_out(image_ids, fraction), dtype=bool)


def evaluate(network: keras.Model, x: np.ndarray, y: np.ndarray, classes: Sequence[str],
             views: Sequence[model_lib.View] = ()) -> Dict:
    """Accuracy, macro-F1 and per-class recall/precision/F1 of the network's label, or of
    the mean of its probabilities over test-time views (`probabilities`)."""
    return classification_metrics(y, probabilities(network, x, views).argmax(axis=1), classes)


def probabilities(network: keras.Model, x: np.ndarray, views: Sequence[model_lib.View] = ()) -> np.ndarray:
    """The network's class probabilities for faces `x` [N, 48, 48, 1]; with `views`, the
    mean over those views of each face (`model.TEST_TIME_VIEWS`: test-time augmentation;
    "flip", the face and its mirror image)."""
    views = tuple(views) or (model_lib.View(),)
    total = 0.0
    for view in views:
        total = total + network.predict(model_lib.view_of(x, view), batch_size=256, verbose=0)
    return total / len(views)


def soft_targets(labels: np.ndarray, teacher_probabilities: np.ndarray, weight: float,
                 temperature: float) -> np.ndarray:
    """Knowledge-distillation targets: (1 - weight) x one-hot + weight x the teacher's
    probabilities softened by `temperature` (p^(1/T), renormalised)."""
    softened = np.power(np.clip(teacher_probabilities, 1e-8, 1.0), 1.0 / temperature)
    softened /= softened.sum(axis=1, keepdims=True)
    one_hot = np.eye(teacher_probabilities.shape[1], dtype=np.float32)[labels]
    return ((1.0 - weight) * one_hot + weight * softened).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Teacher:
    """A trained model whose predictions the student learns from (distillation). An
    ensemble teaches too: `model` and `weights` then name its members, comma-separated
    and in the same order, and the teacher's probabilities are the mean of theirs."""
    model: str
    weights: str
    weight: float = 0.7
    temperature: float = 2.0
    views: str = ""  # a model.TEST_TIME_VIEWS name: the teacher's probabilities averaged over those views
    # True: the teacher answers each augmented face during training, as the student sees it
    # (`model.OnlineDistillation`); False: once, before training, for each face as it is.
    online: bool = False

    def __post_init__(self):
        if self.views and self.views not in model_lib.TEST_TIME_VIEWS:
            raise ValueError(f"teacher views {self.views!r} are not one of {sorted(model_lib.TEST_TIME_VIEWS)}")

    def check(self, config: TrainingConfig) -> None:
        """Refuses what online distillation cannot honour: its added loss is neither label-
        smoothed nor weighed by class, and it teaches on augmented faces."""
        if not self.online:
            return
        problems = ([f"label smoothing ({config.label_smoothing})"] if config.label_smoothing else []) + (
            [f"class weights (--imbalance {config.imbalance})"] if config.imbalance == "class_weight" else []) + (
            ["no augmentation"] if not config.augment else [])
        if problems:
            raise ValueError(f"an online teacher does not go with {' or '.join(problems)}")

    def networks(self, classes: int) -> List[keras.Model]:
        """Its members, built and loaded."""
        networks = []
        for name, path in self.members():
            network = model_lib.build(name, classes)
            network.load_weights(path)
            networks.append(network)
        return networks

    def members(self) -> List[Tuple[str, str]]:
        """(architecture, weights file) of each network that teaches."""
        models, weights = self.model.split(","), self.weights.split(",")
        if len(models) != len(weights):
            raise ValueError(f"the teacher names {len(models)} model(s) ({self.model}) but "
                             f"{len(weights)} weights file(s) ({self.weights})")
        for name, path in zip(models, weights):
            if name not in model_lib.BUILDERS:
                raise ValueError(f"teacher model {name!r} is not one of {sorted(model_lib.BUILDERS)}")
            if not os.path.isfile(path):
                raise FileNotFoundError(f"teacher weights {path} (for {name}) not found")
        return list(zip(models, weights))

    def probabilities(self, x: np.ndarray, classes: int) -> np.ndarray:
        """The teacher's class probabilities for faces `x`: the mean over its members."""
        networks = self.networks(classes)
        total = np.zeros((len(x), classes), np.float32)
        for network in networks:
            total += probabilities(network, x, model_lib.TEST_TIME_VIEWS.get(self.views, ()))
        return total / len(networks)

    def online_distillation(self, classes: int) -> model_lib.OnlineDistillation:
        return model_lib.OnlineDistillation(self.networks(classes), self.weight, self.temperature,
                                            model_lib.TEST_TIME_VIEWS.get(self.views, ()),
                                            name="online_distillation")


def train(data: str, output: str, config: TrainingConfig, per_class: int = 0,
          teacher: Optional[Teacher] = None, max_minutes: float = 0.0,
          warm_start_classes: Sequence[str] = (), carry: bool = False) -> Dict:
    """Trains `config.model` on data/train (distilled from `teacher` if given), evaluates
    on data/test; writes the weights, result.json and curves.png into `output`; returns
    the result. `warm_start_classes`: the classes `config.warm_start` was trained on, when
    not the same as `config.classes` (a superset). `config.average_from` > 0: also average
    the weights of every epoch from that one on (`average_weights`). `carry`: go on from
    the checkpoints of this run started with another epoch count or averaging start
    (`recipe.carry_over`)."""
    if teacher:
        teacher.check(config)   # before anything is read or written
    os.makedirs(output, exist_ok=True)
    checkpoint_dir = config.checkpoint_dir or os.path.join(output, "checkpoints")
    data_id = (f"{os.path.abspath(data)} per_class={per_class} teacher={teacher}"
               + (f" warm_start_classes={list(warm_start_classes)}" if warm_start_classes else ""))
    if carry:   # before the data is read and the teacher answers: a refusal costs nothing
        recipe.carry_over(recipe.training_dir(checkpoint_dir, config, data_id), config, data_id)
    keras.utils.set_random_seed(config.seed)
    classes = list(config.classes)
    x, y, ids = load_split(data, "train", classes, per_class)
    held_out = is_validation(ids, config.validation_fraction)
    x_test, y_test, _ = load_split(data, "test", classes, per_class)
    counts = np.bincount(y[~held_out], minlength=len(classes))
    network = model_lib.build(config.model, len(classes), config.pretrained_weights)
    if config.warm_start and warm_start_classes and list(warm_start_classes) != classes:
        model_lib.load_weights_for_classes(network, config.model, config.warm_start,
                                           warm_start_classes, classes)
    elif config.warm_start:
        model_lib.load_trained_weights(network, config.model, config.warm_start)
    warm_start_test = (evaluate(network, x_test, y_test, classes) if config.warm_start else None)
    online = teacher.online_distillation(len(classes)) if teacher and teacher.online else None
    model = model_lib.training_model(network, config, online)
    one_hot = np.eye(len(classes), dtype=np.float32)
    targets = one_hot[y[~held_out]]
    class_weight = recipe.class_weight_for(config, counts)
    example_weights = None
    if online:   # the labels' share of the loss; the teacher's is online's added loss
        example_weights = np.full(len(targets), 1.0 - teacher.weight, np.float32)
    elif teacher:
        # Keras weighs an example by the class of argmax(target); with soft targets that
        # is the teacher's guess, so the weights follow the true labels here instead.
        if class_weight:
            example_weights = np.asarray([class_weight[c] for c in y[~held_out]], np.float32)
        targets = soft_targets(y[~held_out], teacher.probabilities(x[~held_out], len(classes)),
                               teacher.weight, teacher.temperature)
    started, epochs, stopper = time.time(), _EpochCounter(), recipe.StopWhenAsked(max_minutes)
    train = _Shuffled(x[~held_out], targets, config.batch_size, config.seed, example_weights)
    averager = recipe.WeightAverage(network, config.average_from) if config.average_from else None
    history = recipe.fit(
        model, network, train, (x[held_out], one_hot[y[held_out]]), config, output,
        checkpoint_dir=checkpoint_dir, class_weight=None if example_weights is not None else class_weight,
        extra_callbacks=[ShuffleEachEpoch(train), stopper, epochs] + ([averager] if averager else []),
        data_id=data_id)
    average = (average_weights(network, averager, x[~held_out], (x[held_out], y[held_out]),
                               (x_test, y_test), classes, config.batch_size, output, config.model)
               if averager else None)
    seconds = time.time() - started
    # Every epoch's time, those of earlier invocations a resumed run continues included;
    # this invocation's fit alone when the history lacks epoch times.
    total_seconds = recipe.training_seconds(history)
    timed_epochs = len(history["loss"]) if total_seconds else max(epochs.count, 1)
    total_seconds = total_seconds or round(seconds, 1)
    weights = os.path.join(output, f"{config.model}.weights.h5")
    network.save_weights(weights)
    recipe.write_curves(history, os.path.join(output, recipe.CURVES_PNG),
                        f"{config.model}, {len(classes)} classes")
    result = {
        "model": config.model, "classes": classes, "backend": keras.backend.backend(),
        "weights": os.path.basename(weights), "parameters": int(network.count_params()),
        "flops_per_image": int(model_lib.flops_per_image(network)),
        "train_examples": int((~held_out).sum()), "validation_examples": int(held_out.sum()),
        "train_class_counts": dict(zip(classes, counts.tolist())),
        "epochs_run": len(history.get("loss", [])),
        # False when a time budget or SIGTERM ended it: the same command resumes it
        "finished": not stopper.stopped, "training_seconds": total_seconds,
        "invocation_seconds": round(seconds, 1), "invocation_epochs": epochs.count,
        "seconds_per_epoch": round(total_seconds / timed_epochs, 1),
        "best_validation_accuracy": max(history["val_accuracy"]) if history.get("val_accuracy") else None,
        "test": evaluate(network, x_test, y_test, classes),
        "test_flip_tta": evaluate(network, x_test, y_test, classes, views=model_lib.TEST_TIME_VIEWS["flip"]),
        "test_multiview_tta": evaluate(network, x_test, y_test, classes,
                                       views=model_lib.TEST_TIME_VIEWS["multiview"]),
        "recipe": dataclasses.asdict(config), "history": history,
        "teacher": dataclasses.asdict(teacher) if teacher else None,
        "warm_start_classes": list(warm_start_classes or classes) if config.warm_start else None,
        "warm_start_test": warm_start_test,
        "weight_average": average,
        "machine": machine(), "date": time.strftime("%Y-%m-%d"),
    }
    with open(os.path.join(output, RESULT_JSON), "w") as f:
        json.dump(result, f, indent=1)
    return result


def average_weights(network: keras.Model, averager: recipe.WeightAverage, x_train: np.ndarray,
                    validation: Tuple[np.ndarray, np.ndarray], test: Tuple[np.ndarray, np.ndarray],
                    classes: Sequence[str], batch_size: int, output: str, model: str) -> Optional[Dict]:
    """After the fit: `recipe.keep_average` with the batch-normalisation statistics from
    the training faces, the average saved as OUT/<model>.average.weights.h5, validation
    and PublicTest accuracies of both (None before any epoch was averaged)."""
    def score():
        return {"validation_accuracy": evaluate(network, *validation, classes)["accuracy"],
                "test_accuracy": evaluate(network, *test, classes)["accuracy"]}

    return recipe.keep_average(
        network, averager, (x_train[i:i + batch_size] for i in range(0, len(x_train), batch_size)),
        score, save_to=os.path.join(output, f"{model}.average.weights.h5"))


def machine() -> str:
    """What trained: CPU count and, on JAX, the accelerator."""
    description = f"{platform.machine()}, {os.cpu_count()} CPUs"
    if keras.backend.backend() == "jax":
        import jax
        kinds = sorted({d.device_kind for d in jax.devices() if d.platform != "cpu"})
    elif keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        kinds = [d.name for d in tf.config.list_physical_devices("GPU")]
    else:
        kinds = []
    return description + ("; " + ", ".join(kinds) if kinds else ", no GPU")


class _EpochCounter(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.count = 0

    def on_epoch_end(self, epoch, logs=None):
        self.count += 1


class _Shuffled(keras.utils.PyDataset):
    """Mini-batches of in-memory arrays (and per-example weights) in an order drawn from
    the seed and the epoch number (`ShuffleEachEpoch` sets it): a new order every epoch,
    and a resumed training gets the order an uninterrupted one would have had."""

    def __init__(self, x, y, batch_size, seed, weights=None):
        super().__init__()
        self.x, self.y, self.batch_size, self.weights = x, y, batch_size, weights
        self.seed = seed
        self.shuffle(0)

    def shuffle(self, epoch: int) -> None:
        self.order = np.random.default_rng([self.seed, epoch]).permutation(len(self.x))

    def __len__(self):
        return int(np.ceil(len(self.x) / self.batch_size))

    def __getitem__(self, index):
        chosen = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        if self.weights is None:
            return self.x[chosen], self.y[chosen]
        return self.x[chosen], self.y[chosen], self.weights[chosen]


class ShuffleEachEpoch(recipe.ByEpoch):
    def __init__(self, data: _Shuffled):
        super().__init__()
        self.data = data

    def begin(self, epoch: int) -> None:
        self.data.shuffle(epoch)


def build_parser() -> argparse.ArgumentParser:
    """The command line of `main` (also parsed by the tests of scripts/reproduce.sh)."""
    parser = argparse.ArgumentParser(prog="python -m components.trainer.standalone",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="FER2013 folder with train/ and test/")
    parser.add_argument("--output", required=True, help="where weights and result.json go")
    parser.add_argument("--model", choices=sorted(model_lib.BUILDERS), default="dcnn")
    parser.add_argument("--classes", default=",".join(features.EMOTIONS))
    parser.add_argument("--epochs", type=int, default=TrainingConfig.epochs)
    parser.add_argument("--batch-size", type=int, default=TrainingConfig.batch_size)
    parser.add_argument("--learning-rate", type=float, default=TrainingConfig.learning_rate)
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=TrainingConfig.optimizer)
    parser.add_argument("--label-smoothing", type=float, default=0.0)
    parser.add_argument("--weight-decay", type=float, default=0.0,
                        help="adamw's decoupled weight decay (default: 0, meaning Keras' 1e-4)")
    parser.add_argument("--random-erasing", type=float, default=0.0,
                        help="share of training faces with one random rectangle erased (default: 0)")
    parser.add_argument("--camera", type=float, default=0.0,
                        help="probability of each camera distortion (exposure, contrast, blur, noise) "
                             "for a training face (default: 0)")
    parser.add_argument("--imbalance", choices=("class_weight", "none"), default=TrainingConfig.imbalance)
    parser.add_argument("--patience", type=int, default=TrainingConfig.early_stopping_patience)
    parser.add_argument("--reduce-lr-patience", type=int,
                        help="epochs without a better validation accuracy before the learning "
                             "rate is halved (default: half of --patience)")
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=TrainingConfig.lr_schedule,
                        help="plateau: halve the learning rate when validation accuracy stalls; "
                             "cosine: a half cosine from --learning-rate to 0 over --epochs")
    parser.add_argument("--pretrained-weights", default="")
    parser.add_argument("--warm-start", default="")
    parser.add_argument("--warm-start-classes",
                        help="the classes --warm-start was trained on, if a superset of --classes "
                             "(e.g. all 7 to start a happy/sad/neutral model)")
    parser.add_argument("--per-class", type=int, default=0, help="at most this many images per class")
    parser.add_argument("--teacher-model",
                        help="distil from this trained model (with --teacher-weights); "
                             "comma-separated for an ensemble (e.g. resnet18,dcnn)")
    parser.add_argument("--teacher-weights",
                        help="the teacher's .weights.h5 (same classes); comma-separated, one "
                             "per --teacher-model, for an ensemble")
    parser.add_argument("--distill-weight", type=float, default=0.7,
                        help="share of the teacher's soft targets in the training targets")
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--teacher-views", choices=sorted(model_lib.TEST_TIME_VIEWS), default="",
                        help="the teacher's probabilities averaged over these test-time views of each face")
    parser.add_argument("--teacher-flip", dest="teacher_views", action="store_const", const="flip",
                        help="the same as --teacher-views flip: each face and its mirror image")
    parser.add_argument("--teacher-online", action="store_true",
                        help="the teacher answers each augmented face during training, as the student "
                             "sees it, instead of each face once before training (costs a teacher "
                             "forward pass per view and step)")
    parser.add_argument("--average-from", type=int, default=0,
                        help="also average the weights of every epoch from this one on "
                             "(stochastic weight averaging; kept when no worse on validation); "
                             "0: off")
    parser.add_argument("--carry-over", action="store_true",
                        help="go on from the checkpoints of this same run started with another "
                             "--epochs or --average-from (a cosine's epoch count sets its curve, "
                             "so it is part of the checkpoint key): its finished epochs are kept "
                             "and the rest follow this run's curve")
    parser.add_argument("--max-minutes", type=float, default=0.0,
                        help="stop cleanly (best weights kept and saved) after this many minutes "
                             "of training; SIGTERM does the same")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        config = TrainingConfig(
            model=args.model, classes=features.validate_classes(args.classes.split(",")),
            epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
            optimizer=args.optimizer, label_smoothing=args.label_smoothing, imbalance=args.imbalance,
            weight_decay=args.weight_decay, random_erasing=args.random_erasing, camera=args.camera,
            early_stopping_patience=args.patience,
            reduce_lr_patience=(args.reduce_lr_patience if args.reduce_lr_patience is not None
                                else max(1, args.patience // 2)), lr_schedule=args.lr_schedule,
            pretrained_weights=args.pretrained_weights,
            warm_start=args.warm_start, average_from=args.average_from)
        if bool(args.teacher_model) != bool(args.teacher_weights):
            raise ValueError("--teacher-model and --teacher-weights go together")
        if args.teacher_online and not args.teacher_model:
            raise ValueError("--teacher-online needs --teacher-model and --teacher-weights")
        teacher = (Teacher(args.teacher_model, args.teacher_weights, args.distill_weight, args.temperature,
                           args.teacher_views, args.teacher_online)
                   if args.teacher_model else None)
        if teacher:
            teacher.members()  # bad names or missing files fail here, before any data is read
        trained_classes = (features.validate_classes(args.warm_start_classes.split(","))
                           if args.warm_start_classes else ())
        if trained_classes and not args.warm_start:
            raise ValueError("--warm-start-classes needs --warm-start")
        result = train(args.data, args.output, config, args.per_class, teacher, args.max_minutes,
                       trained_classes, args.carry_over)
    except (ValueError, FileNotFoundError) as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
    print(json.dumps({k: result[k] for k in ("model", "backend", "epochs_run", "seconds_per_epoch",
                                             "best_validation_accuracy")}
                     | {"test_accuracy": result["test"]["accuracy"],
                        "test_accuracy_flip_tta": result["test_flip_tta"]["accuracy"],
                        "test_accuracy_multiview_tta": result["test_multiview_tta"]["accuracy"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
