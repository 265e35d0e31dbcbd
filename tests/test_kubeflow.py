"""Compiling for Kubeflow Pipelines: the same components, GPU only on the Trainer,
configuration instead of code edits, object storage only."""
import glob
import json
import os
import re

import kfp.components
import pytest
from google.protobuf import json_format

from components.example_gen import fer2013
from kubeflow import runner
from pipeline import cli, pipeline, run
from tests.conftest import REPO

SAMPLES = sorted(glob.glob(str(REPO / "kubeflow" / "samples" / "*.yaml")))


def compiled(tmp_path, config_path=runner.DEFAULT_CONFIG, **overrides):
    config = runner.load_config(config_path, **overrides)
    path = runner.compile_pipeline(config, str(tmp_path / "pipeline.yaml"))
    component = kfp.components.load_component_from_file(path)
    return config, json_format.MessageToDict(component.pipeline_spec), json_format.MessageToDict(
        component.platform_spec)


def task_parameter(spec, task, name):
    value = spec["root"]["dag"]["tasks"][task]["inputs"]["parameters"][name]["runtimeValue"]
    return value.get("constant", value.get("constantValue", {}).get("stringValue"))


def test_compiled_pipeline_has_the_local_pipelines_components(tmp_path):
    """All of them but the regression baseline's resolver: open-source KFP runs no resolver
    executors (its compiler refuses them), so nothing compiled may have one."""
    config, spec, _ = compiled(tmp_path)
    local = run.build(run.RunSettings(data="unused", output=str(tmp_path / "local")),
                      fer2013.Spans(fer2013.declared_source("folder", "/data/fer2013",
                                                            ["train", "eval"])))
    assert set(spec["root"]["dag"]["tasks"]) == set(runner.component_ids(local)) - {"latest_blessed_model_resolver"}
    assert spec["pipelineInfo"]["name"] == config.name == "fer2013-dcnn"
    assert all("resolver" not in executor for executor in spec["deploymentSpec"]["executors"].values())


def test_a_regression_baseline_is_imported_from_the_configured_model_artifact(tmp_path):
    uri = "gs://your-bucket/fer2013/pipeline-root/fer2013-dcnn/run-1/Trainer_7/model"
    _, spec, _ = compiled(tmp_path, regression_baseline=uri)
    executors = spec["deploymentSpec"]["executors"]
    assert all("resolver" not in executor for executor in executors.values())
    importer = executors[f"{pipeline.BASELINE_IMPORTER_ID}_executor"]["importer"]
    assert importer["artifactUri"]["constantValue"]["stringValue"] == uri
    assert importer["typeSchema"]["instanceSchema"].startswith("title: tfx.Model\n")
    tasks = spec["root"]["dag"]["tasks"]
    # the Evaluator and the AuditGate compare with it; without one, neither has a baseline input
    for task in ("Evaluator", "AuditGate"):
        source = tasks[task]["inputs"]["artifacts"]["baseline_model"]["taskOutputArtifact"]
        assert source["producerTask"] == pipeline.BASELINE_IMPORTER_ID
    _, plain, _ = compiled(tmp_path)
    assert all("baseline_model" not in plain["root"]["dag"]["tasks"][task]["inputs"].get("artifacts", {})
               for task in ("Evaluator", "AuditGate"))


@pytest.mark.parametrize("value, message", [
    ("latest", "regression_baseline: 'latest' needs a resolver, which open-source Kubeflow Pipelines does not run"),
    ("runs/Trainer/model/7", "regression_baseline must be an object-storage URI"),
])
def test_a_regression_baseline_kubeflow_cannot_use_is_refused(value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        runner.load_config(runner.DEFAULT_CONFIG, regression_baseline=value)


def test_previous_span_adds_drift_validation_and_the_gate_guards_transform(tmp_path):
    _, spec, _ = compiled(tmp_path, baseline_data="gs://your-bucket/fer2013/span-1")
    tasks = spec["root"]["dag"]["tasks"]
    assert {"PreviousSpanExampleGen", "PreviousSpanStatisticsGen", "DriftValidator",
            "SkewValidator", "DataValidationGate"} <= set(tasks)
    assert task_parameter(spec, "PreviousSpanExampleGen", "input_base") == (
        "gs://your-bucket/fer2013/span-1")
    assert "blocked" in tasks["Transform"]["triggerPolicy"]["condition"]
    with pytest.raises(runner.ConfigError, match="baseline_data must be"):
        runner.load_config(runner.DEFAULT_CONFIG, baseline_data="/local/span-1")


def test_only_the_trainer_asks_for_gpus_and_its_scheduling_is_configured(tmp_path):
    config, spec, platform = compiled(tmp_path)
    executors = spec["deploymentSpec"]["executors"]
    with_gpu = {name for name, e in executors.items()
                if e.get("container", {}).get("resources", {}).get("accelerator")}
    assert with_gpu == {"Trainer_executor"}
    accelerator = executors["Trainer_executor"]["container"]["resources"]["accelerator"]
    assert (accelerator["type"], int(accelerator["count"])) == ("nvidia.com/gpu", 1)
    trainer = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert list(trainer) == ["Trainer_executor"]
    assert trainer["Trainer_executor"]["nodeSelector"]["labels"] == {
        "cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}
    assert trainer["Trainer_executor"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_image_paths_beam_args_and_hyperparameters_come_from_configuration(tmp_path):
    config, spec, _ = compiled(tmp_path, SAMPLES[0], image="example.org/fer:7", profile="smoke",
                               classes=["happy", "sad", "neutral"])
    assert os.path.basename(SAMPLES[0]) == "dataflow.yaml"
    containers = [e["container"] for e in spec["deploymentSpec"]["executors"].values() if "container" in e]
    assert containers and {c["image"] for c in containers} == {"example.org/fer:7"}
    example_gen = spec["deploymentSpec"]["executors"]["Fer2013ExampleGen_executor"]["container"]
    assert "--runner=DataflowRunner" in example_gen["args"]
    assert spec["pipelineInfo"]["name"] == "fer2013-dcnn-happy-sad-neutral"
    training = json.loads(task_parameter(spec, "Trainer", "custom_config"))
    assert (training["classes"], training["epochs"]) == (["happy", "sad", "neutral"], 2)
    assert task_parameter(spec, "Fer2013ExampleGen", "input_base") == "gs://your-bucket/fer2013/data"
    assert task_parameter(spec, "CuratedSchemaGen", "schema_file") == runner.IMAGE_SCHEMA_FILE
    assert task_parameter(spec, "CuratedSchemaGen", "classes") == "happy,sad,neutral"
    gate = json.loads(task_parameter(spec, "DataValidationGate", "validation_config"))
    assert gate["drift_action"] == "block" and gate["label_linf_skew"] == 0.1
    push = json.loads(task_parameter(spec, "Pusher", "push_destination"))
    assert push["filesystem"]["base_directory"] == (
        "gs://your-bucket/fer2013/serving/fer2013-dcnn-happy-sad-neutral")
    assert int(spec["deploymentSpec"]["executors"]["Trainer_executor"]["container"]["resources"][
        "accelerator"]["count"]) == 2


@pytest.mark.parametrize("sample", SAMPLES, ids=os.path.basename)
def test_every_sample_configuration_compiles(sample, tmp_path):
    config, spec, _ = compiled(tmp_path, sample)
    assert spec["deploymentSpec"]["executors"]["Trainer_executor"]["container"]["image"] == config.image


@pytest.mark.parametrize("override, message", [
    ({"pipeline_root": "/tmp/pipeline-root"}, "pipeline_root must be an object-storage URI"),
    ({"data": "file:///data/fer2013"}, "data must be an object-storage URI"),
    ({"serving_dir": "models/"}, "serving_dir must be an object-storage URI"),
    ({"classes": ["happy", "bored"]}, "unknown emotion(s) bored"),
    ({"pipeline_name": "FER_2013"}, "must match"),
    ({"trainer_gpu": {"count": "two"}}, "trainer_gpu.count must be a whole number, got 'two'"),
    ({"trainer_gpu": {"gpus": 2}}, "trainer_gpu: unknown key(s) gpus"),
    ({"trainer_gpu": [1]}, "trainer_gpu must be a mapping"),
    ({"epochs": "10"}, "epochs must be a whole number, got '10'"),
    ({"splits": "train"}, "splits must be a list of strings, got 'train'"),
    ({"training": ["lr"]}, "training must be a mapping, got ['lr']"),
    ({"training": {"warm_start": "out/dcnn.weights.h5"}},
     "training.warm_start 'out/dcnn.weights.h5' is a path on this machine; the Trainer pod cannot read it"),
    ({"training": {"checkpoint_dir": "checkpoints"}}, "training.checkpoint_dir 'checkpoints' is a path on this machine"),
    ({"model": "ensemble", "epochs": 0, "training": {"ensemble": ["models/fer2013-dcnn"]}},
     "training.ensemble 'models/fer2013-dcnn': an absolute path in the image (/pipeline/models/...)"),
])
def test_bad_configuration_fails_fast(override, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        runner.load_config(runner.DEFAULT_CONFIG, **override)


@pytest.mark.parametrize("text", ["- image: x\n", "just a string\n"])
def test_a_configuration_file_that_is_not_a_mapping_is_one_line_naming_it(text, tmp_path, capsys):
    path = tmp_path / "kubeflow.yaml"
    path.write_text(text)
    assert cli.main(["compile", "--config", str(path), "--output", str(tmp_path / "p.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{path}: must hold a mapping of settings" in err and len(err.splitlines()) == 1


def test_a_model_name_with_an_underscore_gives_a_kfp_safe_pipeline_name(tmp_path):
    config = runner.load_config(runner.DEFAULT_CONFIG, model="compact_resnet")
    assert config.name == "fer2013-compact-resnet"
    assert runner.load_config(runner.DEFAULT_CONFIG, model="compact_resnet",
                              classes=("happy", "sad", "neutral")).name == "fer2013-compact-resnet-happy-sad-neutral"


def test_compile_command_reports_a_local_pipeline_root_in_one_line(tmp_path, capsys):
    code = cli.main(["compile", "--output", str(tmp_path / "p.yaml"), "--pipeline-root", "/srv/tfx"])
    err = capsys.readouterr().err
    assert code == 2 and "pipeline_root must be an object-storage URI" in err
    assert len(err.strip().splitlines()) == 1
    assert cli.main(["compile", "--output", str(tmp_path / "p.yaml")]) == 0
    assert "Compiled fer2013-dcnn" in capsys.readouterr().out
    (tmp_path / "a-file").write_text("")
    assert cli.main(["compile", "--output", str(tmp_path / "a-file" / "p.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fer-pipeline: error: --output {tmp_path / 'a-file' / 'p.yaml'}: ")
    assert len(err.strip().splitlines()) == 1


def test_dockerfile_installs_every_package_where_the_runner_expects_it():
    dockerfile = (REPO / "kubeflow" / "Dockerfile").read_text()
    assert re.search(r"^FROM tensorflow/tfx:1\.16\.0$", dockerfile, re.M)
    assert re.search(rf"^WORKDIR {runner.IMAGE_WORKDIR}$", dockerfile, re.M)
    for package in ("pipeline", "components", "serving", "kubeflow"):
        assert re.search(rf"^COPY {package} \./{package}$", dockerfile, re.M), package
    assert (REPO / runner.IMAGE_SCHEMA_FILE[len(runner.IMAGE_WORKDIR) + 1:]).is_file()


def test_annotations_reach_ingestion_schema_and_slices(tmp_path):
    _, spec, _ = compiled(tmp_path, annotations="gs://your-bucket/fer2013/annotations.csv",
                          annotation_columns=["gender", "age_group"])
    ingest = json.loads(task_parameter(spec, "Fer2013ExampleGen", "ingest_config"))
    assert (ingest["annotations"], ingest["annotation_columns"]) == (
        "gs://your-bucket/fer2013/annotations.csv", ["gender", "age_group"])
    assert task_parameter(spec, "CuratedSchemaGen", "annotation_columns") == "gender,age_group"
    eval_config = json.loads(task_parameter(spec, "Evaluator", "eval_config"))
    keys = [s.get("featureKeys", s.get("feature_keys", [])) for s in eval_config["slicing_specs"]]
    assert ["gender"] in keys and ["age_group"] in keys and ["brightness_band"] in keys
    with pytest.raises(runner.ConfigError, match="go together"):
        runner.load_config(runner.DEFAULT_CONFIG, annotations="gs://b/a.csv")


def test_training_overrides_and_the_tuner_come_from_configuration(tmp_path):
    config_file = tmp_path / "config.yaml"
    text = open(runner.DEFAULT_CONFIG).read().replace("optimizer: nadam", "optimizer: sgd").replace(
        "  enabled: false", "  enabled: true")
    config_file.write_text(text.replace("  label_smoothing: 0.0", "  label_smoothing: 0.1\n"
                                        "  checkpoint_dir: /mnt/ckpt"))
    _, spec, _ = compiled(tmp_path, str(config_file), model="vggnet")
    tasks = spec["root"]["dag"]["tasks"]
    assert "best_hyperparameters" in json.dumps(tasks["Trainer"]["inputs"]["artifacts"])
    training = json.loads(task_parameter(spec, "Trainer", "custom_config"))
    assert (training["model"], training["optimizer"], training["label_smoothing"],
            training["checkpoint_dir"]) == ("vggnet", "sgd", 0.1, "/mnt/ckpt")
    tuner = json.loads(task_parameter(spec, "Tuner", "custom_config"))
    assert tuner["tuning"]["max_trials"] == 6 and tuner["training"]["optimizer"] == "sgd"
    config_file.write_text(text.replace("  label_smoothing: 0.0", "  label_smothing: 0.1"))
    with pytest.raises(runner.ConfigError, match="training: unknown training key.*label_smothing"):
        runner.load_config(str(config_file))
    config_file.write_text(text.replace("  label_smoothing: 0.0", "  checkpoint_dir: gs://b/ckpt"))
    with pytest.raises(runner.ConfigError, match="object storage is not supported for checkpoints"):
        runner.load_config(str(config_file))


def test_an_ensemble_compiles_with_its_members_read_from_the_container(tmp_path):
    config_file = tmp_path / "config.yaml"
    members = [f"{runner.IMAGE_WORKDIR}/models/fer2013-resnet18", f"{runner.IMAGE_WORKDIR}/models/fer2013-dcnn"]
    text = open(runner.DEFAULT_CONFIG).read()
    config_file.write_text(text.replace("  label_smoothing: 0.0", "  label_smoothing: 0.0\n  ensemble: ["
                                        + ", ".join(members) + "]"))
    _, spec, _ = compiled(tmp_path, str(config_file), model="ensemble", epochs=0)
    training = json.loads(task_parameter(spec, "Trainer", "custom_config"))
    assert (training["model"], training["ensemble"], training["epochs"]) == ("ensemble", members, 0)
    config_file.write_text(text.replace("  label_smoothing: 0.0", "  ensemble: [gs://b/models/fer2013-dcnn]"))
    with pytest.raises(runner.ConfigError, match="local or mounted folders, not object storage: gs://b/models"):
        runner.load_config(str(config_file), model="ensemble", epochs=0)
