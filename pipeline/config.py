"""Typed, frozen configuration: read once at the edge (CLI/runners), passed down as values.

`IngestConfig`, `TrainingConfig` and `EvaluationConfig` travel into components as
plain dicts (`to_dict`/`from_dict`), so what a run used is recorded in ML Metadata.
`profile_configs` holds the two built-in profiles.
"""
import dataclasses
import json
import math
from typing import Any, Dict, Mapping, Optional, Tuple

from pipeline import features

PROFILES = ("smoke", "full")
# The orchestrators `pipeline.run` drives (LocalDagRunner, BeamDagRunner) and the Beam
# DirectRunner's modes.
RUNNERS = ("local", "beam")
DIRECT_MODES = ("in_memory", "multi_processing")
IMBALANCE_STRATEGIES = ("class_weight", "oversample", "none")
OPTIMIZERS = ("nadam", "adam", "adamw", "sgd", "rmsprop")
# How the learning rate moves: halved on a validation plateau (the seed's), or a cosine
# from its starting value to zero over each training phase.
LR_SCHEDULES = ("plateau", "cosine")
# The model registry's names (components/trainer/model.py BUILDERS; a test keeps them equal).
MODELS = ("dcnn", "vggnet", "resnet18", "compact", "compact_resnet", "vgg16", "resnet50", "ensemble")
TRANSFER_MODELS = ("vgg16", "resnet50")


def _check_numbers(instance) -> None:
    """Every int/float field holds a finite number of its kind (YAML reads `1e-3` as text)."""
    for field in dataclasses.fields(instance):
        value = getattr(instance, field.name)
        if field.type in (float, int) and (isinstance(value, bool) or not isinstance(value, (int, float))
                                           or not math.isfinite(value)):
            hint = " (YAML reads 1e-3 as text: write 1.0e-3 or 0.001)" if isinstance(value, str) else ""
            raise ValueError(f"{field.name} must be a number, got {value!r}{hint}")
        if field.type is int and isinstance(value, float):
            raise ValueError(f"{field.name} must be a whole number, got {value!r}")
ACTIONS = ("warn", "block")


class _DictMixin:
    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """The form a component parameter carries (stable key order, so caching works)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str):
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown key(s) {sorted(unknown)}")
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**kwargs)


@dataclasses.dataclass(frozen=True)
class IngestConfig(_DictMixin):
    """How the ExampleGen reads FER2013.

    layout: 'folder' (train/ and test/ with one folder per emotion), 'csv'
      (fer2013.csv or icml_face_data.csv) or 'zip' (a .zip of either).
    classes: emotions to keep; records of other emotions are excluded and counted.
    sample_per_class: per split, keep at most this many records of each class
      (a deterministic, stratified sample); 0 keeps everything.
    annotations, annotation_columns: a CSV keyed by image_id whose other columns
      (e.g. gender, age_group) become string features of every example.
    """
    layout: str
    classes: Tuple[str, ...] = features.EMOTIONS
    sample_per_class: Tuple[Tuple[str, int], ...] = ()
    annotations: str = ""                       # CSV keyed by image_id, joined at ingestion
    annotation_columns: Tuple[str, ...] = ()    # its columns (besides image_id)

    def __post_init__(self):
        if self.layout not in ("folder", "csv", "zip"):
            raise ValueError(f"unknown layout {self.layout!r}")
        features.validate_classes(self.classes)

    def sample_size(self, split: str) -> int:
        return dict(self.sample_per_class).get(split, 0)

    @classmethod
    def from_dict(cls, values):
        values = dict(values)
        values["sample_per_class"] = tuple(tuple(x) for x in values.get("sample_per_class", ()))
        return super().from_dict(values)


@dataclasses.dataclass(frozen=True)
class TrainingConfig(_DictMixin):
    """Hyperparameters and recipe of the Trainer."""
    model: str = "dcnn"
    classes: Tuple[str, ...] = features.EMOTIONS
    epochs: int = 100
    batch_size: int = 32
    learning_rate: float = 1e-3
    validation_fraction: float = 0.1   # carved from train, by hash of image_id
    early_stopping_patience: int = 12
    reduce_lr_patience: int = 6
    reduce_lr_factor: float = 0.5
    # 'plateau': ReduceLROnPlateau (reduce_lr_patience, reduce_lr_factor); 'cosine': the
    # learning rate follows a half cosine from learning_rate to 0 over the epochs, so a run
    # of a fixed length ends on a low learning rate (one cut short by a time budget does not).
    lr_schedule: str = "plateau"
    augment: bool = True
    # Random erasing on top of the augmentation (flip, rotation, shift, zoom): the share of
    # training faces that get one rectangle (trainer model.ERASING: 2-40% of the face)
    # filled with a random grey. 0 = off. Only with augment.
    random_erasing: float = 0.0
    # Camera distortions on top of those (trainer model.RandomCamera): exposure, contrast,
    # blur and sensor noise, each drawn for a training face with this probability, at a
    # random strength. 0 = off. Only with augment.
    camera: float = 0.0
    # Response to class imbalance: 'class_weight' (weights n / (k * n_c) from the
    # class counts of the training data), 'oversample' (every class drawn equally
    # often) or 'none'.
    imbalance: str = "class_weight"
    # Prior correction at decision time (logit adjustment): the exported model divides
    # its probabilities by the training data's class prior raised to this power and
    # renormalises, so rare classes (disgust, fear) are predicted more often and common
    # ones (happy) less. 0 = off: the network's own probabilities. Meant for
    # imbalance='none' (class weights or oversampling already balance the classes). It
    # changes only the export, not the training.
    prior_correction: float = 0.0
    # Temperature scaling at export (Guo et al., 2017): the exported model divides its
    # logits (the log of the network's probabilities plus the prior correction's bias) by
    # this temperature, so an overconfident network (> 1) or an underconfident one (< 1)
    # serves probabilities that match how often it is right. It never changes which class
    # is most probable. 1 = off; 0 = the Trainer fits it on its validation carve-out
    # (least negative log-likelihood) before it exports. `python -m pipeline.calibration`
    # fits and scores it for any served model.
    calibration_temperature: float = 1.0
    optimizer: str = "nadam"          # nadam (the seed's), adam, adamw, sgd (Nesterov), rmsprop
    momentum: float = 0.9             # sgd and rmsprop
    weight_decay: float = 0.0         # adamw (0 means its default 1e-4)
    label_smoothing: float = 0.0
    # Transfer models (vgg16, resnet50): ImageNet weights file ('' = the Keras cache if it
    # has them, else random init); with weights, `freeze_epochs` train the head on the
    # frozen base, then the top block is unfrozen at learning_rate * fine_tune_lr_factor.
    pretrained_weights: str = ""
    freeze_epochs: int = 5
    fine_tune_lr_factor: float = 0.1
    # Checkpoints: a stable directory makes an interrupted training resume from its last
    # finished epoch ('' = a fresh directory under the Trainer's model_run_dir).
    checkpoint_dir: str = ""
    # Weights (.weights.h5) trained elsewhere, e.g. on a GPU with the standalone trainer,
    # loaded before training; with epochs=0 the Trainer only exports them.
    warm_start: str = ""
    # Weight averaging (stochastic weight averaging, Izmailov et al., 2018): the running
    # mean of the network's weights at the end of every epoch from this one (counted from
    # 1, in the last phase) on; after the fit its batch-normalisation statistics are
    # recomputed on the training faces and it replaces the best epoch's weights when no
    # worse on the validation carve-out. Meant for a constant learning rate (lr_schedule
    # plateau with reduce_lr_patience and early_stopping_patience above the epochs, e.g.
    # fine-tuning a warm start). 0 = off.
    average_from: int = 0
    # model 'ensemble': the exported models (version folders or their parents, e.g.
    # models/fer2013-resnet18) served as one, the mean of their served probabilities
    # (components.trainer.ensemble); exported with epochs=0, not trained.
    ensemble: Tuple[str, ...] = ()
    seed: int = 42

    def __post_init__(self):
        features.validate_classes(self.classes)
        _check_numbers(self)
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose from {', '.join(MODELS)}")
        if self.pretrained_weights and self.model not in TRANSFER_MODELS:
            raise ValueError(f"pretrained_weights apply to {', '.join(TRANSFER_MODELS)} only, "
                             f"not {self.model!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.ensemble and self.model != "ensemble":
            raise ValueError(f"ensemble members need model 'ensemble', got model {self.model!r}")
        if any("://" in member for member in self.ensemble):
            raise ValueError("ensemble members are read from local or mounted folders, not object "
                             f"storage: {', '.join(m for m in self.ensemble if '://' in m)}")
        if self.ensemble and (self.epochs != 0 or self.warm_start):
            raise ValueError("an ensemble of exported models is exported as it is, not trained: "
                             f"epochs must be 0 and no warm_start, got epochs {self.epochs}")
        if self.epochs < 0 or (self.epochs == 0 and not (self.warm_start or self.model == "ensemble")):
            raise ValueError(f"epochs must be >= 1 (0 only with a warm start), got {self.epochs}")
        if self.average_from < 0:
            raise ValueError(f"average_from must be >= 0 (0: off), got {self.average_from}")
        if self.early_stopping_patience < 0 or self.reduce_lr_patience < 0:
            raise ValueError("early_stopping_patience and reduce_lr_patience must be >= 0")
        if not 0.0 < self.reduce_lr_factor < 1.0:
            raise ValueError(f"reduce_lr_factor must be in (0, 1), got {self.reduce_lr_factor}")
        if "://" in self.checkpoint_dir:
            raise ValueError(f"checkpoint_dir {self.checkpoint_dir!r}: object storage is not supported "
                             "for checkpoints; use a local or mounted path (a volume, gcsfuse)")
        if not 0.0 <= self.momentum < 1.0 or self.weight_decay < 0:
            raise ValueError("momentum must be in [0, 1) and weight_decay >= 0")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if not 0.0 <= self.random_erasing <= 1.0:
            raise ValueError(f"random_erasing must be in [0, 1], got {self.random_erasing}")
        if not 0.0 <= self.camera <= 1.0:
            raise ValueError(f"camera must be in [0, 1], got {self.camera}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.learning_rate <= 0 or not 0 < self.fine_tune_lr_factor <= 1 or self.freeze_epochs < 0:
            raise ValueError("learning_rate must be > 0, fine_tune_lr_factor in (0, 1], freeze_epochs >= 0")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, "
                             f"got {self.lr_schedule!r}")
        if self.imbalance not in IMBALANCE_STRATEGIES:
            raise ValueError(f"imbalance must be one of {', '.join(IMBALANCE_STRATEGIES)}, "
                             f"got {self.imbalance!r}")
        if not 0.0 < self.validation_fraction < 0.5:
            raise ValueError("validation_fraction must be in (0, 0.5)")
        if not 0.0 <= self.prior_correction <= 2.0:
            raise ValueError(f"prior_correction must be in [0, 2], got {self.prior_correction}")
        if not (self.calibration_temperature == 0.0 or 0.05 <= self.calibration_temperature <= 20.0):
            raise ValueError("calibration_temperature must be 0 (fit it) or in [0.05, 20], got "
                             f"{self.calibration_temperature}")


@dataclasses.dataclass(frozen=True)
class TuningConfig(_DictMixin):
    """The TFX Tuner (keras-tuner random search) before the Trainer; off by default.
    The best batch size, learning rate and optimizer replace the TrainingConfig's."""
    enabled: bool = False
    max_trials: int = 6
    epochs: int = 5                   # per trial
    batch_sizes: Tuple[int, ...] = (32, 64, 128)
    learning_rates: Tuple[float, ...] = (3e-4, 1e-3, 3e-3)
    optimizers: Tuple[str, ...] = ("nadam", "adam", "sgd")

    def __post_init__(self):
        _check_numbers(self)
        if self.max_trials < 1 or self.epochs < 1:
            raise ValueError("tuning max_trials and epochs must be >= 1")
        if not self.batch_sizes or not self.learning_rates or not self.optimizers:
            raise ValueError("tuning needs at least one batch size, learning rate and optimizer")
        if any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in self.batch_sizes):
            raise ValueError(f"tuning batch_sizes must be whole numbers >= 1, got {list(self.batch_sizes)}")
        if any(isinstance(r, (bool, str)) or not r > 0 for r in self.learning_rates):
            raise ValueError(f"tuning learning_rates must be numbers > 0, got {list(self.learning_rates)}")
        unknown = sorted(set(self.optimizers) - set(OPTIMIZERS))
        if unknown:
            raise ValueError(f"unknown optimizer(s) {unknown}; choose from {', '.join(OPTIMIZERS)}")


@dataclasses.dataclass(frozen=True)
class EvaluationConfig(_DictMixin):
    """Blessing gates of the Evaluator.

    min_accuracy: overall accuracy on the eval split must reach this.
    max_regression: accuracy may drop at most this much against the latest
      blessed model (absolute, e.g. 0.01 = one point).
    fairness_*: the fairness gate of the AuditGate (see components/audit).
    """
    min_accuracy: float = 0.55
    max_regression: float = 0.01
    # Fairness: on every annotation slice (and every brightness/contrast band when
    # fairness_proxy_slices) with at least fairness_min_examples examples, accuracy
    # may trail overall accuracy by at most fairness_max_gap.
    fairness_max_gap: float = 0.10
    fairness_min_examples: int = 30
    fairness_proxy_slices: bool = False


@dataclasses.dataclass(frozen=True)
class ValidationConfig(_DictMixin):
    """Every data-validation threshold, in one place.

    Imbalance (per split and span, from TFDV statistics of `label_name`):
      min_class_share: a class below this share of its split is an anomaly.
      max_imbalance_ratio: largest class count / smallest above this is an anomaly.
      imbalance_action: 'warn' (reported, the run goes on) or 'block'.
    Drift (new span vs previous span, same split) and skew (eval/test vs train),
    measured by TFX's DistributionValidator:
      label_linf_drift / label_linf_skew: L-infinity distance of the string label.
      brightness_js / contrast_js: Jensen-Shannon divergence of the per-image mean
        brightness and contrast (both in [0, 1]) computed once at ingestion.
      drift_action: 'block' stops the run before Transform, 'warn' only reports.
    Schema (ExampleValidator against the curated schema):
      schema_action: 'block' or 'warn' for unknown labels, missing images, etc.
    """
    min_class_share: float = 0.03
    max_imbalance_ratio: float = 10.0
    imbalance_action: str = "warn"
    label_linf_drift: float = 0.1
    label_linf_skew: float = 0.1
    brightness_js: float = 0.1
    contrast_js: float = 0.1
    drift_action: str = "block"
    schema_action: str = "block"

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type is float and (isinstance(value, bool) or not isinstance(value, (int, float))
                                        or not math.isfinite(value)):
                raise ValueError(f"{field.name} must be a finite number, got {value!r}")
        for name in ("imbalance_action", "drift_action", "schema_action"):
            if getattr(self, name) not in ACTIONS:
                raise ValueError(f"{name} must be one of {', '.join(ACTIONS)}, "
                                 f"got {getattr(self, name)!r}")
        for name in ("min_class_share", "label_linf_drift", "label_linf_skew",
                     "brightness_js", "contrast_js"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.max_imbalance_ratio < 1.0:
            raise ValueError(f"max_imbalance_ratio must be >= 1, got {self.max_imbalance_ratio}")


def check_training_keys(keys) -> None:
    """Raises ValueError for keys that are not overridable TrainingConfig fields."""
    fixed = sorted({"model", "classes"} & set(keys))
    if fixed:
        raise ValueError(f"training overrides cannot set {', '.join(fixed)}: they name the pipeline; "
                         "use --model/--classes (or the top-level keys of the Kubeflow config)")
    unknown = sorted(set(keys) - {f.name for f in dataclasses.fields(TrainingConfig)})
    if unknown:
        raise ValueError(f"unknown training key(s) {unknown}")


def with_overrides(training: TrainingConfig, overrides: Mapping[str, Any]) -> TrainingConfig:
    """`training` with `overrides` (TrainingConfig keys except model and classes, which name
    the pipeline) applied at once, so that e.g. epochs=0 and warm_start go together."""
    check_training_keys(overrides)
    training = dataclasses.replace(training, **{k: tuple(v) if isinstance(v, list) else v
                                                for k, v in overrides.items()})
    if training.model == "ensemble" and not training.ensemble:
        raise ValueError("model 'ensemble' needs its members: ensemble (--ensemble), the model "
                         "folders to serve as one")
    return training


def serving_model_name(model: str, classes: Tuple[str, ...]) -> str:
    """Pipeline and serving model name: fer2013-<model>[-<classes>], an underscore in the
    model's name written as a hyphen (KFP-safe: [a-z0-9-]; `compact_resnet` ->
    fer2013-compact-resnet)."""
    suffix = "" if tuple(classes) == features.EMOTIONS else "-" + "-".join(classes)
    return f"fer2013-{model.replace('_', '-')}{suffix}"


@dataclasses.dataclass(frozen=True)
class ProfileConfig:
    sample_per_class: Tuple[Tuple[str, int], ...]
    training: TrainingConfig
    evaluation: EvaluationConfig
    validation: ValidationConfig = ValidationConfig()


def profile_configs(profile: str, model: str, classes: Tuple[str, ...],
                    epochs: Optional[int] = None,
                    min_accuracy: Optional[float] = None) -> ProfileConfig:
    """The smoke or full profile, with optional overrides from the command line."""
    if profile == "smoke":
        # A few minutes on 2 CPU cores: ~40 train and 20 eval/test faces per class.
        sample = (("train", 40), ("eval", 20), ("test", 20))
        training = TrainingConfig(model=model, classes=classes, epochs=2, batch_size=32,
                                  validation_fraction=0.2, early_stopping_patience=2,
                                  reduce_lr_patience=1)
        # A smoke model is barely trained: the gate only proves the machinery works.
        evaluation = EvaluationConfig(min_accuracy=0.05, max_regression=1.0, fairness_max_gap=1.0,
                                      fairness_min_examples=1)
    elif profile == "full":
        sample = ()
        # Served probabilities calibrated: the Trainer fits the temperature on its
        # validation carve-out (it never changes a label; --calibration-temperature 1 = off).
        training = TrainingConfig(model=model, classes=classes, calibration_temperature=0.0)
        evaluation = EvaluationConfig()
    else:
        raise ValueError(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
    if epochs is not None:
        training = dataclasses.replace(training, epochs=epochs)
    if min_accuracy is not None:
        evaluation = dataclasses.replace(evaluation, min_accuracy=min_accuracy)
    return ProfileConfig(sample, training, evaluation)
