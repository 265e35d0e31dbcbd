"""scripts/reproduce.sh, the recipe of the shipped models: every command it would run
parses, every stage starts from weights an earlier stage wrote, and the stage each shipped
model is exported from trained with the settings its metadata.json records."""
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from components.trainer import standalone
from pipeline import cli
from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "reproduce.sh"


def _dry_run(*stages):
    env = dict(os.environ, DRY_RUN="1", DATA="/fer2013", OUT="o", RUNS="r", MODELS="m", PYTHON=sys.executable)
    done = subprocess.run(["bash", str(SCRIPT), *stages], env=env, capture_output=True, text=True,
                          cwd=REPO, check=False)
    return done


def _commands():
    done = _dry_run()
    assert done.returncode == 0, done.stderr
    return [shlex.split(line[2:]) for line in done.stdout.splitlines() if line.startswith("+ ")]


def _module_args(command, module):
    """The arguments after `python -m <module>`, or None for another command."""
    return command[3:] if command[:3] == [sys.executable, "-m", module] else None


def _trainings(commands):
    """Every training command, parsed, in the order the script runs them."""
    return [standalone.build_parser().parse_args(args) for args in
            (_module_args(c, "components.trainer.standalone") for c in commands) if args is not None]


def test_every_stage_parses_and_starts_from_weights_an_earlier_stage_wrote():
    written, trained = set(), {}
    for parsed in _trainings(_commands()):
        needed = ([parsed.warm_start] if parsed.warm_start else []) + (
            parsed.teacher_weights.split(",") if parsed.teacher_weights else [])
        assert set(needed) <= written, (parsed.output, sorted(set(needed) - written))
        if parsed.teacher_model:
            assert len(parsed.teacher_model.split(",")) == len(parsed.teacher_weights.split(","))
        assert parsed.data == "/fer2013" and parsed.output not in trained
        written.add(f"{parsed.output}/{parsed.model}.weights.h5")
        trained[parsed.output] = parsed
    assert len(trained) == 25


def test_each_shipped_model_is_exported_from_a_stage_trained_as_its_metadata_records():
    commands = _commands()
    stages = {f"{parsed.output}/{parsed.model}.weights.h5": parsed for parsed in _trainings(commands)}
    exports = [cli._parser().parse_args(args) for args in
               (_module_args(c, "pipeline.cli") for c in commands) if args is not None]
    ships = [args for args in (_module_args(c, "pipeline.ship") for c in commands) if args is not None]
    names = [s[s.index("--name") + 1] for s in ships]
    assert sorted(names) == sorted(os.listdir(REPO / "models")), "one ship per model under models/"
    assert len(exports) == len(ships)
    for position, (export, ship, name) in enumerate(zip(exports, ships, names)):
        metadata = json.loads((REPO / "models" / name / "metadata.json").read_text())
        if export.model == "ensemble":   # shipped models served as one, shipped before it
            assert export.epochs == 0 and export.calibration_temperature == 0 and "--result" not in ship
            assert [os.path.relpath(m, os.path.abspath("m")) for m in export.ensemble] == \
                metadata["recipe"]["ensemble"] == [m["model"] for m in metadata["ensemble"]["members"]]
            assert set(metadata["recipe"]["ensemble"]) <= set(names[:position]), name
            assert (export.classes or ",".join(metadata["classes"])).split(",") == metadata["classes"], name
            continue
        stage = stages[export.warm_start]
        recipe, training = metadata["recipe"], metadata["training"]
        assert export.command == "run" and export.epochs == 0 and export.model == stage.model == recipe["model"]
        assert stage.classes.split(",") == recipe["classes"] == metadata["classes"], name
        assert (export.classes or ",".join(recipe["classes"])).split(",") == metadata["classes"], name
        assert ship[ship.index("--result") + 1] == f"{stage.output}/result.json"
        assert stage.learning_rate == pytest.approx(recipe["learning_rate"]), name
        assert stage.lr_schedule == recipe.get("lr_schedule", "plateau"), name
        assert stage.label_smoothing == recipe["label_smoothing"] and stage.imbalance == recipe["imbalance"]
        assert stage.batch_size == recipe["batch_size"] and stage.patience == recipe["early_stopping_patience"]
        # the epochs asked for (a half cosine spans them); a shipped run may have stopped sooner
        assert stage.epochs == recipe["epochs"] >= training["epochs_run"], name
        served = (metadata.get("prior_correction") or {}).get("strength", 0.0)
        assert (export.prior_correction or 0.0) == served, name
        assert export.calibration_temperature == 0  # the Trainer's own fit, as shipped
        averaged = (training.get("weight_average") or {}).get("from_epoch", 0)
        assert stage.average_from == recipe.get("average_from", averaged) == averaged, name


def test_an_unknown_stage_is_refused_and_data_is_required():
    done = _dry_run("resnet19")
    assert done.returncode == 2 and done.stderr.strip() == "unknown stage resnet19"
    env = {k: v for k, v in os.environ.items() if k != "DATA"}
    done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, check=False)
    assert done.returncode != 0 and "set DATA to the FER2013 folder" in done.stderr


GPU_SCRIPT = REPO / "scripts" / "train_gpu.sh"
# Every run the script knows: the labels of its args_of case (all but the catch-all).
GPU_RUNS = tuple(re.findall(r"^    ([\w-]+)\)", GPU_SCRIPT.read_text(), re.M))


def test_every_gpu_run_parses_and_the_taught_ones_learn_from_the_shipped_ensembles_members():
    env = dict(os.environ, DRY_RUN="1", DATA="/fer2013", OUT="o", TEACHERS="t",
               EXTRA_ARGS="--epochs 40 --average-from 31 --carry-over")
    done = subprocess.run(["bash", str(GPU_SCRIPT), *GPU_RUNS], env=env, capture_output=True,
                          text=True, cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr
    lines = [shlex.split(line[2:]) for line in done.stdout.splitlines() if line.startswith("+ ")]
    assert all(line[:3] == ["python", "-m", "components.trainer.standalone"] for line in lines)
    parsed = {os.path.basename(p.output): p for p in
              (standalone.build_parser().parse_args(line[3:]) for line in lines)}
    assert list(parsed) == list(GPU_RUNS) and len(GPU_RUNS) >= 13 and not (REPO / "o").exists()
    usage = re.search(r"# MODEL: any of (.*?) \(default", GPU_SCRIPT.read_text(), re.S).group(1)
    assert usage.replace("\n#", "").split() == list(GPU_RUNS)   # the script's usage names them all
    members = json.loads((REPO / "models" / "fer2013-ensemble" / "metadata.json").read_text())["ensemble"]["members"]
    for name in ("resnet18-taught", "dcnn-taught", "compact-taught"):
        run = parsed[name]
        assert run.teacher_model.split(",") == [m["architecture"] for m in members]
        assert run.teacher_weights.split(",") == [
            f"t/{m['model'].removeprefix('fer2013-')}.weights.h5" for m in members]
        assert run.teacher_views == "flip" and run.lr_schedule == "cosine" and run.imbalance == "none"
        assert not run.warm_start and (run.epochs, run.average_from) == (40, 31)  # EXTRA_ARGS win
        assert run.carry_over
    assert parsed["dcnn-taught"].model == "dcnn" and parsed["compact-taught"].model == "compact_resnet"
