"""How a served model's accuracy holds up when faces are not FER2013's: each PublicTest face
corrupted the way a camera in front of users corrupts it, scored through the model's own
signature (its preprocessing inside the SavedModel, as a client would call it).

    python -m pipeline.robustness --data FER2013 --model models/fer2013-compact \\
        [--signature predict_image] [--corruptions darker,noise] [--per-class N] [--json out.json]

Each corruption (`CORRUPTIONS`) at three severities, applied to the decoded grayscale face
and sent as a PNG (`jpeg` sends the JPEG it made): darker and brighter exposure, lower
contrast, sensor noise, out-of-focus blur, heavy JPEG compression, a face seen at a lower
resolution (downscaled, then enlarged back), and the eyes (sunglasses) or the mouth and
chin (a face mask) covered. Sizes are fractions of the image, so any face size works;
the bands are placed for FER2013's crops (eyes at about 0.3-0.4 of the height, the mouth
at 0.65-0.8). Noise is drawn from a seed per face (its file name), so a report is
reproducible.

The report gives, for the clean faces and every corruption and severity, accuracy,
macro-F1 and each emotion's recall, and per corruption the mean accuracy over its
severities. These are stress tests of a model, not a measured deployment: real cameras
combine them, and FER2013's faces are already low-resolution web images.
"""
import argparse
import io
import json
import os
import sys
import time
import zlib
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageFilter, UnidentifiedImageError

from pipeline import features
from pipeline.scoring import classification_metrics
from pipeline.ship import _predictor, image_probabilities, test_images

SEVERITIES = (1, 2, 3)
Corruption = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]


def _darker(face, severity, rng):
    return face * (0.6, 0.4, 0.25)[severity - 1]


def _brighter(face, severity, rng):
    return 255 - (255 - face) * (0.6, 0.4, 0.25)[severity - 1]


def _low_contrast(face, severity, rng):
    return face.mean() + (face - face.mean()) * (0.6, 0.4, 0.25)[severity - 1]


def _noise(face, severity, rng):
    return face + rng.normal(0.0, (8.0, 16.0, 32.0)[severity - 1], face.shape)


def _blur(face, severity, rng):
    radius = (0.75, 1.25, 2.0)[severity - 1] * face.shape[0] / features.IMAGE_SIZE
    image = Image.fromarray(np.uint8(face)).filter(ImageFilter.GaussianBlur(radius))
    return np.asarray(image, np.float32)


def _low_resolution(face, severity, rng):
    height, width = face.shape
    scale = (2 / 3, 1 / 2, 1 / 3)[severity - 1]
    small = Image.fromarray(np.uint8(face)).resize(
        (max(1, round(width * scale)), max(1, round(height * scale))), Image.BILINEAR)
    return np.asarray(small.resize((width, height), Image.BILINEAR), np.float32)


def _covered(face, top: float, bottom: float, grey: float):
    """`face` with the rows from `top` to `bottom` (fractions of its height) one grey."""
    height = face.shape[0]
    out = face.copy()
    out[int(round(top * height)):int(round(bottom * height))] = grey
    return out


def _eyes_covered(face, severity, rng):
    return _covered(face, *((0.29, 0.42), (0.25, 0.46), (0.20, 0.50))[severity - 1], grey=20.0)


def _mouth_covered(face, severity, rng):
    return _covered(face, (0.75, 0.65, 0.55)[severity - 1], 1.0, grey=210.0)


JPEG_QUALITY = (30, 15, 8)

# name: (what it stands for, the corruption; None: re-encoding as JPEG at JPEG_QUALITY)
CORRUPTIONS: Dict[str, Tuple[str, Optional[Corruption]]] = {
    "darker": ("exposure x 0.6 / 0.4 / 0.25 (a dim room)", _darker),
    "brighter": ("the distance to white x 0.6 / 0.4 / 0.25 (overexposed)", _brighter),
    "low_contrast": ("contrast x 0.6 / 0.4 / 0.25 about the face's mean (haze, flat light)", _low_contrast),
    "noise": ("Gaussian noise, sigma 8 / 16 / 32 grey levels (a small sensor in low light)", _noise),
    "blur": ("Gaussian blur, radius 0.75 / 1.25 / 2 px at 48 px (out of focus)", _blur),
    "jpeg": (f"JPEG at quality {' / '.join(map(str, JPEG_QUALITY))} (a compressed stream)", None),
    "low_resolution": ("downscaled to 2/3, 1/2, 1/3 of its side and enlarged back (a face far away)",
                       _low_resolution),
    "eyes_covered": ("a dark band over the eyes, 13 / 21 / 30% of the height (sunglasses)", _eyes_covered),
    "mouth_covered": ("a light grey lower 25 / 35 / 45% of the face (a face mask)", _mouth_covered),
}


def corrupt(images: Sequence[bytes], corruption: str, severity: int, names: Sequence[str],
            seed: int = 0) -> List[bytes]:
    """The encoded `images` with `corruption` at `severity` (1-3), as grayscale PNGs (JPEGs
    for `jpeg`). An image that cannot be decoded raises ValueError naming it (`names`)."""
    if corruption not in CORRUPTIONS:
        raise ValueError(f"corruption {corruption!r}: choose from {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity {severity}: choose from {', '.join(map(str, SEVERITIES))}")
    transform = CORRUPTIONS[corruption][1]
    out = []
    for data, name in zip(images, names):
        try:
            with Image.open(io.BytesIO(data)) as image:
                face = np.asarray(image.convert("L"), np.float32)
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"{name}: not a readable image ({e})") from None
        encoded = io.BytesIO()
        if transform is None:
            Image.fromarray(np.uint8(face)).save(encoded, format="JPEG", quality=JPEG_QUALITY[severity - 1])
        else:
            rng = np.random.default_rng([seed, severity, zlib.crc32(os.path.basename(name).encode())])
            seen = transform(face, severity, rng)
            Image.fromarray(np.clip(np.rint(seen), 0, 255).astype(np.uint8)).save(encoded, format="PNG")
        out.append(encoded.getvalue())
    return out


def _scores(truth: np.ndarray, probabilities: np.ndarray, classes: Sequence[str]) -> Dict:
    metrics = classification_metrics(truth, probabilities.argmax(axis=1), classes)
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
            "recall": {c: metrics["per_class"][c]["recall"] for c in classes}}


def evaluate(model: str, data: str, corruptions: Sequence[str] = tuple(CORRUPTIONS),
             signature: str = features.PREDICT_IMAGE_SIGNATURE, per_class: int = 0) -> Dict:
    """{"clean": scores, "corruptions": {name: {"what", "severities": {"1": scores, ...},
    "mean_accuracy"}}} of the served model at `model` (a version folder or its parent)
    through `signature`, on data/test (PublicTest) for its own classes."""
    import tensorflow as tf
    from serving.photos import resolve_model_dir

    unknown = [c for c in corruptions if c not in CORRUPTIONS]
    if unknown or not corruptions:
        raise ValueError(f"--corruptions {','.join(unknown) or '(none)'}: choose from {', '.join(CORRUPTIONS)}")
    version_dir = resolve_model_dir(model)
    signatures = tf.saved_model.load(version_dir).signatures
    if signature not in signatures or not signature.startswith(features.PREDICT_IMAGE_SIGNATURE):
        image_signatures = sorted(s for s in signatures if s.startswith(features.PREDICT_IMAGE_SIGNATURE))
        raise ValueError(f"{version_dir}: no image signature {signature!r} (it has {', '.join(image_signatures)})")
    predictor = _predictor(signatures[signature])   # the loaded model, not a second load
    classes = predictor[1]
    images = test_images(data, classes)
    if not any(images.values()):
        raise ValueError(f"{data}/test: no images of {', '.join(classes)}")
    truth, clean = image_probabilities(predictor, images, per_class=per_class)
    from components.trainer.standalone import machine

    report = {"model": version_dir, "signature": signature, "split": "FER2013 PublicTest (test/ folder)",
              "machine": machine(), "date": time.strftime("%Y-%m-%d"),
              "examples": int(len(truth)), "classes": classes, "clean": _scores(truth, clean, classes),
              "corruptions": {}}
    for name in corruptions:
        rows = {}
        for severity in SEVERITIES:
            _, probabilities = image_probabilities(
                predictor, images, per_class=per_class,
                encode=lambda batch, paths: corrupt(batch, name, severity, paths))
            rows[str(severity)] = _scores(truth, probabilities, classes)
        report["corruptions"][name] = {
            "what": CORRUPTIONS[name][0], "severities": rows,
            "mean_accuracy": round(float(np.mean([row["accuracy"] for row in rows.values()])), 4)}
    return report


def markdown(report: Dict) -> str:
    """The report as a Markdown table: accuracy (macro-F1) per corruption and severity."""
    clean = report["clean"]
    lines = [f"`{report['model']}` through `{report['signature']}`, {report['examples']} PublicTest faces; "
             f"clean: {clean['accuracy']:.1%} ({clean['macro_f1']:.3f})", "",
             "| corruption | " + " | ".join(f"severity {s}" for s in SEVERITIES) + " | mean | what |",
             "|---|" + "---|" * (len(SEVERITIES) + 2)]
    for name, row in report["corruptions"].items():
        cells = [f"{row['severities'][str(s)]['accuracy']:.1%} ({row['severities'][str(s)]['macro_f1']:.3f})"
                 for s in SEVERITIES]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {row['mean_accuracy']:.1%} | {row['what']} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.robustness", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="FER2013 folder with test/")
    parser.add_argument("--model", required=True, help="a version directory or its parent")
    parser.add_argument("--signature", default=features.PREDICT_IMAGE_SIGNATURE,
                        help="the image signature to score (default %(default)s)")
    parser.add_argument("--corruptions", default=",".join(CORRUPTIONS),
                        help="comma-separated, from: " + ", ".join(CORRUPTIONS) + " (default: all)")
    parser.add_argument("--per-class", type=int, default=0, help="at most this many faces per class")
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args(argv)
    try:
        report = evaluate(args.model, args.data, [c.strip() for c in args.corruptions.split(",") if c.strip()],
                          args.signature, args.per_class)
    except (ValueError, OSError) as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
    print(markdown(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
