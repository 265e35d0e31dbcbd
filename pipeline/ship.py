"""Ships a pushed model into the repository: `models/<name>/<version>/` (TF Serving's
layout) plus `models/<name>/metadata.json`, with its PublicTest metrics measured here.

    python -m pipeline.ship --pushed runs/fer2013/serving/fer2013-compact/<version> \\
        --name fer2013-compact --data /path/to/fer2013 [--result out/compact/result.json]

The metrics are computed the way a user would see them: every image of
`<data>/test/<emotion>/` (FER2013 PublicTest), as its encoded bytes, through the
model's `predict_image` signature, each face as it is and (flip test-time augmentation)
averaged with its mirror image. `--result` adds what the standalone trainer recorded
(recipe, history, training time and machine); given a shipped model's metadata.json
instead, a re-export of that model's weights (say, with a calibration temperature)
keeps the record of how they were trained. An ensemble (`--model ensemble`) needs no
`--result`: its metadata records its members (`ensemble`) and their own metrics.
"""
import argparse
import glob
import json
import os
import shutil
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from pipeline import features
from pipeline.scoring import classification_metrics, probability_metrics

METADATA_JSON = "metadata.json"
CONFUSION_PNG = "confusion_matrix.png"
CURVES_PNG = "curves.png"
MAX_MODEL_BYTES = 50 * 1024 * 1024


def test_images(data: str, classes: Sequence[str]) -> Dict[str, List[str]]:
    """{emotion: sorted PublicTest image paths} of data/test/<emotion>/ for the model's
    classes (PrivateTest_* files there are kept back)."""
    from components.trainer.standalone import split_images

    return {emotion: split_images(data, "test", emotion) for emotion in classes}


def served_predictor(path: str,
                     signature: str = features.PREDICT_IMAGE_SIGNATURE) -> Tuple[Callable, List[str]]:
    """(`signature` of the SavedModel at `path`, by default `predict_image`, its class names
    in output order)."""
    import tensorflow as tf

    return _predictor(tf.saved_model.load(path).signatures[signature])


def _predictor(predict: Callable) -> Tuple[Callable, List[str]]:
    return predict, _classes_of(predict)


def publictest_probabilities(predictor: Tuple[Callable, List[str]], data: str, batch_size: int = 256,
                             per_class: int = 0, view=None) -> Tuple[np.ndarray, np.ndarray]:
    """(true class ids, probabilities [N, classes]) of a `served_predictor` on data/test
    for its own classes, each face as it is or, given a `model.View` (say, the mirror
    image), as seen in that view; `per_class` > 0 takes only the first that many images
    of each class."""
    return image_probabilities(predictor, test_images(data, predictor[1]), batch_size, per_class, view)


def tta_probabilities(predictor: Tuple[Callable, List[str]], data: str, views: Sequence,
                      per_class: int = 0, seen: Optional[Dict] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(true class ids, the mean of the served probabilities over `views`) on data/test:
    test-time augmentation through `predict_image` (`model.TEST_TIME_VIEWS`). `seen`, a
    {view: (truth, probabilities)} dict, keeps each view's answer for reuse."""
    seen = {} if seen is None else seen
    for view in views:
        if view not in seen:
            seen[view] = publictest_probabilities(predictor, data, per_class=per_class, view=view)
    return seen[views[0]][0], np.mean([seen[view][1] for view in views], axis=0)


def image_probabilities(predictor: Tuple[Callable, List[str]], images: Dict[str, List[str]],
                        batch_size: int = 256, per_class: int = 0, view=None,
                        encode: Optional[Callable[[List[bytes], List[str]], List[bytes]]] = None,
                        ) -> Tuple[np.ndarray, np.ndarray]:
    """`publictest_probabilities` for any {emotion: image paths}, one entry per class of
    the predictor, in its order. `encode`, given, makes what is sent of each batch's file
    bytes and paths instead of the `view` (say, a corruption: `pipeline.robustness`)."""
    import tensorflow as tf
    from components.trainer.model import View

    predict, classes = predictor
    if list(images) != list(classes):
        raise ValueError(f"images of {list(images)}; the model predicts {classes}")
    view = view or View()
    truth, probabilities = [], []
    for class_id, (emotion, paths) in enumerate(images.items()):
        paths = paths[:per_class] if per_class > 0 else paths
        for start in range(0, len(paths), batch_size):
            chunk = _encoded(paths[start:start + batch_size], view, encode)
            out = predict(**{features.IMAGES_INPUT: tf.constant(chunk)})
            probabilities.append(out[features.PROBABILITIES_OUTPUT].numpy())
            truth += [class_id] * len(chunk)
    return np.asarray(truth), np.concatenate(probabilities)


def _encoded(paths: Sequence[str], view, encode=None) -> List[bytes]:
    """The encoded images at `paths` as seen in `view` (`faces.seen_in`), or as `encode`
    makes them of their bytes and paths."""
    from serving.faces import seen_in

    images = []
    for path in paths:
        with open(path, "rb") as f:
            images.append(f.read())
    return encode(images, list(paths)) if encode else seen_in(images, view, paths)


def evaluate_saved_model(path: str, data: str, tta: Sequence[str] = (),
                         flip_when_unsure: bool = False) -> Dict:
    """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix of the
    SavedModel at `path` on data/test (its own classes, named in `classes`), through
    `predict_image`. For each name in `tta` (`model.TEST_TIME_VIEWS`), "<name>_tta": the
    same metrics (without the matrix) of the mean probability over those views of each
    face, through the model's own `predict_image_<name>` signature, or for a model exported
    before those signatures, over views the client builds (`tta_probabilities`); "through"
    says which. With `flip_when_unsure`, for a model that has that signature,
    "flip_when_unsure": the same metrics of its answers, its threshold and the fraction of
    faces it asked again mirrored. "signatures": the model's signature names."""
    import tensorflow as tf
    from components.trainer.model import TEST_TIME_VIEWS, View

    signatures = tf.saved_model.load(path).signatures
    predictor, seen = _predictor(signatures[features.PREDICT_IMAGE_SIGNATURE]), {}
    truth, probabilities = tta_probabilities(predictor, data, (View(),), seen=seen)
    classes = predictor[1]
    measured = dict(classification_metrics(truth, probabilities.argmax(axis=1), classes),
                    split="FER2013 PublicTest (test/ folder)", classes=classes,
                    signatures=sorted(signatures))
    for name in tta:
        signature = features.views_signature(name)
        if signature in signatures:
            viewed = publictest_probabilities(_predictor(signatures[signature]), data)[1]
            through = f"the {signature} signature"
        else:
            viewed = tta_probabilities(predictor, data, TEST_TIME_VIEWS[name], seen=seen)[1]
            through = f"{features.PREDICT_IMAGE_SIGNATURE} on views built by the client"
        measured[f"{name}_tta"] = dict(probability_metrics(truth, viewed, classes), through=through)
    if flip_when_unsure and features.FLIP_WHEN_UNSURE_SIGNATURE in signatures:
        from components.trainer.export import read_flip_when_unsure

        threshold = read_flip_when_unsure(path)["threshold"]
        answered = publictest_probabilities(_predictor(signatures[features.FLIP_WHEN_UNSURE_SIGNATURE]), data)[1]
        measured["flip_when_unsure"] = dict(
            probability_metrics(truth, answered, classes), threshold=threshold,
            flipped_fraction=round(float(np.mean(probabilities.max(axis=1) < threshold)), 4))
    return measured


def _classes_of(predict) -> List[str]:
    import tensorflow as tf

    blank = np.zeros((features.IMAGE_SIZE, features.IMAGE_SIZE), np.uint8)
    encoded = tf.io.encode_png(blank[..., None]).numpy()
    out = predict(**{features.IMAGES_INPUT: tf.constant([encoded])})
    return [c.decode() for c in out[features.CLASSES_OUTPUT].numpy()[0]]


def directory_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def ship(pushed: str, name: str, data: str, models_dir: str = "models",
         result: Optional[str] = None, notes: str = "") -> Dict:
    version = os.path.basename(os.path.normpath(pushed))
    if not version.isdigit():
        raise ValueError(f"{pushed}: not a pushed version directory (<base>/<number>/)")
    size = directory_bytes(pushed)
    if size > MAX_MODEL_BYTES:
        raise ValueError(f"{pushed}: {size / 2**20:.1f} MB, above the {MAX_MODEL_BYTES / 2**20:.0f} MB "
                         "limit for a model kept in the repository")
    from components.trainer.model import TEST_TIME_VIEWS

    measured = evaluate_saved_model(pushed, data, tta=tuple(TEST_TIME_VIEWS), flip_when_unsure=True)
    tta = {f"publictest_{name}_tta": measured.pop(f"{name}_tta") for name in TEST_TIME_VIEWS}
    if "flip_when_unsure" in measured:
        tta["publictest_flip_when_unsure"] = measured.pop("flip_when_unsure")
    exported = measured.pop("signatures")
    target = os.path.join(models_dir, name, version)
    if os.path.exists(target):
        shutil.rmtree(target)
    shutil.copytree(pushed, target)
    strip_run_paths(target, run_output(pushed))
    name_model_card(target, name)
    metadata = {
        "name": name, "version": int(version), "classes": measured.pop("classes"),
        "signatures": dict({
            features.PREDICT_IMAGE_SIGNATURE: "encoded JPEG/PNG bytes -> probabilities, label, classes",
            features.SERVING_DEFAULT_SIGNATURE: "serialized tf.Example -> probabilities, label, classes"},
            **{features.views_signature(name): f"as {features.PREDICT_IMAGE_SIGNATURE}, the mean over "
               f"{len(views)} test-time views of each face" for name, views in TEST_TIME_VIEWS.items()
               if features.views_signature(name) in exported},
            **({features.FLIP_WHEN_UNSURE_SIGNATURE: f"as {features.views_signature('flip')} for the faces "
                f"whose top {features.PREDICT_IMAGE_SIGNATURE} probability is under the threshold in "
                "flip_when_unsure, as predict_image for the others"}
               if features.FLIP_WHEN_UNSURE_SIGNATURE in exported else {})),
        "training_data": "FER2013 Kaggle folder: train/ (28,709 faces) minus a 10% validation carve-out; "
                         "model selection on test/ (PublicTest, 3,589 faces)",
        "metrics_publictest": measured, **tta,
        "size_bytes": directory_bytes(target),
        "date": time.strftime("%Y-%m-%d"), "notes": notes,
    }
    from components.trainer.export import (read_calibration_temperature, read_ensemble, read_flip_when_unsure,
                                           read_prior_correction)

    correction = read_prior_correction(target)
    if correction:
        metadata["prior_correction"] = correction
    metadata["calibration_temperature"] = read_calibration_temperature(target)
    unsure = read_flip_when_unsure(target)
    if unsure:
        metadata["flip_when_unsure"] = unsure
    members = read_ensemble(target)
    if members:   # exported models served as one: its recipe is its members (model 'ensemble')
        metadata["recipe"] = {"model": "ensemble", "classes": metadata["classes"],
                              "ensemble": [m["model"] for m in members["members"]]}
        metadata["ensemble"] = members
    if result:
        with open(result) as f:
            trained = json.load(f)
        metadata["recipe"] = trained.get("recipe")
        # A shipped model's metadata.json (its network re-exported, e.g. calibrated) keeps
        # these under "training"; the standalone trainer's result.json at the top.
        metadata["training"] = {k: (trained.get("training") or trained).get(k) for k in (
            "backend", "parameters", "flops_per_image", "train_examples", "validation_examples",
            "epochs_run", "training_seconds", "seconds_per_epoch", "best_validation_accuracy",
            "weight_average", "machine")}
        metadata["history"] = trained.get("history")
    with open(os.path.join(models_dir, name, METADATA_JSON), "w") as f:
        json.dump(_without_directories(metadata), f, indent=1)
    write_confusion_png(measured, metadata["classes"], os.path.join(models_dir, name, CONFUSION_PNG),
                        f"{name}: PublicTest, accuracy {measured['accuracy']:.3f}")
    if (metadata.get("history") or {}).get("loss"):   # not for weights exported untrained
        from components.trainer.recipe import write_curves
        write_curves(metadata["history"], os.path.join(models_dir, name, CURVES_PNG), name)
    return metadata


RUN_OUTPUT = "PIPELINE_OUTPUT"  # what stands for the exporting run's folder in shipped files
_TEXT_ASSETS = (".html", ".json", ".md", ".txt")


def run_output(pushed: str) -> str:
    """The pipeline run's output folder of a pushed version `<output>/serving/<name>/<version>`."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(pushed))))


def strip_run_paths(version_dir: str, output: str) -> int:
    """Rewrites the lineage in the text files of `version_dir/assets.extra` (audit report,
    model card) so that artifact URIs under the exporting run's `output` folder read
    `PIPELINE_OUTPUT/...`: a shipped model names no folder of the machine that made it.
    Returns the number of files changed."""
    output = os.path.abspath(output).rstrip("/")
    changed = 0
    for folder, _, files in os.walk(os.path.join(version_dir, "assets.extra")):
        for name in files:
            path = os.path.join(folder, name)
            if not name.endswith(_TEXT_ASSETS):
                continue
            with open(path, encoding="utf-8") as f:
                text = f.read()
            if output in text:
                with open(path, "w", encoding="utf-8") as f:
                    f.write(text.replace(output, RUN_OUTPUT))
                changed += 1
    return changed


def name_model_card(version_dir: str, name: str) -> bool:
    """Titles the model card in `version_dir/assets.extra` with the name the model is
    shipped and served under, where the exporting pipeline's name differs (a `compact_resnet`
    run shipped as `fer2013-compact`), and says which pipeline exported it: an auditor
    reading `models/<name>/` finds the card of `<name>`. Returns whether it changed."""
    from components.audit.audit import CARD_TITLE, MODEL_CARD

    path = os.path.join(version_dir, "assets.extra", MODEL_CARD)
    if not os.path.isfile(path):
        return False
    with open(path, encoding="utf-8") as f:
        title, rest = (f.read().split("\n", 1) + [""])[:2]
    if not title.startswith(CARD_TITLE):
        raise ValueError(f"{path}: its first line is not a model card title ({CARD_TITLE.strip()} ...)")
    pipeline = title[len(CARD_TITLE):].strip()
    if pipeline == name:
        return False
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"{CARD_TITLE}{name}\n\nServed as `{name}`; exported by the pipeline `{pipeline}` "
                f"(the name in its audit report).\n{rest}")
    return True


def _without_directories(value):
    """`value` with every absolute file path (warm start, teacher weights) cut to its file name."""
    if isinstance(value, dict):
        return {k: _without_directories(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_directories(v) for v in value]
    if isinstance(value, str) and os.path.isabs(value) and "\n" not in value:
        return os.path.basename(value)
    return value


def write_confusion_png(measured: Dict, classes: Sequence[str], path: str, title: str) -> None:
    """The confusion matrix, row-normalised (recall on the diagonal), with counts."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    counts = np.asarray(measured["confusion_matrix"]["counts"], dtype=float)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    figure, ax = plt.subplots(figsize=(1.1 * len(classes) + 2, 1.0 * len(classes) + 1.5))
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for a in range(len(classes)):
        for p in range(len(classes)):
            ax.text(p, a, f"{shares[a, p]:.2f}\n({int(counts[a, p])})", ha="center", va="center",
                    fontsize=8, color="white" if shares[a, p] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


CATALOGUE_VIEWS = (("one view", "metrics_publictest"), ("flip when unsure", "publictest_flip_when_unsure"),
                   ("flip", "publictest_flip_tta"), ("8 views", "publictest_multiview_tta"))


def catalogue(models_dir: str = "models") -> List[Dict]:
    """One row per shipped model under `models_dir`, read from its metadata.json: name,
    version, classes, architecture (an ensemble's members' joined by '+'), parameters,
    size and PublicTest accuracy, macro-F1 and per-class scores through each signature
    (`CATALOGUE_VIEWS`). Sorted by classes, then by one-view accuracy, best first. A
    metadata.json that is not JSON, or lacks a key every row needs, is a ValueError naming
    the file."""
    rows = []
    for path in sorted(glob.glob(os.path.join(models_dir, "*", METADATA_JSON))):
        try:
            with open(path) as f:
                metadata = json.load(f)
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: cannot read it as JSON: {e}") from None
        missing = [k for k in ("name", "version", "classes") if k not in metadata] if isinstance(
            metadata, dict) else ["a JSON object"]
        if missing:
            raise ValueError(f"{path}: no {', '.join(missing)}: not a shipped model's metadata")
        members = (metadata.get("ensemble") or {}).get("members") or []
        if members:
            architecture = "+".join(m["architecture"] for m in members)
            parameters = sum(m["parameters"] for m in members)
        else:
            architecture = (metadata.get("recipe") or {}).get("model", "")
            parameters = (metadata.get("training") or {}).get("parameters")
        rows.append({
            "name": metadata["name"], "version": str(metadata["version"]),
            "classes": metadata["classes"], "architecture": architecture, "parameters": parameters,
            "size_bytes": metadata.get("size_bytes"), "date": metadata.get("date"),
            "publictest": {view: {k: (metadata.get(key) or {}).get(k) for k in ("accuracy", "macro_f1", "per_class")}
                           for view, key in CATALOGUE_VIEWS}})
    return sorted(rows, key=lambda r: (len(r["classes"]) != len(features.EMOTIONS),
                                       -(r["publictest"]["one view"]["accuracy"] or 0)))


def catalogue_markdown(rows: Sequence[Dict]) -> str:
    """`catalogue` rows as the Markdown table README.md shows (a test keeps the two equal)."""
    def score(metrics: Dict) -> str:
        if metrics["accuracy"] is None:
            return "-"
        return f"{100 * metrics['accuracy']:.1f}% ({metrics['macro_f1']:.3f})"

    views = [view for view, _ in CATALOGUE_VIEWS]
    lines = ["| model | classes | architecture | parameters | MiB | "
             + " | ".join(f"PublicTest, {v}" for v in views) + " |",
             "|---" * (5 + len(views)) + "|"]
    for r in rows:
        classes = f"all {len(features.EMOTIONS)}" if len(r["classes"]) == len(features.EMOTIONS) else ", ".join(r["classes"])
        parameters = f"{r['parameters'] / 1e6:.2f} M" if r["parameters"] else "-"
        size = f"{r['size_bytes'] / 2 ** 20:.1f}" if r["size_bytes"] else "-"
        lines.append(f"| `{r['name']}` {r['version']} | {classes} | `{r['architecture']}` | {parameters} | "
                     f"{size} | " + " | ".join(score(r["publictest"][v]) for v in views) + " |")
    return "\n".join(lines) + "\n"


def per_class_markdown(rows: Sequence[Dict]) -> str:
    """Per emotion, for each `catalogue` row: precision / recall / F1 through each signature
    and the number of PublicTest faces, as the Markdown RESULTS.md shows (a test keeps the
    two equal). A view a model was not scored through is left out."""
    blocks = []
    for r in rows:
        views = [v for v, _ in CATALOGUE_VIEWS if r["publictest"][v].get("per_class")]
        if not views:
            continue
        lines = [f"`{r['name']}` {r['version']}, precision / recall / F1 on PublicTest:", "",
                 "| emotion | faces | " + " | ".join(views) + " |", "|---" * (2 + len(views)) + "|"]
        first = r["publictest"][views[0]]["per_class"]
        for emotion in first:
            cells = []
            for v in views:
                c = r["publictest"][v]["per_class"].get(emotion)
                cells.append(f"{c['precision']:.2f} / {c['recall']:.2f} / {c['f1']:.2f}" if c else "-")
            lines.append(f"| {emotion} | {first[emotion]['support']} | " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pushed", required=True, help="a pushed version directory")
    parser.add_argument("--name", required=True, help="models/<name>/")
    parser.add_argument("--data", required=True, help="FER2013 folder with test/")
    parser.add_argument("--models-dir", default="models")
    parser.add_argument("--result", help="the standalone trainer's result.json (or the metadata.json "
                                         "of a shipped model whose weights this export carries)")
    parser.add_argument("--notes", default="")
    args = parser.parse_args(argv)
    try:
        metadata = ship(args.pushed, args.name, args.data, args.models_dir, args.result, args.notes)
    except (ValueError, OSError) as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
    print(json.dumps({k: metadata[k] for k in ("name", "version", "classes", "size_bytes")}
                     | {"accuracy": metadata["metrics_publictest"]["accuracy"],
                        "macro_f1": metadata["metrics_publictest"]["macro_f1"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
