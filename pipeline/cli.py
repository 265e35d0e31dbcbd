"""`fer-pipeline`: the command line of the FER2013 TFX pipeline.

    fer-pipeline run --data PATH --output DIR [--profile smoke|full] [--runner local|beam]
                     [--model NAME] [--classes a,b,c] [--epochs N] [--min-accuracy X]
                     [--imbalance class_weight|oversample|none] [--prior-correction X]
                     [--calibration-temperature T] [--warm-start H5] [--average-from EPOCH]
                     [--model ensemble --epochs 0 --ensemble MODEL_DIR...]
                     [--validation-config FILE]
    fer-pipeline validate --data PATH --output DIR [--profile ...] [--classes ...]
                     [--validation-config FILE]      (ingest and validate only)
    fer-pipeline predict PHOTO... (--model DIR | --server URL [--model-name NAME])
                     [--tta flip|multiview|flip_when_unsure] [--whole-image] [--json] [--annotate OUTDIR]
    fer-pipeline models [--models-dir DIR] [--json]   (the shipped models and their PublicTest scores)
    fer-pipeline compile --output FILE.yaml [--config kubeflow/config.yaml] [--image IMAGE]
                     [--pipeline-root URI] [--data URI] [--serving-dir URI] [--profile ...]

Exit codes: 0 the pipeline ran (blessed or not: see the summary), 1 a
component failed, 2 bad arguments or unusable data, 3 data validation
blocked the run before Transform (the summary and data report say why).
"""
import argparse
import dataclasses
import logging
import os
import sys
import traceback
import warnings
from typing import List, Optional

# Quiet TensorFlow's C++ start-up chatter and library deprecation notices. Set, not
# defaulted: importing JAX (a Keras backend) in a parent process exports level 1.
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0" if "--verbose" in sys.argv else "3"
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)

PROG = "fer-pipeline"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage dump
        sys.stderr.write(f"{PROG}: error: {message}\n")
        sys.exit(2)


def _parser() -> argparse.ArgumentParser:
    from pipeline import config  # not pipeline.run: parsing imports no TFX

    parser = _Parser(prog=PROG, description="TFX pipeline for facial emotion recognition on FER2013")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("run", help="run the pipeline: ingest, validate, train, evaluate, push")
    v = sub.add_parser("validate", help="ingest and validate the data only (no training): "
                                        "imbalance, schema, skew and span drift, data report")
    for q in (p, v):
        q.add_argument("--data", required=True,
                       help="FER2013 as a Kaggle folder (train/, test/), fer2013.csv, or a .zip of "
                            "either; or a folder of spans span-1/, span-2/, ... (the newest is "
                            "ingested and checked for drift against the one before)")
        q.add_argument("--output", required=True, help="directory for everything the run makes")
        q.add_argument("--profile", choices=config.PROFILES, default="full",
                       help="smoke: small stratified sample, 2 epochs; full: all data, full recipe")
        q.add_argument("--runner", choices=config.RUNNERS, default="local",
                       help="orchestrator: TFX LocalDagRunner or BeamDagRunner")
        q.add_argument("--classes", default="",
                       help="comma-separated emotions to train on (default: all seven)")
        q.add_argument("--annotations", metavar="CSV",
                       help="per-image attributes keyed by image_id (e.g. gender, age_group): "
                            "joined at ingestion, the Evaluator slices by every column")
        q.add_argument("--validation-config",
                       help="YAML or JSON file overriding data-validation thresholds and actions "
                            "(keys of pipeline.config.ValidationConfig)")
        q.add_argument("--direct-mode", choices=config.DIRECT_MODES,
                       help="Beam DirectRunner mode (default: in_memory for local, "
                            "multi_processing for beam)")
        q.add_argument("--workers", type=int, default=0,
                       help="Beam DirectRunner workers (0: one per CPU)")
        q.add_argument("--no-cache", action="store_true", help="re-run every component")
        q.add_argument("--verbose", action="store_true", help="show TFX and Beam logs")
    p.add_argument("--model", choices=sorted(config.MODELS), default="dcnn",
                   help="the network to train (default: dcnn), or 'ensemble' with --ensemble")
    p.add_argument("--epochs", type=int, help="override the profile's number of epochs")
    p.add_argument("--min-accuracy", type=float,
                   help="override the profile's blessing threshold on eval accuracy")
    p.add_argument("--fairness-max-gap", type=float,
                   help="override the fairness gate: how far below overall accuracy an annotation "
                        "slice may be (default 0.10; smoke profile 1.0)")
    p.add_argument("--regression-baseline", metavar="latest|none|MODEL_ARTIFACT",
                   help="what the no-regression gate compares with: the latest model blessed in this "
                        "--output (latest, the default), nothing (none), or an earlier run's Trainer "
                        "model artifact folder (<output>/tfx/Trainer/model/<id>)")
    p.add_argument("--imbalance", choices=config.IMBALANCE_STRATEGIES,
                   help="the trainer's response to class imbalance (default: class_weight)")
    p.add_argument("--prior-correction", type=float, metavar="STRENGTH",
                   help="export a model whose probabilities are divided by the training class "
                        "prior to this power (logit adjustment; 0.5 is a good start with "
                        "--imbalance none): rare emotions predicted more often (default: 0, off)")
    p.add_argument("--calibration-temperature", type=float, metavar="T",
                   help="export a model whose logits (log-probabilities plus the prior "
                        "correction) are divided by T (temperature scaling; fit T with python -m "
                        "pipeline.calibration): > 1 tempers an overconfident network, labels never "
                        "change; 0: the Trainer fits T on its validation carve-out (the full profile's "
                        "default; the smoke profile's: 1, off)")
    p.add_argument("--training-config",
                   help="YAML or JSON file overriding the training recipe (keys of "
                        "pipeline.config.TrainingConfig); the flags below override it in turn")
    p.add_argument("--optimizer", choices=config.OPTIMIZERS, help="default: nadam")
    p.add_argument("--learning-rate", type=float, help="default: 0.001")
    p.add_argument("--lr-schedule", choices=config.LR_SCHEDULES,
                   help="plateau (default): halve the learning rate when validation accuracy "
                        "stalls; cosine: a half cosine from --learning-rate to 0 over --epochs")
    p.add_argument("--batch-size", type=int, help="per replica; default: 32")
    p.add_argument("--label-smoothing", type=float, help="default: 0")
    p.add_argument("--random-erasing", type=float,
                   help="share of training faces with one random rectangle erased (default: 0)")
    p.add_argument("--camera", type=float,
                   help="probability of each camera distortion (exposure, contrast, blur, noise) "
                        "for a training face (default: 0)")
    p.add_argument("--pretrained-weights", metavar="H5",
                   help="ImageNet weights for vgg16/resnet50 (default: the Keras cache if it has "
                        "them, else random initialisation)")
    p.add_argument("--average-from", type=int, metavar="EPOCH",
                   help="average the weights of every epoch from this one on (stochastic weight "
                        "averaging; kept when no worse on validation; default 0: off); meant for "
                        "a constant learning rate, e.g. fine-tuning a --warm-start")
    p.add_argument("--checkpoint-dir",
                   help="a stable checkpoint directory: a re-run after an interruption resumes "
                        "from the last finished epoch (also with a larger --epochs)")
    p.add_argument("--warm-start", metavar="WEIGHTS_H5",
                   help="start from weights trained elsewhere (the standalone GPU trainer); "
                        "with --epochs 0 they are only exported")
    p.add_argument("--ensemble", nargs="+", metavar="MODEL_DIR",
                   help="with --model ensemble --epochs 0: export these models (e.g. models/fer2013-resnet18 "
                        "models/fer2013-dcnn) as one, serving the mean of their probabilities")
    p.add_argument("--tune", action="store_true",
                   help="run the TFX Tuner (batch size, learning rate, optimizer) before training")
    p.add_argument("--tuning-config",
                   help="YAML or JSON file with keys of pipeline.config.TuningConfig (implies --tune)")

    f = sub.add_parser("predict", help="the emotions of the faces in photos (OpenCV face "
                                       "detection, then the model in process or on TF Serving)")
    f.add_argument("photos", nargs="+", metavar="PHOTO", help="image files (JPEG, PNG, ...)")
    where = f.add_mutually_exclusive_group(required=True)
    where.add_argument("--model", help="a pushed SavedModel: version directory or its base directory")
    where.add_argument("--server", help="TF Serving: http://host:8501 (REST) or grpc://host:8500")
    f.add_argument("--model-name", default="fer2013-dcnn", help="served model name (with --server)")
    f.add_argument("--timeout", type=float, default=10.0, help="seconds per server request")
    f.add_argument("--margin", type=float, default=0.2,
                   help="fraction of the face box added on each side of the crop")
    f.add_argument("--whole-image", action="store_true",
                   help="no face detection: each photo is one face crop (as FER2013's 48x48 faces are)")
    f.add_argument("--tta", metavar="VIEWS",
                   help="test-time augmentation: the mean over each face and its mirror image "
                        "(flip, 2 views) or both at four zooms (multiview, 8 views), by the "
                        "model's predict_image_<VIEWS> signature (older models: views sent by this client); "
                        "flip_when_unsure: the flip only for the faces the model is unsure of")
    f.add_argument("--json", action="store_true", help="print one JSON document")
    f.add_argument("--annotate", metavar="OUTDIR", help="write annotated copies of the photos here")
    f.add_argument("--verbose", action="store_true", help="show TensorFlow logs")

    m = sub.add_parser("models", help="the shipped models under models/ and their PublicTest "
                                      "accuracy (macro-F1) through each signature, from their metadata.json")
    m.add_argument("--models-dir", default="models", help="where the shipped models are (default: models)")
    m.add_argument("--json", action="store_true", help="print one JSON document instead of a Markdown table")
    m.add_argument("--per-class", action="store_true",
                   help="after the table, each model's precision / recall / F1 per emotion through each signature")

    c = sub.add_parser("compile", help="compile for Kubeflow Pipelines (KFP v2 PipelineSpec YAML)")
    c.add_argument("--output", required=True, help="the PipelineSpec file to write (.yaml)")
    c.add_argument("--config", help="Kubeflow configuration YAML (default: kubeflow/config.yaml)")
    c.add_argument("--image", help="override the config's container image")
    c.add_argument("--pipeline-root", help="override the config's pipeline_root (object storage)")
    c.add_argument("--data", help="override the config's data URI (object storage)")
    c.add_argument("--serving-dir", help="override the config's serving_dir (object storage)")
    c.add_argument("--profile", choices=config.PROFILES, help="override the config's profile")
    c.add_argument("--model", choices=sorted(config.MODELS), help="override the config's model")
    c.add_argument("--classes", help="override the config's classes (comma-separated)")
    c.add_argument("--verbose", action="store_true", help="show TFX logs")
    return parser


def _compile(args: argparse.Namespace) -> int:
    from kubeflow import runner

    config = runner.load_config(
        args.config or runner.DEFAULT_CONFIG, image=args.image, pipeline_root=args.pipeline_root,
        data=args.data, serving_dir=args.serving_dir, profile=args.profile, model=args.model,
        classes=args.classes.split(",") if args.classes else None)
    path = runner.compile_pipeline(config, args.output)
    gpu = config.trainer_gpu
    print(f"Compiled {config.name} for Kubeflow Pipelines: {path}\n"
          f"  image {config.image}; pipeline root {config.pipeline_root}\n"
          f"  Trainer: {gpu.count} x {gpu.resource}; data components: "
          f"{' '.join(config.beam_pipeline_args) or 'Beam DirectRunner'}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from serving import client as clients
    from serving import photos

    if not 0.0 <= args.margin <= 1.0:
        sys.stderr.write(f"{PROG}: error: --margin must be in [0, 1]\n")
        return 2
    try:
        classifier = (photos.LocalModel(args.model) if args.model
                      else photos.server_client(args.server, args.model_name, args.timeout))
        if args.tta:
            classifier = photos.with_test_time_views(classifier, args.tta)
    except ValueError as e:
        sys.stderr.write(f"{PROG}: error: {e}\n")
        return 2
    except clients.ServingError as e:
        sys.stderr.write(f"{PROG}: {e}\n")
        return 1
    try:
        return photos.run(args.photos, classifier, as_json=args.json, annotate_dir=args.annotate,
                          margin=args.margin, whole_image=args.whole_image)
    except ValueError as e:
        sys.stderr.write(f"{PROG}: error: {e}\n")
        return 2


def _settings(args: argparse.Namespace):
    from pipeline import features, run

    classes = features.validate_classes(args.classes.split(",")) if args.classes else features.EMOTIONS
    from pipeline.config import TrainingConfig, TuningConfig, ValidationConfig, with_overrides

    validate_only = args.command == "validate"
    if args.workers < 0:
        raise ValueError("--workers must be >= 0")
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise ValueError(f"--output is a file, not a directory: {args.output}")
    if not validate_only and args.ensemble and args.epochs is None:
        args.epochs = 0   # an ensemble is exported, not trained
    overrides = () if validate_only else _training_overrides(args)
    if not validate_only:  # the recipe is checked before any data is read
        try:
            training = with_overrides(TrainingConfig(model=args.model, classes=classes),
                                      dict(overrides, **({} if args.epochs is None else {"epochs": args.epochs})))
        except TypeError as e:
            raise ValueError(f"training settings: {e}") from None
        _check_weights(training)
        baseline = _regression_baseline(args.regression_baseline)
    return run.RunSettings(
        data=args.data, output=args.output, profile=args.profile, runner=args.runner,
        classes=classes,
        validation=_config_file(args.validation_config, ValidationConfig, "--validation-config"),
        annotations=args.annotations,
        direct_mode=args.direct_mode, workers=args.workers, enable_cache=not args.no_cache,
        validate_only=validate_only,
        **({} if validate_only else dict(model=args.model, epochs=args.epochs,
                                         min_accuracy=args.min_accuracy, imbalance=args.imbalance,
                                         fairness_max_gap=args.fairness_max_gap,
                                         regression_baseline=baseline,
                                         training_overrides=overrides,
                                         tuning=_tuning(args, TuningConfig))))


def _regression_baseline(value: Optional[str]) -> str:
    """`create_pipeline`'s regression_baseline for --regression-baseline: LATEST_BLESSED, ""
    (none) or a Trainer model artifact (a local one checked to hold its Format-Serving/)."""
    from pipeline.pipeline import LATEST_BLESSED

    if value in (None, LATEST_BLESSED):
        return LATEST_BLESSED
    if value == "none":
        return ""
    if "://" in value:
        return value
    if not os.path.isdir(os.path.join(value, "Format-Serving")):
        raise ValueError(f"--regression-baseline {value}: not a Trainer model artifact (no Format-Serving/ "
                         "inside; give <output>/tfx/Trainer/model/<id>, 'latest' or 'none')")
    return os.path.abspath(value)


def _check_weights(training) -> None:
    """What the Trainer would load, loaded now (local files only: object storage is read in
    the Trainer's container): the ImageNet weights file exists, each ensemble member
    predicts the run's classes, and the warm-start weights fit the model and its classes.
    Each is a one-line ValueError naming the file, before any data is read."""
    pretrained = training.pretrained_weights
    if pretrained and "://" not in pretrained and not os.path.isfile(pretrained):
        raise ValueError(f"--pretrained-weights: no such file: {pretrained}")
    local = [p for p in training.ensemble if "://" not in p]
    if local:
        from components.trainer import ensemble
        for member in local:
            ensemble.checked_member(member, training.classes, what=f"--ensemble {member}")
    if training.warm_start and "://" not in training.warm_start + training.pretrained_weights:
        from components.trainer import model as model_lib
        network = model_lib.build(training.model, len(training.classes), training.pretrained_weights)
        model_lib.load_trained_weights(network, training.model, training.warm_start)


def _training_overrides(args: argparse.Namespace) -> tuple:
    """TrainingConfig fields to override: the --training-config file, then the flags."""
    from pipeline.config import check_training_keys

    values = dict(_config_values(args.training_config, "--training-config"))
    try:
        check_training_keys(values)
    except ValueError as e:
        raise ValueError(f"--training-config {args.training_config}: {e}") from None
    for key in ("optimizer", "learning_rate", "lr_schedule", "batch_size", "label_smoothing",
                "random_erasing", "camera", "pretrained_weights", "checkpoint_dir", "warm_start", "prior_correction",
                "calibration_temperature", "average_from", "ensemble"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    for key in ("pretrained_weights", "checkpoint_dir", "warm_start"):
        if values.get(key) and "://" not in values[key]:  # object storage stays as it is
            values[key] = os.path.abspath(values[key])
    if values.get("ensemble"):
        values["ensemble"] = [p if "://" in p else os.path.abspath(p) for p in values["ensemble"]]  # refused later
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in values.items()))


def _tuning(args: argparse.Namespace, cls):
    if not (args.tune or args.tuning_config):
        return cls()
    return dataclasses.replace(_config_file(args.tuning_config, cls, "--tuning-config"), enabled=True)


def _config_file(path: Optional[str], cls, flag: str):
    """`cls` (a config dataclass) from a YAML/JSON file of its keys; defaults without one."""
    try:
        return cls.from_dict(_config_values(path, flag))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{flag} {path}: {e}") from None


def _config_values(path: Optional[str], flag: str) -> dict:
    if not path:
        return {}
    import yaml

    try:
        with open(path) as f:
            values = yaml.safe_load(f) or {}
    except OSError as e:
        raise ValueError(f"{flag}: cannot read {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{flag}: {path} is not valid YAML/JSON: {e}") from None
    if not isinstance(values, dict):
        raise ValueError(f"{flag}: {path} must hold a mapping of settings")
    return values


def _models(args: argparse.Namespace) -> int:
    import json

    from pipeline import ship

    try:
        rows = ship.catalogue(args.models_dir)
    except ValueError as e:
        sys.stderr.write(f"{PROG}: error: {e}\n")
        return 2
    if not rows:
        sys.stderr.write(f"{PROG}: error: --models-dir: no <name>/{ship.METADATA_JSON} under {args.models_dir}\n")
        return 2
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=1) + "\n")
    else:
        sys.stdout.write(ship.catalogue_markdown(rows))
        if args.per_class:
            sys.stdout.write("\n" + ship.per_class_markdown(rows))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "models":  # reads JSON files only: no TensorFlow, no logging set-up
        return _models(args)
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.INFO if args.verbose else absl_logging.ERROR)
    if not args.verbose:
        for name in ("apache_beam", "tensorflow"):
            logging.getLogger(name).setLevel(logging.ERROR)

    from pipeline import run, summary

    if args.command == "predict":
        return _predict(args)
    if args.command == "compile":
        try:
            return _compile(args)
        except ValueError as e:  # ConfigError and DataError are ValueErrors
            sys.stderr.write(f"{PROG}: error: {e}\n")
            return 2
        except OSError as e:     # the output cannot be written
            sys.stderr.write(f"{PROG}: error: --output {args.output}: {e.strerror or e}\n")
            return 2
    try:
        settings = _settings(args)
    except ValueError as e:
        sys.stderr.write(f"{PROG}: error: {e}\n")
        return 2
    try:
        result = run.run(settings)
    except ValueError as e:  # DataError included: unusable data, bad settings
        sys.stderr.write(f"{PROG}: error: {e}\n")
        return 2
    except run.PipelineFailed as e:  # a component failed
        if args.verbose:
            traceback.print_exception(e.__cause__)
        sys.stderr.write(f"{PROG}: pipeline failed: {e}\n")
        return 1
    print(summary.format_text(result))
    return 3 if result.get("data_validation", {}).get("blocked") else 0


if __name__ == "__main__":
    sys.exit(main())
