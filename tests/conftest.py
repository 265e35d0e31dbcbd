"""Shared fixtures: small FER2013 layouts built from the real images in ../shared/data.

The real dataset is read from `FER2013_DATA` if set, else from
`../shared/data/fer2013` beside the repository; images are copied into
temporary directories only, never into the repository.
"""
import collections
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile
import zlib
from typing import Dict, List

import numpy as np
import pytest
from PIL import Image

from pipeline import features

REPO = pathlib.Path(__file__).resolve().parents[1]
FER2013 = pathlib.Path(os.environ.get("FER2013_DATA", REPO.parent / "shared" / "data" / "fer2013"))
# Faces per emotion (features.EMOTIONS order) in FER2013 train/: disgust rare, happy common.
FER2013_TRAIN_COUNTS = [3995, 436, 4097, 7215, 4830, 3171, 4965]


def real_images(split_dir: str, emotion: str, n: int) -> List[pathlib.Path]:
    """The first `n` real images (sorted by name) of one emotion folder."""
    folder = FER2013 / split_dir / emotion
    if not folder.is_dir():
        pytest.skip(f"FER2013 images not found at {FER2013}")
    return sorted(folder.iterdir())[:n]


def make_folder_layout(root: pathlib.Path, per_class: Dict[str, int]) -> pathlib.Path:
    """A Kaggle-style train/ and test/ tree with per_class[split] real images per emotion."""
    for split_dir, n in per_class.items():
        for emotion in features.EMOTIONS:
            target = root / split_dir / emotion
            target.mkdir(parents=True, exist_ok=True)
            for path in real_images(split_dir, emotion, n):
                shutil.copy(path, target / path.name)
    return root


def pixels_of(path: pathlib.Path) -> str:
    return " ".join(str(v) for v in np.asarray(Image.open(path).convert("L")).reshape(-1))


def make_csv(path: pathlib.Path, rows: List[tuple], header: str = "emotion,pixels,Usage") -> pathlib.Path:
    """Writes a fer2013.csv-style file; rows are (emotion code, pixel text, usage)."""
    columns = [c.strip().lower() for c in header.split(",")]
    lines = [header]
    for emotion, pixels, usage in rows:
        values = {"emotion": str(emotion), "pixels": pixels, "usage": usage}
        lines.append(",".join(values[c] for c in columns))
    path.write_text("\n".join(lines) + "\n")
    return path


def csv_rows_from_real(per_usage: Dict[str, int]) -> List[tuple]:
    """(code, pixels, usage) rows made from real images: n per emotion per usage."""
    split_dirs = {"Training": "train", "PublicTest": "test", "PrivateTest": "test"}
    rows = []
    for usage, n in per_usage.items():
        offset = n if usage == "PrivateTest" else 0  # PrivateTest rows: other PublicTest images
        for code, emotion in enumerate(features.EMOTIONS):
            for path in real_images(split_dirs[usage], emotion, n + offset)[offset:]:
                rows.append((code, pixels_of(path), usage))
    return rows


def zip_tree(root: pathlib.Path, archive: pathlib.Path, prefix: str = "") -> pathlib.Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                zf.write(path, prefix + path.relative_to(root).as_posix())
    return archive


def encode(array: np.ndarray, fmt: str) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format=fmt)
    return out.getvalue()


@pytest.fixture(scope="session")
def fer2013_root() -> pathlib.Path:
    if not (FER2013 / "train").is_dir():
        pytest.skip(f"FER2013 images not found at {FER2013}")
    return FER2013


FER_PIPELINE = os.path.join(os.path.dirname(sys.executable), "fer-pipeline")


def fer_pipeline(*args: str, env: dict = None) -> subprocess.CompletedProcess:
    return subprocess.run([FER_PIPELINE, *args], capture_output=True, text=True, timeout=1500,
                          env=None if env is None else {**os.environ, **env})


def run_smoke(data, output, *extra, env: dict = None):
    done = fer_pipeline("run", "--data", str(data), "--output", str(output), "--profile", "smoke",
                        *extra, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(os.path.join(output, "reports", "summary.json")) as f:
        return json.load(f), done.stdout


def annotate(root: pathlib.Path, path: pathlib.Path) -> pathlib.Path:
    """An annotations CSV over every image under `root`: a made-up `gender` (by a hash of
    the image id; a fifth of the images left out, so they read `unannotated`)."""
    lines = ["image_id,gender"]
    stems = collections.Counter(image.stem for image in root.glob("*/*/*"))
    for stem in sorted(stems):
        code = zlib.crc32(stem.encode())
        if code % 5 and stems[stem] == 1:  # a repeated file name gets another image_id
            lines.append(f"{stem},{'female' if code % 2 else 'male'}")
    path.write_text("\n".join(lines) + "\n")
    return path


SMOKE_ANNOTATIONS = "smoke-annotations.csv"


@pytest.fixture(scope="session")
def smoke(fer2013_root, tmp_path_factory):
    """One smoke-profile run on the real data with a made-up `gender` annotation, shared by
    the end-to-end and serving tests: (output dir, summary dict, printed summary)."""
    output = tmp_path_factory.mktemp("smoke")
    annotations = annotate(fer2013_root, output.parent / SMOKE_ANNOTATIONS)
    summary, stdout = run_smoke(fer2013_root, output, "--annotations", str(annotations))
    return output, summary, stdout
