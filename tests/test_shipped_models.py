"""Every model shipped under models/: it loads, its two signatures agree, and its PublicTest
accuracy recomputed here matches its metadata within half a point."""
import glob
import json
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from components.audit import audit
from components.trainer.model import TEST_TIME_VIEWS
from components.example_gen.fer2013 import make_example
from pipeline import features, ship
from pipeline.scoring import probability_metrics
from tests.conftest import FER2013, FER2013_TRAIN_COUNTS, REPO

SHIPPED = sorted(glob.glob(str(REPO / "models" / "*" / ship.METADATA_JSON)))


def test_the_repository_ships_models():
    assert any("compact" in p for p in SHIPPED), "models/ should hold at least the compact model"


def _version_dir(metadata_path: str, metadata: dict) -> str:
    return os.path.join(os.path.dirname(metadata_path), str(metadata["version"]))


@pytest.mark.parametrize("metadata_path", SHIPPED, ids=[p.split(os.sep)[-2] for p in SHIPPED])
def test_a_shipped_model_serves_both_signatures_and_keeps_its_published_accuracy(metadata_path):
    if not (FER2013 / "test").is_dir():
        pytest.skip("FER2013 not found")
    metadata = json.load(open(metadata_path))
    path = _version_dir(metadata_path, metadata)
    assert ship.directory_bytes(path) <= ship.MAX_MODEL_BYTES
    model = tf.saved_model.load(path)
    classes = metadata["classes"]
    paths = [ship.test_images(str(FER2013), classes)[c][0] for c in classes]
    images = [open(p, "rb").read() for p in paths]
    examples = [make_example(b, classes[0], "PublicTest", os.path.basename(p), np.asarray(Image.open(p)))
                for b, p in zip(images, paths)]
    by_image = model.signatures[features.PREDICT_IMAGE_SIGNATURE](**{features.IMAGES_INPUT: tf.constant(images)})
    by_example = model.signatures[features.SERVING_DEFAULT_SIGNATURE](
        **{features.EXAMPLES_INPUT: tf.constant(examples)})
    np.testing.assert_allclose(by_image[features.PROBABILITIES_OUTPUT].numpy(),
                               by_example[features.PROBABILITIES_OUTPUT].numpy(), atol=1e-5)
    labels = [l.decode() for l in by_image[features.LABEL_OUTPUT].numpy()]
    assert set(labels) <= set(classes)
    measured = ship.evaluate_saved_model(path, str(FER2013), flip_when_unsure=True)
    published = metadata["metrics_publictest"]
    assert measured["examples"] == published["examples"]
    assert abs(measured["accuracy"] - published["accuracy"]) <= 0.005
    published = metadata["publictest_flip_when_unsure"]
    assert abs(measured["flip_when_unsure"]["accuracy"] - published["accuracy"]) <= 0.005
    assert measured["flip_when_unsure"]["threshold"] == metadata["flip_when_unsure"]["threshold"]


def test_every_shipped_model_serves_the_same_signatures():
    """A client may call any signature by name on any shipped model."""
    expected = {features.SERVING_DEFAULT_SIGNATURE, features.PREDICT_IMAGE_SIGNATURE,
                features.TRANSFORM_FEATURES_SIGNATURE, features.FLIP_WHEN_UNSURE_SIGNATURE,
                *(features.views_signature(views) for views in TEST_TIME_VIEWS)}
    for metadata_path in SHIPPED:
        metadata = json.load(open(metadata_path))
        path = _version_dir(metadata_path, metadata)
        assert set(tf.saved_model.load(path).signatures) == expected, path
        assert set(metadata["signatures"]) == expected - {features.TRANSFORM_FEATURES_SIGNATURE}, path


def test_shipped_model_metadata_names_classes_data_recipe_and_date():
    for metadata_path in SHIPPED:
        metadata = json.load(open(metadata_path))
        for key in ("classes", "training_data", "metrics_publictest", "date", "version"):
            assert metadata.get(key), (metadata_path, key)
        assert os.path.isfile(os.path.join(_version_dir(metadata_path, metadata), "saved_model.pb"))


def test_the_readme_table_of_shipped_models_is_the_one_their_metadata_gives():
    rows = ship.catalogue(str(REPO / "models"))
    assert [r["name"] for r in rows] and len(rows) == len(SHIPPED)
    table = ship.catalogue_markdown(rows)
    assert table in (REPO / "README.md").read_text(), (
        "README.md's shipped-models table is out of date; paste `fer-pipeline models`:\n" + table)
    best = rows[0]  # 7 classes first, best one-view accuracy first
    assert len(best["classes"]) == len(features.EMOTIONS)
    assert all(best["publictest"]["one view"]["accuracy"] >= r["publictest"]["one view"]["accuracy"]
               for r in rows if len(r["classes"]) == len(features.EMOTIONS))


def test_the_results_per_class_tables_are_the_ones_their_metadata_gives():
    rows = ship.catalogue(str(REPO / "models"))
    tables = ship.per_class_markdown(rows)
    assert tables.count("| emotion | faces | one view | flip when unsure | flip | 8 views |") == len(SHIPPED)
    assert ship.catalogue_markdown(rows) + "\n" + tables in (REPO / "RESULTS.md").read_text(), (
        "RESULTS.md's *Shipped models* section is out of date; paste `fer-pipeline models --per-class`:\n"
        + ship.catalogue_markdown(rows) + "\n" + tables)
    resnet18 = next(r for r in rows if r["name"] == "fer2013-resnet18")
    happy = resnet18["publictest"]["one view"]["per_class"]["happy"]
    assert f"| happy | {happy['support']} | {happy['precision']:.2f} / {happy['recall']:.2f} / {happy['f1']:.2f} |" in tables


def test_per_class_tables_leave_out_the_views_and_models_that_were_not_scored(tmp_path):
    scored = {"name": "scored", "version": 1, "classes": ["happy", "sad"],
              "metrics_publictest": {"accuracy": 0.75, "macro_f1": 0.7, "per_class": {
                  "happy": {"precision": 0.8, "recall": 0.9, "f1": 0.847, "support": 10},
                  "sad": {"precision": 0.5, "recall": 0.333, "f1": 0.4, "support": 3}}}}
    unscored = {"name": "unscored", "version": 2, "classes": ["happy", "sad"],
                "metrics_publictest": {"accuracy": 0.5, "macro_f1": 0.5}}
    for metadata in (scored, unscored):
        (tmp_path / metadata["name"]).mkdir()
        (tmp_path / metadata["name"] / ship.METADATA_JSON).write_text(json.dumps(metadata))
    tables = ship.per_class_markdown(ship.catalogue(str(tmp_path)))
    assert tables == ("`scored` 1, precision / recall / F1 on PublicTest:\n\n"
                      "| emotion | faces | one view |\n|---|---|---|\n"
                      "| happy | 10 | 0.80 / 0.90 / 0.85 |\n| sad | 3 | 0.50 / 0.33 / 0.40 |\n")


def test_fer_pipeline_models_prints_the_catalogue_and_names_an_empty_folder(tmp_path, capsys, monkeypatch):
    from pipeline import cli

    monkeypatch.chdir(REPO)  # --models-dir defaults to ./models
    assert cli.main(["models", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(ship.catalogue("models")))
    assert cli.main(["models", "--per-class"]) == 0
    rows = ship.catalogue("models")
    assert capsys.readouterr().out == ship.catalogue_markdown(rows) + "\n" + ship.per_class_markdown(rows)
    assert cli.main(["models", "--models-dir", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert str(tmp_path) in error and "metadata.json" in error
    broken = tmp_path / "fer2013-broken" / "metadata.json"
    for text, message in (("{name: 1", "cannot read it as JSON: Expecting property name"),
                          ('{"name": "fer2013-broken"}', "no version, classes: not a shipped model's")):
        broken.parent.mkdir(exist_ok=True)
        broken.write_text(text)
        assert cli.main(["models", "--models-dir", str(tmp_path)]) == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith(f"fer-pipeline: error: {broken}: {message}") and len(error.splitlines()) == 1


def test_a_shipped_ensemble_is_made_of_the_shipped_models_it_names_at_their_shipped_versions():
    """An ensemble carries its members' weights; its record must name the shipped models it
    was made of, so a member shipped anew means the ensemble is exported anew too."""
    ensembles = [p for p in SHIPPED if json.load(open(p)).get("ensemble")]
    assert {p.split(os.sep)[-2] for p in ensembles} == {"fer2013-ensemble", "fer2013-ensemble-happy-sad-neutral"}
    for metadata_path in ensembles:
        metadata = json.load(open(metadata_path))
        members = metadata["ensemble"]["members"]
        assert len(members) >= 2 and metadata["recipe"]["ensemble"] == [m["model"] for m in members]
        assert metadata["ensemble"]["rule"] == features.ENSEMBLE_RULE
        for member in members:
            shipped = json.load(open(REPO / "models" / member["model"] / ship.METADATA_JSON))
            assert str(shipped["version"]) == member["version"], (metadata_path, member["model"])
            assert shipped["classes"] == metadata["classes"] and shipped["recipe"]["model"] == member["architecture"]
            assert shipped["metrics_publictest"]["accuracy"] == member["publictest_accuracy"]
            assert shipped.get("calibration_temperature", 1.0) == member["calibration_temperature"]
            # more accurate together than any member alone, on the same faces
            assert metadata["metrics_publictest"]["accuracy"] > member["publictest_accuracy"]


def test_the_audit_report_shipped_with_a_model_agrees_with_its_metadata():
    """The Evaluator scored each model on PublicTest in its pipeline run; its audit report
    (beside the SavedModel) must give the same accuracy and arg-max macro-F1 as the ship
    step's own scoring in metadata.json (they once differed: TFMA's one-vs-rest F1 at 0.5)."""
    for metadata_path in SHIPPED:
        metadata = json.load(open(metadata_path))
        report = json.load(open(os.path.join(_version_dir(metadata_path, metadata), "assets.extra",
                                             audit.AUDIT_JSON)))
        overall = next(row for row in report["slices"] if row["slice"] == "overall")
        published = metadata["metrics_publictest"]
        assert overall["examples"] == published["examples"], metadata_path
        assert overall["accuracy"] == published["accuracy"], metadata_path
        assert overall["macro_f1"] == published["macro_f1"], metadata_path


def test_flip_tta_and_ensemble_are_scored_through_the_served_models():
    if not (FER2013 / "test").is_dir():
        pytest.skip("FER2013 not found")
    from components.trainer.model import TEST_TIME_VIEWS, View
    from pipeline import ensemble

    compact = str(REPO / "models" / "fer2013-compact")
    report = ensemble.evaluate([compact, compact], str(FER2013), per_class=15, tta=("flip", "multiview"))
    single, tta = report["models"]["fer2013-compact"], report["models"]["fer2013-compact#2"]
    assert single["single"]["examples"] == 7 * 15
    # The same model twice: the ensemble is that model, flip TTA differs from no TTA.
    assert report["ensemble"] == single["single"] == tta["single"]
    assert report["ensemble_flip_tta"] == single["flip_tta"]
    assert report["ensemble_multiview_tta"] == single["multiview_tta"] == tta["multiview_tta"]
    path = os.path.join(compact, str(json.load(open(os.path.join(compact, ship.METADATA_JSON)))["version"]))
    predictor = ship.served_predictor(path)
    classes = predictor[1]
    truth, plain = ship.publictest_probabilities(predictor, str(FER2013), per_class=15)
    _, mirrored = ship.publictest_probabilities(predictor, str(FER2013), per_class=15, view=View(mirror=True))
    assert classes == report["classes"]
    assert np.abs(plain - mirrored).max() > 0.05  # the mirror image really was fed
    assert probability_metrics(truth, (plain + mirrored) / 2, classes) == single["flip_tta"]
    # every view of the eight is fed as its own image, and the answer is their mean
    seen = [ship.publictest_probabilities(predictor, str(FER2013), per_class=15, view=view)[1]
            for view in TEST_TIME_VIEWS["multiview"]]
    np.testing.assert_array_equal(seen[0], plain)
    np.testing.assert_array_equal(seen[1], mirrored)
    assert min(np.abs(plain - other).max() for other in seen[2:]) > 0.02
    assert probability_metrics(truth, np.mean(seen, axis=0), classes) == single["multiview_tta"]
    with pytest.raises(ValueError, match="--tta fivecrop"):
        ensemble.evaluate([compact], str(FER2013), per_class=1, tta=("fivecrop",))
    others = [os.path.dirname(p) for p in SHIPPED
              if json.load(open(p))["classes"] != report["classes"]]
    for other in others:
        with pytest.raises(ValueError, match="same classes"):
            ensemble.evaluate([compact, other], str(FER2013), per_class=1)


def test_the_prior_correction_scan_reproduces_the_served_decisions_at_the_exported_strength():
    if not (FER2013 / "test").is_dir():
        pytest.skip("FER2013 not found")
    from pipeline import prior

    # The smallest model exported with a correction, on all of PublicTest: the scan must
    # reproduce every served decision at the strength it was exported with.
    corrected = [p for p in SHIPPED if json.load(open(p)).get("prior_correction")] or SHIPPED[:1]
    metadata_path = min(corrected, key=lambda p: json.load(open(p))["size_bytes"])
    metadata = json.load(open(metadata_path))
    applied = (metadata.get("prior_correction") or {}).get("strength", 0.0)
    report = prior.scan(os.path.dirname(metadata_path), str(FER2013), sorted({0.0, 0.5, applied}))
    assert report["classes"] == metadata["classes"] and report["applied_strength"] == applied
    counts = report["train_counts"]
    assert all(n > 0 for n in counts.values()) and sum(counts.values()) < 28709  # train/ minus the carve-out
    row = next(r for r in report["strengths"] if r["strength"] == applied)
    predictor = ship.served_predictor(_version_dir(metadata_path, metadata))
    truth, served = ship.publictest_probabilities(predictor, str(FER2013))
    assert row["publictest"]["examples"] == len(truth) == metadata["metrics_publictest"]["examples"]
    assert row["publictest"]["accuracy"] == round(float(np.mean(served.argmax(axis=1) == truth)), 4)
    assert row["publictest"]["accuracy"] == metadata["metrics_publictest"]["accuracy"]
    assert row["validation"]["examples"] == (2919 if len(metadata["classes"]) == 7 else 1708)
    assert report["recommended"] in {r["strength"] for r in report["strengths"]}


def test_a_scan_through_test_time_views_reproduces_the_served_views_signature(smoke, tmp_path):
    """At the exported strength, the scan of `--views flip` gives the labels of the model's
    own predict_image_flip signature, which applies the rule to each view before the mean
    (the shipped compact network exported again with a prior correction and a temperature)."""
    if not (FER2013 / "test").is_dir():
        pytest.skip("FER2013 not found")
    import tensorflow_transform as tft
    from components.trainer import export, saved_weights
    from pipeline import prior

    metadata_path = next(p for p in SHIPPED if p.split(os.sep)[-2] == "fer2013-compact")
    metadata = json.load(open(metadata_path))
    network = saved_weights.network_from_saved_model(_version_dir(metadata_path, metadata),
                                                     metadata["recipe"]["model"])
    output, _, _ = smoke
    transform = tft.TFTransformOutput(sorted(glob.glob(
        os.path.join(output, "tfx", "Transform", "transform_graph", "*")))[-1])
    applied, counts = 0.5, FER2013_TRAIN_COUNTS
    path = export.export_serving_model(network, transform, metadata["classes"], str(tmp_path / "1"),
                                       applied, counts, 0.8)
    report = prior.scan(path, str(FER2013), [0.0, applied], per_class=20, views="flip")
    assert report["views"] == "flip" and report["temperature"] == 0.8
    assert report["applied_strength"] == applied and list(report["train_counts"].values()) == counts
    flip = ship.served_predictor(path, features.views_signature("flip"))
    truth, served = ship.publictest_probabilities(flip, str(FER2013), per_class=20)
    _, classes, rule, _, splits = prior.network_probabilities(path, str(FER2013), per_class=20, views="flip")
    seen_truth, network = splits["publictest"]
    assert network.shape == (2, len(truth), len(classes)) and list(seen_truth) == list(truth)
    np.testing.assert_allclose(prior.served_probabilities(network, rule.log_bias, rule.temperature), served,
                               atol=2e-5)
    row = {r["strength"]: r for r in report["strengths"]}
    assert row[applied]["publictest"]["examples"] == len(truth) == 20 * len(metadata["classes"])
    assert row[applied]["publictest"]["accuracy"] == round(float(np.mean(served.argmax(axis=1) == truth)), 4)
    assert row[0.0]["publictest"] != row[applied]["publictest"]  # the strength changes decisions
    with pytest.raises(ValueError, match="views 'fivecrop': one of flip, multiview"):
        prior.scan(os.path.dirname(metadata_path), str(FER2013), [0.0], per_class=1, views="fivecrop")


def test_a_correction_is_undone_by_its_negative():
    from pipeline import prior

    p = np.asarray([[0.7, 0.2, 0.1], [0.05, 0.05, 0.9]])
    bias = np.asarray([-0.4, 1.2, 0.3])
    np.testing.assert_allclose(prior.corrected(prior.corrected(p, bias), -bias), p, rtol=1e-9)
    np.testing.assert_allclose(prior.corrected(p, np.zeros(3)), p, rtol=1e-9)


def test_the_prior_scan_refuses_strengths_outside_0_to_2_in_one_line(capsys):
    from pipeline import prior

    assert prior.main(["--data", str(FER2013), "--model", SHIPPED[0], "--strengths", "0,3"]) == 2
    assert capsys.readouterr().err == "error: --strengths '0,3': numbers in [0, 2], comma-separated\n"


def test_shipped_files_name_no_folder_of_the_machine_that_made_them():
    folder = re.compile(r"(?<![\w:/.])/(?:tmp|home|root|work|mnt|var|Users)/")
    for path in glob.glob(str(REPO / "models" / "**" / "*"), recursive=True):
        if path.endswith((".json", ".md", ".html", ".txt")):
            text = open(path, encoding="utf-8").read()
            assert not folder.search(text), (path, folder.search(text).group(0))


def test_ship_rewrites_the_exporting_runs_folder_and_cuts_weight_paths_to_file_names(tmp_path):
    pushed = tmp_path / "run" / "serving" / "fer2013-x" / "17"
    (pushed / "assets.extra").mkdir(parents=True)
    uri = f"{tmp_path / 'run'}/tfx/Trainer/model/9"
    (pushed / "assets.extra" / "model_card.md").write_text(f"- model_uri: {uri}\n")
    (pushed / "assets.extra" / "warmup").write_bytes(str(tmp_path).encode())
    assert ship.run_output(str(pushed)) == str(tmp_path / "run")
    assert ship.strip_run_paths(str(pushed), ship.run_output(str(pushed))) == 1
    assert (pushed / "assets.extra" / "model_card.md").read_text() == \
        "- model_uri: PIPELINE_OUTPUT/tfx/Trainer/model/9\n"
    assert (pushed / "assets.extra" / "warmup").read_bytes() == str(tmp_path).encode()
    assert ship._without_directories({"recipe": {"warm_start": "/x/out/compact.weights.h5", "model": "dcnn"},
                                      "notes": ["a/b", "/c/d.h5"]}) == \
        {"recipe": {"warm_start": "compact.weights.h5", "model": "dcnn"}, "notes": ["a/b", "d.h5"]}


def test_ship_titles_the_model_card_with_the_served_name(tmp_path):
    card = tmp_path / "assets.extra" / audit.MODEL_CARD
    card.parent.mkdir()
    card.write_text("# Model card: fer2013-compact_resnet\n\n## Model\nA network.\n")
    assert ship.name_model_card(str(tmp_path), "fer2013-compact")
    assert card.read_text() == ("# Model card: fer2013-compact\n\nServed as `fer2013-compact`; exported by "
                                "the pipeline `fer2013-compact_resnet` (the name in its audit report).\n"
                                "\n## Model\nA network.\n")
    assert not ship.name_model_card(str(tmp_path), "fer2013-compact")   # once only
    assert not ship.name_model_card(str(tmp_path / "none"), "fer2013-compact")   # no card: nothing to do
    card.write_text("Some notes\n")
    with pytest.raises(ValueError, match="model_card.md: its first line is not a model card title"):
        ship.name_model_card(str(tmp_path), "fer2013-compact")


def test_every_shipped_model_card_is_titled_with_the_name_it_is_served_under():
    for metadata_path in SHIPPED:
        metadata = json.load(open(metadata_path))
        card = os.path.join(_version_dir(metadata_path, metadata), "assets.extra", audit.MODEL_CARD)
        with open(card, encoding="utf-8") as f:
            assert f.readline() == f"{audit.CARD_TITLE}{metadata['name']}\n", card


def test_weights_taken_back_out_of_a_shipped_model_give_its_served_probabilities(tmp_path, capsys):
    from components.trainer import model as model_lib, saved_weights, standalone

    if not (FER2013 / "test").is_dir():
        pytest.skip("FER2013 not found")
    metadata_path = str(REPO / "models" / "fer2013-compact" / ship.METADATA_JSON)
    metadata = json.load(open(metadata_path))
    path = _version_dir(metadata_path, metadata)
    name, parameters = metadata["recipe"]["model"], metadata["training"]["parameters"]
    weights = str(tmp_path / "compact.weights.h5")
    assert saved_weights.main(["--saved-model", path, "--model", name, "--output", weights]) == 0
    assert f"{name}, 7 classes, {parameters:,} parameters" in capsys.readouterr().out
    network = model_lib.build(name, 7)
    network.load_weights(weights)
    x, _, _ = standalone.load_split(str(FER2013), "test", features.EMOTIONS, per_class=2)
    pngs = [tf.io.encode_png(tf.constant(np.round(face * 255).astype(np.uint8))).numpy() for face in x]
    served = tf.saved_model.load(path).signatures[features.PREDICT_IMAGE_SIGNATURE](
        **{features.IMAGES_INPUT: tf.constant(pngs)})[features.PROBABILITIES_OUTPUT].numpy()
    # The served probabilities are the network's with the prior correction and temperature
    # (if any) the model was exported with, from its recorded strength, counts and temperature.
    from pipeline import prior
    rule = prior.applied(path, features.EMOTIONS)
    np.testing.assert_allclose(rule.served(np.asarray(network(x, training=False))), served, atol=1e-5)
    assert saved_weights.main(["--saved-model", path, "--model", "dcnn", "--output", weights]) == 2
    assert "do not fit a 'dcnn' network with 7 classes" in capsys.readouterr().err


def test_a_reexported_model_keeps_the_training_record_of_the_metadata_it_is_shipped_with(tmp_path):
    if not (FER2013 / "test").is_dir():
        pytest.skip("FER2013 not found")
    source = REPO / "models" / "fer2013-compact"
    before = json.load(open(source / ship.METADATA_JSON))
    pushed = tmp_path / "run" / "serving" / "fer2013-compact" / str(before["version"])
    shutil.copytree(_version_dir(str(source / ship.METADATA_JSON), before), pushed)
    after = ship.ship(str(pushed), "fer2013-compact", str(FER2013), str(tmp_path / "models"),
                      result=str(source / ship.METADATA_JSON), notes="re-exported")
    for key in ("recipe", "training", "history"):
        assert after[key] == before[key], key
    assert after["metrics_publictest"]["accuracy"] == before["metrics_publictest"]["accuracy"]
    assert after["calibration_temperature"] == before.get("calibration_temperature", 1.0)
    assert after["notes"] == "re-exported"
    # test-time views: through the model's own signatures where it has them, else views
    # built by the client; the mirror image is exact either way
    assert after["publictest_flip_tta"]["accuracy"] == before["publictest_flip_tta"]["accuracy"]
    exported = tf.saved_model.load(str(pushed)).signatures
    for name in ("flip", "multiview"):
        through = after[f"publictest_{name}_tta"]["through"]
        assert through == ("the predict_image_%s signature" % name if "predict_image_" + name in exported
                           else "predict_image on views built by the client"), through
    assert after["publictest_multiview_tta"]["accuracy"] > after["metrics_publictest"]["accuracy"]
