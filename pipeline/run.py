"""Runs the pipeline on one machine: owns the physical facts (paths under --output,
the ML Metadata store, Beam arguments) and chooses the orchestrator.

Output layout under `output`:
    tfx/                          pipeline root (every component's artifacts)
    metadata.sqlite               ML Metadata store
    serving/<model-name>/<ver>/   pushed SavedModels, TF Serving's layout
    reports/                      summary.txt/.json, data_report.html, data_validation.json,
                                  ingestion report, quarantine.csv, evaluation.json
                                  of the latest run

`data` may hold numbered spans (span-1/, span-2/, ...): the run ingests the
newest and checks it for drift against the one before.
"""
import contextlib
import dataclasses
import os
import shutil
import tempfile
import time
from typing import Any, Dict, Optional, Tuple

from tfx import v1 as tfx

from components.example_gen import annotations, fer2013
from pipeline import features, summary
from pipeline.config import (DIRECT_MODES, RUNNERS, IngestConfig, TuningConfig, ValidationConfig,
                             profile_configs, serving_model_name, with_overrides)
from pipeline.pipeline import LATEST_BLESSED, create_pipeline

SCHEMA_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schema", "schema.pbtxt")


class PipelineFailed(RuntimeError):
    """A component failed; the orchestrator has logged the traceback."""


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """Everything a local run needs, validated by the CLI."""
    data: str
    output: str
    profile: str = "full"
    runner: str = "local"
    model: str = "dcnn"
    classes: Tuple[str, ...] = features.EMOTIONS
    epochs: Optional[int] = None
    min_accuracy: Optional[float] = None
    imbalance: Optional[str] = None    # override the trainer's response to class imbalance
    annotations: Optional[str] = None  # CSV keyed by image_id: slices for the Evaluator
    fairness_max_gap: Optional[float] = None  # override the profile's fairness gate
    regression_baseline: str = LATEST_BLESSED  # or "" (none), or a Trainer model artifact
    validation: ValidationConfig = ValidationConfig()
    # TrainingConfig fields to override, as (name, value) pairs (--training-config and flags).
    training_overrides: Tuple[Tuple[str, Any], ...] = ()
    tuning: TuningConfig = TuningConfig()
    direct_mode: Optional[str] = None  # default: in_memory for local, multi_processing for beam
    workers: int = 0                   # Beam DirectRunner workers; 0 = one per CPU
    enable_cache: bool = True
    validate_only: bool = False        # stop after the data-validation gate

    @property
    def model_name(self) -> str:
        return serving_model_name(self.model, self.classes)


def paths(output: str, model_name: str) -> Dict[str, str]:
    output = os.path.abspath(output)
    return {
        "pipeline_root": os.path.join(output, "tfx"),
        "metadata": os.path.join(output, "metadata.sqlite"),
        "serving": os.path.join(output, "serving", model_name),
        "reports": os.path.join(output, "reports"),
    }


# This project's setup.py, present in a source checkout or an editable install.
PROJECT_SETUP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "setup.py")


def beam_args(settings: RunSettings) -> list:
    """DirectRunner arguments. Unless Beam's arguments already say how remote workers get
    their Python packages, every Beam-powered TFX executor copies TFX into a new temporary
    folder as an sdist for them (about 50 MB, never removed: four per run). Naming this
    project's own setup.py, which is what a remote runner's workers would need, stops that.
    DirectRunner's workers run in this environment and install nothing; Beam still builds
    the project's small sdist (about 0.2 MB) into a temporary folder, which `run` removes."""
    mode = settings.direct_mode or ("multi_processing" if settings.runner == "beam" else "in_memory")
    workers = settings.workers or os.cpu_count() or 1
    args = [f"--direct_running_mode={mode}", f"--direct_num_workers={workers}"]
    if os.path.isfile(PROJECT_SETUP):
        args.append(f"--setup_file={PROJECT_SETUP}")
    return args


def build(settings: RunSettings, spans: fer2013.Spans) -> tfx.dsl.Pipeline:
    """The pipeline for `settings` on the data `spans` describes."""
    profile = profile_configs(settings.profile, settings.model, settings.classes,
                              min_accuracy=settings.min_accuracy)
    training, evaluation = profile.training, profile.evaluation
    if settings.fairness_max_gap is not None:
        evaluation = dataclasses.replace(evaluation, fairness_max_gap=settings.fairness_max_gap)
    if settings.imbalance:
        training = dataclasses.replace(training, imbalance=settings.imbalance)
    overrides = dict(settings.training_overrides)
    if settings.epochs is not None:
        overrides["epochs"] = settings.epochs
    training = with_overrides(training, overrides)
    where = paths(settings.output, settings.model_name)
    annotation_settings = {}
    if settings.annotations:
        columns, _ = annotations.read(settings.annotations)  # validates the whole file now
        annotation_settings = dict(annotations=os.path.abspath(settings.annotations),
                                   annotation_columns=columns)
    return create_pipeline(
        pipeline_name=settings.model_name,
        pipeline_root=where["pipeline_root"],
        source=spans.current,
        baseline_source=spans.previous,
        ingest=IngestConfig(layout=spans.current.layout, classes=settings.classes,
                            sample_per_class=profile.sample_per_class, **annotation_settings),
        schema_file=SCHEMA_FILE,
        training=training,
        gates=evaluation,
        validation=settings.validation,
        tuning=settings.tuning,
        serving_model_dir=where["serving"],
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            where["metadata"]),
        beam_pipeline_args=beam_args(settings),
        enable_cache=settings.enable_cache,
        validate_only=settings.validate_only,
        regression_baseline=settings.regression_baseline)


@contextlib.contextmanager
def scratch_tempdir():
    """Points this process's temporary files at a folder of their own and removes it after.
    Beam never removes the folder it stages each pipeline's worker packages in (one per
    Beam-powered component), so without this every run leaves a dozen behind."""
    previous = tempfile.tempdir
    tempfile.tempdir = tempfile.mkdtemp(prefix="fer-pipeline-")
    try:
        yield tempfile.tempdir
    finally:
        shutil.rmtree(tempfile.tempdir, ignore_errors=True)
        tempfile.tempdir = previous


def run(settings: RunSettings) -> Dict:
    """Detects the data, runs the pipeline, writes the reports; returns the summary."""
    pipeline = build(settings, fer2013.detect_spans(settings.data))
    where = paths(settings.output, settings.model_name)
    os.makedirs(where["reports"], exist_ok=True)
    if settings.runner == "local":
        runner = tfx.orchestration.LocalDagRunner()
    elif settings.runner == "beam":
        # BeamDagRunner is not exported in tfx.v1; this is its stable module path.
        from tfx.orchestration.beam.beam_dag_runner import BeamDagRunner
        runner = BeamDagRunner()
    else:
        raise ValueError(f"unknown runner {settings.runner!r}; choose from {', '.join(RUNNERS)}")
    started = time.time()
    try:
        with scratch_tempdir():
            runner.run(pipeline)
    except Exception as e:  # noqa: BLE001 - any component error ends the run the same way
        message = (str(e).strip().splitlines() or [""])[-1]
        raise PipelineFailed(f"{type(e).__name__}: {message}") from e
    result = summary.collect(where["metadata"], pipeline, since=started,
                             classes=settings.classes)
    result.update(settings=dataclasses.asdict(settings), wall_seconds=round(time.time() - started, 1),
                  output=os.path.abspath(settings.output), validate_only=settings.validate_only)
    summary.write_reports(result, where["reports"])
    return result
