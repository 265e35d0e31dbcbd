"""Kubeflow Pipelines runner: compiles the same `create_pipeline` to a KFP v2 PipelineSpec.

Everything physical comes from a YAML configuration (see kubeflow/config.yaml)
read once into a frozen `KubeflowConfig`: pipeline root and data on object
storage, the container image, Beam arguments for the data components, the
Trainer's GPU request and scheduling, the hyperparameters' profile. Nothing
here edits the pipeline's component list: the only per-node addition is the
Trainer's resource request, and node selector/tolerations go into the
Kubernetes platform section of the compiled file.
"""
import dataclasses
import os
import re
import tempfile
from typing import Any, Dict, List, Mapping, Optional, Tuple

import yaml
from kfp.pipeline_spec import pipeline_spec_pb2
from tfx import v1 as tfx

from components.example_gen import fer2013
from pipeline import features
from pipeline.config import (IMBALANCE_STRATEGIES, IngestConfig, PROFILES, TrainingConfig,
                             TuningConfig, ValidationConfig,
                             profile_configs, serving_model_name, with_overrides)
from pipeline.pipeline import LATEST_BLESSED, create_pipeline

# Where kubeflow/Dockerfile puts the repository inside the image (WORKDIR).
IMAGE_WORKDIR = "/pipeline"
IMAGE_SCHEMA_FILE = f"{IMAGE_WORKDIR}/pipeline/schema/schema.pbtxt"
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config.yaml")
TRAINER_NODE = "Trainer"
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,127}")
_RESOURCE_SPEC = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec


class ConfigError(ValueError):
    """The Kubeflow configuration cannot be compiled; the message names the key."""


def _require_remote(key: str, uri: str) -> str:
    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    if not scheme or scheme == "file":
        raise ConfigError(f"{key} must be an object-storage URI every pod can reach "
                          f"(gs://), not the local path {uri!r}")
    return uri.rstrip("/")


@dataclasses.dataclass(frozen=True)
class GpuConfig:
    """The Trainer's accelerator request and where it may be scheduled."""
    count: int = 1
    resource: str = "nvidia.com/gpu"
    cpu_limit: float = 8.0
    memory_limit_gb: float = 32.0
    node_selector: Tuple[Tuple[str, str], ...] = ()
    tolerations: Tuple[Tuple[Tuple[str, str], ...], ...] = ()

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "GpuConfig":
        if not isinstance(values or {}, dict):
            raise ConfigError("trainer_gpu must be a mapping (count, resource, cpu_limit, ...)")
        values = dict(values or {})
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"trainer_gpu: unknown key(s) {', '.join(unknown)}")
        for key, kind in (("count", int), ("resource", str), ("cpu_limit", (int, float)),
                          ("memory_limit_gb", (int, float))):
            if key in values and (not isinstance(values[key], kind) or isinstance(values[key], bool)):
                what = {int: "a whole number", str: "a string"}.get(kind, "a number")
                raise ConfigError(f"trainer_gpu.{key} must be {what}, got {values[key]!r}")
        if not isinstance(values.get("node_selector") or {}, dict) or not all(
                isinstance(t, dict) for t in values.get("tolerations") or ()):
            raise ConfigError("trainer_gpu: node_selector must be a mapping and tolerations a list "
                              "of mappings")
        values["node_selector"] = tuple(sorted((values.get("node_selector") or {}).items()))
        values["tolerations"] = tuple(tuple(sorted(t.items())) for t in values.get("tolerations") or ())
        config = cls(**values)
        if config.count < 0:
            raise ConfigError("trainer_gpu.count must be >= 0")
        return config


@dataclasses.dataclass(frozen=True)
class KubeflowConfig:
    """A compiled pipeline's physical facts and recipe. See kubeflow/config.yaml."""
    image: str
    pipeline_root: str
    data: str
    serving_dir: str
    layout: str = "folder"
    splits: Tuple[str, ...] = ("train", "eval")
    profile: str = "full"
    model: str = "dcnn"
    classes: Tuple[str, ...] = features.EMOTIONS
    epochs: Optional[int] = None
    min_accuracy: Optional[float] = None
    pipeline_name: str = ""
    baseline_data: str = ""   # the previous span (same layout and splits): drift baseline
    # The no-regression gate's baseline: an earlier Trainer's model artifact URI, imported
    # (open-source KFP runs no resolver executors, so not the latest blessed model); "": none.
    regression_baseline: str = ""
    annotations: str = ""     # CSV keyed by image_id on object storage ...
    annotation_columns: Tuple[str, ...] = ()  # ... and its columns (not read at compile time)
    validation: ValidationConfig = ValidationConfig()
    imbalance: Optional[str] = None
    # TrainingConfig fields overriding the profile's recipe (optimizer, learning_rate,
    # label_smoothing, warm_start, checkpoint_dir, ...), as (name, value) pairs.
    training: Tuple[Tuple[str, Any], ...] = ()
    tuning: TuningConfig = TuningConfig()
    schema_file: str = IMAGE_SCHEMA_FILE
    beam_pipeline_args: Tuple[str, ...] = ()
    trainer_gpu: GpuConfig = GpuConfig()

    @property
    def name(self) -> str:
        return self.pipeline_name or serving_model_name(self.model, self.classes)


def load_config(path: str = DEFAULT_CONFIG, **overrides: Any) -> KubeflowConfig:
    """Reads and validates the YAML at `path`; non-None `overrides` replace its keys."""
    try:
        with open(path) as f:
            values = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read Kubeflow config {path}: {e}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: must hold a mapping of settings (image, pipeline_root, ...), "
                          f"not a {type(values).__name__}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in dataclasses.fields(KubeflowConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}")
    _check_types(path, values)
    missing = sorted(k for k in ("image", "pipeline_root", "data", "serving_dir") if not values.get(k))
    if missing:
        raise ConfigError(f"{path}: missing {', '.join(missing)}")
    values["classes"] = features.validate_classes(values.get("classes") or features.EMOTIONS)
    values["splits"] = tuple(values.get("splits") or ("train", "eval"))
    values["beam_pipeline_args"] = tuple(values.get("beam_pipeline_args") or ())
    values["annotation_columns"] = tuple(values.get("annotation_columns") or ())
    try:
        values["trainer_gpu"] = GpuConfig.from_dict(values.get("trainer_gpu"))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    try:
        values["validation"] = ValidationConfig.from_dict(values.get("validation") or {})
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path}: validation: {e}") from None
    try:
        values["tuning"] = TuningConfig.from_dict(values.get("tuning") or {})
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path}: tuning: {e}") from None
    training = values.get("training") or {}
    if not isinstance(training, dict):
        raise ConfigError(f"{path}: training must be a mapping of TrainingConfig keys")
    values["training"] = tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                                      for k, v in training.items()))
    config = KubeflowConfig(**values)
    try:
        recipe = training_config(config)  # the recipe is checked now, not in the Trainer pod
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path}: training: {e}") from None
    # A relative path would be read from the Trainer pod's working folder, where nothing of
    # this machine is: object storage, or an absolute path in the image or a mounted volume.
    for key in ("warm_start", "pretrained_weights", "checkpoint_dir"):
        value = getattr(recipe, key)
        if value and "://" not in value and not value.startswith("/"):
            raise ConfigError(f"{path}: training.{key} {value!r} is a path on this machine; the Trainer "
                              f"pod cannot read it: give object storage (gs://...) or an absolute path "
                              f"in the image ({IMAGE_WORKDIR}/...) or on a mounted volume")
    for member in recipe.ensemble:
        if not member.startswith("/"):
            raise ConfigError(f"{path}: training.ensemble {member!r}: an absolute path in the image "
                              f"({IMAGE_WORKDIR}/models/...) or on a mounted volume")
    for key in ("pipeline_root", "data", "serving_dir"):
        _require_remote(key, getattr(config, key))
    if config.baseline_data:
        _require_remote("baseline_data", config.baseline_data)
    if config.regression_baseline == LATEST_BLESSED:
        raise ConfigError(f"regression_baseline: {LATEST_BLESSED!r} needs a resolver, which open-source "
                          "Kubeflow Pipelines does not run; give an earlier Trainer's model artifact URI "
                          "(<pipeline_root>/.../Trainer/model/<id>) or leave it empty")
    if config.regression_baseline:
        _require_remote("regression_baseline", config.regression_baseline)
    if bool(config.annotations) != bool(config.annotation_columns):
        raise ConfigError("annotations and annotation_columns go together: name the CSV and "
                          "its columns (besides image_id)")
    if config.annotations:
        _require_remote("annotations", config.annotations)
    if config.imbalance is not None and config.imbalance not in IMBALANCE_STRATEGIES:
        raise ConfigError(f"imbalance must be one of {', '.join(IMBALANCE_STRATEGIES)}")
    if config.profile not in PROFILES:
        raise ConfigError(f"profile must be one of {', '.join(PROFILES)}")
    if not _NAME_RE.fullmatch(config.name):
        raise ConfigError(f"pipeline name {config.name!r} must match [a-z0-9][a-z0-9-]*")
    return config


_STRINGS = ("image", "pipeline_root", "data", "serving_dir", "layout", "profile", "model", "pipeline_name",
            "baseline_data", "regression_baseline", "annotations", "imbalance", "schema_file")
_LISTS = ("splits", "classes", "beam_pipeline_args", "annotation_columns")
_MAPPINGS = ("validation", "tuning", "training")


def _check_types(path: str, values: Mapping[str, Any]) -> None:
    """Each key of the configuration of the kind it must be, or a ConfigError naming it."""
    def bad(key, kind):
        return ConfigError(f"{path}: {key} must be {kind}, got {values[key]!r}")

    for key, value in values.items():
        if value is None:
            continue
        if key in _STRINGS and not isinstance(value, str):
            raise bad(key, "a string")
        if key in _LISTS and not (isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)):
            raise bad(key, "a list of strings")
        if key in _MAPPINGS and not isinstance(value, dict):
            raise bad(key, "a mapping")
        if key == "epochs" and (not isinstance(value, int) or isinstance(value, bool)):
            raise bad(key, "a whole number")
        if key == "min_accuracy" and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            raise bad(key, "a number")


def training_config(config: KubeflowConfig) -> TrainingConfig:
    """The profile's recipe with the config's `training`, `imbalance` and `epochs`."""
    overrides = dict(config.training)
    if config.imbalance:
        overrides["imbalance"] = config.imbalance
    if config.epochs is not None:
        overrides["epochs"] = config.epochs
    profile = profile_configs(config.profile, config.model, config.classes)
    return with_overrides(profile.training, overrides)


def build(config: KubeflowConfig) -> tfx.dsl.Pipeline:
    """The pipeline of `create_pipeline`, with the Trainer's GPU resource request."""
    profile = profile_configs(config.profile, config.model, config.classes,
                              min_accuracy=config.min_accuracy)
    source = fer2013.declared_source(config.layout, config.data.rstrip("/"), config.splits)
    baseline = (fer2013.declared_source(config.layout, config.baseline_data.rstrip("/"),
                                        config.splits) if config.baseline_data else None)
    training = training_config(config)
    pipeline = create_pipeline(
        pipeline_name=config.name,
        pipeline_root=config.pipeline_root,
        source=source,
        baseline_source=baseline,
        ingest=IngestConfig(layout=config.layout, classes=config.classes,
                            sample_per_class=profile.sample_per_class,
                            annotations=config.annotations,
                            annotation_columns=config.annotation_columns),
        schema_file=config.schema_file,
        training=training,
        gates=profile.evaluation,
        validation=config.validation,
        tuning=config.tuning,
        serving_model_dir=f"{config.serving_dir}/{config.name}",
        beam_pipeline_args=list(config.beam_pipeline_args),
        regression_baseline=config.regression_baseline)
    gpu = config.trainer_gpu
    resources = _RESOURCE_SPEC(cpu_limit=gpu.cpu_limit, memory_limit=gpu.memory_limit_gb)
    if gpu.count:
        resources.accelerator.type = gpu.resource
        resources.accelerator.count = gpu.count
    trainer = next(node for node in pipeline.components if node.id == TRAINER_NODE)
    trainer.with_platform_config(resources)
    return pipeline


def _platform_spec(config: KubeflowConfig) -> Optional[Dict]:
    """KFP's Kubernetes platform section: node selector and tolerations of the Trainer."""
    gpu = config.trainer_gpu
    executor: Dict[str, Any] = {}
    if gpu.node_selector:
        executor["nodeSelector"] = {"labels": dict(gpu.node_selector)}
    if gpu.tolerations:
        executor["tolerations"] = [dict(t) for t in gpu.tolerations]
    if not executor:
        return None
    return {"platforms": {"kubernetes": {"deploymentSpec": {
        "executors": {f"{TRAINER_NODE}_executor": executor}}}}}


def compile_pipeline(config: KubeflowConfig, output_file: str) -> str:
    """Writes the PipelineSpec YAML (plus the platform section, if any) to `output_file`."""
    if not output_file.endswith((".yaml", ".yml")):
        raise ConfigError("the output file must end in .yaml: kfp 2.5 loads a bare "
                          "PipelineSpec YAML (a .json output would be a Vertex PipelineJob)")
    runner_config = tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
        default_image=config.image)
    with tempfile.TemporaryDirectory() as tmp:
        tfx.orchestration.experimental.KubeflowV2DagRunner(
            config=runner_config, output_dir=tmp, output_filename="pipeline.yaml").run(build(config))
        with open(os.path.join(tmp, "pipeline.yaml")) as f:
            spec = f.read()
    platform = _platform_spec(config)
    if platform:
        spec = spec.rstrip("\n") + "\n---\n" + yaml.safe_dump(platform, sort_keys=True)
    os.makedirs(os.path.dirname(os.path.abspath(output_file)), exist_ok=True)
    with open(output_file, "w") as f:
        f.write(spec)
    return output_file


def component_ids(pipeline: tfx.dsl.Pipeline) -> List[str]:
    return sorted(node.id for node in pipeline.components)
