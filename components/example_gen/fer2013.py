"""Plain-Python reading and validation of FER2013 in the three forms it is distributed in.

* folder: the Kaggle layout, `train/<emotion>/*.jpg` and `test/<emotion>/*.jpg`;
* csv: `fer2013.csv` (columns `emotion,pixels,Usage`) or `icml_face_data.csv`
  (same columns, header with leading spaces);
* zip: a .zip archive holding either of the above, at its root or in one folder.

Split mapping: `train/` and Usage `Training` -> train; `test/` and Usage
`PublicTest` -> eval; Usage `PrivateTest` (or a `PrivateTest_*` file in
`test/`) -> test.

Every record ends in exactly one `Outcome` status:
  ok           valid 48x48 grayscale image, kept byte for byte;
  converted    decodable image of another size/mode/format, converted to a
               48x48 grayscale PNG (kept, and listed in the report);
  quarantined  unusable (empty, not an image, undecodable, unknown emotion,
               bad CSV row, zip entry escaping the archive root...), with reason;
  excluded     a valid emotion outside the configured classes;
  sampled_out  left out by the profile's stratified sample.
Nothing is dropped without a status; the ExampleGen counts and reports them all.

No Beam here: the ExampleGen executor maps these functions over records.
"""
import collections
import csv
import dataclasses
import functools
import hashlib
import io
import os
import posixpath
import re
import zipfile
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from PIL import Image, UnidentifiedImageError

from components.example_gen import annotations as annotation_lib
from pipeline import features

OK, CONVERTED, QUARANTINED, EXCLUDED, SAMPLED_OUT = (
    "ok", "converted", "quarantined", "excluded", "sampled_out")
STATUSES = (OK, CONVERTED, QUARANTINED, EXCLUDED, SAMPLED_OUT)

CSV_NAMES = ("fer2013.csv", "icml_face_data.csv")
_FOLDER_SPLIT_DIRS = {"train": "train", "eval": "test", "test": "test"}
_KEEP_FORMATS = ("JPEG", "PNG")


class DataError(ValueError):
    """The data path cannot be used at all (as opposed to a single bad record)."""


@dataclasses.dataclass(frozen=True)
class SourceInfo:
    """What `detect_source` found at a data path.

    input_base: directory the ExampleGen reads from; patterns: per split, the
    glob under input_base whose files make up that split (used by TFX to
    fingerprint the input); layout: 'folder', 'csv' or 'zip'; inner_layout:
    for zip, the layout inside the archive.
    """
    layout: str
    input_base: str
    patterns: Tuple[Tuple[str, str], ...]
    inner_layout: str = ""
    span: int = 0             # N for data under span-N/, 0 when the data has no spans

    @property
    def splits(self) -> Tuple[str, ...]:
        return tuple(name for name, _ in self.patterns)


@dataclasses.dataclass(frozen=True)
class Spans:
    """What a run ingests: the newest span, and the one before it (the drift baseline)."""
    current: SourceInfo
    previous: Optional[SourceInfo] = None


@dataclasses.dataclass(frozen=True)
class RecordRef:
    """One record before it is read: where it is and what its location says."""
    split: str
    image_id: str
    source: str                 # human-readable location (path, archive!member, file:row)
    usage: str                  # FER2013 Usage of the record
    raw_label: str              # emotion folder name or CSV code, as found
    label_name: Optional[str]   # the emotion, or None when raw_label is not one
    location: Tuple = ()        # ('file', path) | ('zip', archive, member) | ('pixels', text)
    problem: str = ""           # known before reading (e.g. zip entry escapes root)
    sampled_out: bool = False


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What became of one record; `example` is a serialized tf.Example when kept."""
    split: str
    image_id: str
    source: str
    label_name: str
    status: str
    reason: str = ""
    example: Optional[bytes] = None

    def report_row(self) -> Dict[str, str]:
        return {"split": self.split, "image_id": self.image_id, "source": self.source,
                "label": self.label_name, "status": self.status, "reason": self.reason}


# ----------------------------------------------------------------------------
# Detecting the layout
# ----------------------------------------------------------------------------

SPAN_DIR = re.compile(r"^span-([1-9][0-9]*)$")


def span_dirs(path: str) -> List[Tuple[int, str]]:
    """[(N, path of span-N)] sorted by N, for a folder holding span-1, span-2, ...; else []."""
    if not tf.io.gfile.isdir(path):
        return []
    found = []
    for name in tf.io.gfile.listdir(path):
        match = SPAN_DIR.match(name.rstrip("/"))
        if match and tf.io.gfile.isdir(os.path.join(path, name.rstrip("/"))):
            found.append((int(match.group(1)), os.path.join(path, name.rstrip("/"))))
    found.sort()
    numbers = [n for n, _ in found]
    if len(set(numbers)) != len(numbers):
        raise DataError(f"{path}: two span folders have the same number: "
                        f"{', '.join(os.path.basename(p) for _, p in found)}")
    return found


def detect_spans(path: str) -> Spans:
    """The newest span under `path` and the one before it; without span-N folders,
    `path` itself is the data (span 0) and there is no previous span."""
    found = span_dirs(path)
    if not found:
        return Spans(detect_source(path))
    number, newest = found[-1]
    current = dataclasses.replace(_span_source(newest), span=number)
    if len(found) == 1:
        return Spans(current)
    number, before = found[-2]
    try:
        previous = _span_source(before)
    except DataError as e:
        raise DataError(f"the previous span (the drift baseline) is unusable: {e}") from None
    return Spans(current, dataclasses.replace(previous, span=number))


def _span_source(path: str) -> SourceInfo:
    """A span folder holds any accepted layout, or a single .zip of one."""
    try:
        return detect_source(path)
    except DataError:
        archives = [n for n in tf.io.gfile.listdir(path) if n.lower().endswith(".zip")]
        if len(archives) == 1:
            return detect_source(os.path.join(path, archives[0]))
        raise


def detect_source(path: str) -> SourceInfo:
    """Recognizes the FER2013 form at `path`; raises DataError naming what is wrong."""
    if not path:
        raise DataError("no data path given")
    if not tf.io.gfile.exists(path):
        raise DataError(f"data path does not exist: {path}")
    if tf.io.gfile.isdir(path):
        if _is_dir(path, "train") or _is_dir(path, "test"):
            return _detect_folder(path)
        csvs = [n for n in CSV_NAMES if tf.io.gfile.exists(os.path.join(path, n))]
        if csvs:
            return detect_source(os.path.join(path, csvs[0]))
        if not tf.io.gfile.listdir(path):
            raise DataError(f"data folder is empty: {path}")
        raise DataError(f"unrecognized layout in {path}: expected train/ and test/ folders "
                        f"with one folder per emotion, {' or '.join(CSV_NAMES)}, or a .zip")
    lower = path.lower()
    with tf.io.gfile.GFile(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise DataError(f"data file is empty: {path}")
    if lower.endswith(".zip") or head.startswith(b"PK\x03\x04"):
        return _detect_zip(path)
    if lower.endswith(".csv"):
        with tf.io.gfile.GFile(path, "r") as f:
            usages = _csv_usages(f, path)
        return _single_file_source("csv", path, usages)
    raise DataError(f"unrecognized data file {path}: expected a .csv or a .zip")


def _is_dir(base: str, name: str) -> bool:
    return tf.io.gfile.isdir(os.path.join(base, name))


def _detect_folder(root: str) -> SourceInfo:
    if not _is_dir(root, "train"):
        raise DataError(f"{root} has no train/ folder")
    if not _is_dir(root, "test"):
        raise DataError(f"{root} has no test/ folder (it feeds the eval split)")
    names = {split: [] for split in features.SPLITS}
    for split in features.SPLITS:
        for emotion_dir in _subdirs(os.path.join(root, _FOLDER_SPLIT_DIRS[split])):
            names[split] += [n for n in tf.io.gfile.listdir(emotion_dir)
                             if features.folder_split(split, n) == split]
    if not names["train"]:
        raise DataError(f"no images under {os.path.join(root, 'train')}/<emotion>/")
    if not names["eval"]:
        raise DataError(f"no images under {os.path.join(root, 'test')}/<emotion>/")
    return declared_source("folder", root, [s for s in features.SPLITS if names[s]])


def _subdirs(path: str) -> List[str]:
    if not tf.io.gfile.isdir(path):
        return []
    return sorted(os.path.join(path, n.rstrip("/")) for n in tf.io.gfile.listdir(path)
                  if tf.io.gfile.isdir(os.path.join(path, n)))


def _single_file_source(layout: str, path: str, usages: Iterable[str], inner: str = "") -> SourceInfo:
    present = {features.SPLIT_BY_USAGE[u] for u in usages if u in features.SPLIT_BY_USAGE}
    for split in ("train", "eval"):
        if split not in present:
            raise DataError(f"{path} has no {_usage_of(split)} records (they feed the {split} split)")
    return declared_source(layout, path, [s for s in features.SPLITS if s in present], inner)


def declared_source(layout: str, path: str, splits: Sequence[str], inner: str = "") -> SourceInfo:
    """The SourceInfo for data that is not readable here (e.g. object storage at compile
    time): `path` is the folder root, CSV or zip; `splits` the splits it holds."""
    if layout not in ("folder", "csv", "zip"):
        raise DataError(f"unknown layout {layout!r}; choose from folder, csv, zip")
    unknown = set(splits) - set(features.SPLITS)
    if unknown or "train" not in splits or "eval" not in splits:
        raise DataError(f"splits must include train and eval, from {', '.join(features.SPLITS)}; "
                        f"got {', '.join(splits)}")
    ordered = [s for s in features.SPLITS if s in splits]
    if layout == "folder":
        folder_patterns = {"train": "train/*/*", "eval": "test/*/*",
                           "test": f"test/*/{features.PRIVATE_TEST_FILE_PREFIX}*"}
        return SourceInfo(layout, path.rstrip("/"), tuple((s, folder_patterns[s]) for s in ordered))
    base, name = path.rsplit("/", 1) if "/" in path else (".", path)
    return SourceInfo(layout, base or "/", tuple((s, name) for s in ordered), inner)


def _csv_columns(header: Sequence[str], where: str) -> Dict[str, int]:
    columns = {name.strip().lower(): i for i, name in enumerate(header)}
    missing = [c for c in ("emotion", "pixels", "usage") if c not in columns]
    if missing:
        raise DataError(f"{where}: CSV header {list(header)} lacks column(s) {', '.join(missing)}")
    return {"emotion": columns["emotion"], "pixels": columns["pixels"], "usage": columns["usage"]}


def _csv_usages(text: io.TextIOBase, where: str) -> set:
    reader = csv.reader(text)
    header = next(reader, None)
    if header is None:
        raise DataError(f"{where}: CSV file is empty")
    col = _csv_columns(header, where)["usage"]
    return {row[col].strip() for row in reader if len(row) > col}


def _zip_layout(zf: zipfile.ZipFile) -> Tuple[str, str]:
    """Returns ('folder', prefix) or ('csv', member) for an archive's content."""
    names = [n for n in zf.namelist() if not n.startswith("__MACOSX/")]
    for name in names:
        m = re.match(r"^(.*?)(train|test)/[^/]+/[^/]+$", name)
        if m and not _escapes(name):
            return "folder", m.group(1)
    csvs = [n for n in names if n.lower().endswith(".csv") and not _escapes(n)]
    for preferred in CSV_NAMES:
        for n in csvs:
            if posixpath.basename(n).lower() == preferred:
                return "csv", n
    if csvs:
        return "csv", csvs[0]
    return "", ""


def _detect_zip(path: str) -> SourceInfo:
    try:
        with tf.io.gfile.GFile(path, "rb") as f, zipfile.ZipFile(f) as zf:
            inner, where = _zip_layout(zf)
            if inner == "csv":
                with zf.open(where) as member:
                    usages = _csv_usages(io.TextIOWrapper(member, "utf-8", newline=""),
                                         f"{path}!{where}")
            elif inner == "folder":
                usages = set()
                for name in zf.namelist():
                    if name.startswith(where) and not name.endswith("/"):
                        parts = name[len(where):].split("/")
                        if len(parts) == 3 and parts[0] in ("train", "test"):
                            split = features.folder_split(
                                "train" if parts[0] == "train" else "eval", parts[2])
                            usages.add(_usage_of(split))
            else:
                raise DataError(f"{path}: the archive holds neither train/ and test/ folders "
                                f"nor a CSV file")
    except (zipfile.BadZipFile, tf.errors.OpError, OSError) as e:
        raise DataError(f"{path}: not a readable zip archive ({e})") from None
    return _single_file_source("zip", path, usages, inner)


# ----------------------------------------------------------------------------
# Enumerating the records of one split
# ----------------------------------------------------------------------------

def enumerate_split(source_path: str, layout: str, split: str,
                    classes: Sequence[str], sample_per_class: int = 0) -> List[RecordRef]:
    """All records of `split` at `source_path` (a folder root, CSV or zip file).

    With `sample_per_class` > 0, records of each class beyond a deterministic
    (hash of image_id) stratified sample are marked `sampled_out` and carry no
    payload.
    """
    if layout == "folder":
        refs = list(_folder_refs(source_path, split))
    elif layout == "csv":
        with tf.io.gfile.GFile(source_path, "r") as f:
            refs = list(_csv_refs(f, source_path, split))
    elif layout == "zip":
        refs = list(_zip_refs(source_path, split))
    else:
        raise ValueError(f"unknown layout {layout!r}")
    refs = unique_ids(refs)
    return _sample(refs, classes, sample_per_class) if sample_per_class else refs


def unique_ids(refs: List[RecordRef]) -> List[RecordRef]:
    """Makes image_id unique within a split. File names are not: the Kaggle folder has
    Training_52789098.jpg in both neutral/ and surprise/ (different faces), and
    Training_8475486.jpg in angry/ and surprise/. Every record of a repeated id gets
    '-<emotion folder or code>' appended (and '-<n>' if that still repeats)."""
    counts = collections.Counter(r.image_id for r in refs)
    if all(n == 1 for n in counts.values()):
        return refs
    seen: Dict[str, int] = collections.Counter()
    out = []
    for ref in refs:
        if counts[ref.image_id] == 1:
            out.append(ref)
            continue
        new_id = f"{ref.image_id}-{ref.raw_label or 'unlabelled'}"
        seen[new_id] += 1
        if seen[new_id] > 1:
            new_id = f"{new_id}-{seen[new_id]}"
        out.append(dataclasses.replace(ref, image_id=new_id))
    return out


def _emotion(raw: str) -> Optional[str]:
    name = raw.strip().lower()
    return name if name in features.EMOTIONS else None


_USAGE_BY_SPLIT = {split: usage for usage, split in features.SPLIT_BY_USAGE.items()}


def _usage_of(split: str) -> str:
    return _USAGE_BY_SPLIT[split]


def _folder_refs(root: str, split: str) -> Iterator[RecordRef]:
    split_dir = os.path.join(root, _FOLDER_SPLIT_DIRS[split])
    for name in sorted(tf.io.gfile.listdir(split_dir)):
        path = os.path.join(split_dir, name.rstrip("/"))
        if tf.io.gfile.isdir(path):
            continue
        if features.folder_split(_FOLDER_SPLIT_DIRS[split], name) == split:
            yield RecordRef(split, os.path.splitext(name)[0], path, _usage_of(split), "", None,
                            ("file", path), problem="file is not inside an emotion folder")
    for emotion_dir in _subdirs(split_dir):
        folder = os.path.basename(emotion_dir)
        for name in sorted(tf.io.gfile.listdir(emotion_dir)):
            path = os.path.join(emotion_dir, name.rstrip("/"))
            if features.folder_split(_FOLDER_SPLIT_DIRS[split], name) != split or tf.io.gfile.isdir(path):
                continue
            yield RecordRef(split, os.path.splitext(name)[0], path, _usage_of(split), folder,
                            _emotion(folder), ("file", path))


def _csv_refs(text: io.TextIOBase, where: str, split: str) -> Iterator[RecordRef]:
    reader = csv.reader(text)
    cols = _csv_columns(next(reader), where)
    wanted = _usage_of(split)
    for row_index, row in enumerate(reader):
        if not row:
            continue
        source = f"{where}:row {row_index + 1}"  # 1-based data row, header excluded
        if len(row) <= max(cols.values()):
            if split == "train":  # a row without a Usage belongs to no split: report it once
                yield RecordRef(split, f"row_{row_index}", source, "", "", None,
                                problem=f"expected at least {max(cols.values()) + 1} columns, "
                                        f"got {len(row)}")
            continue
        usage = row[cols["usage"]].strip()
        if usage not in features.SPLIT_BY_USAGE:
            if split == "train":
                yield RecordRef(split, f"{usage}_{row_index}", source, usage, "", None,
                                problem=f"unknown Usage {usage!r}")
            continue
        if usage != wanted:
            continue
        code = row[cols["emotion"]].strip()
        label = features.EMOTIONS[int(code)] if code.isdigit() and int(code) < len(
            features.EMOTIONS) else None
        yield RecordRef(split, f"{usage}_{row_index}", source, usage, code, label,
                        ("pixels", row[cols["pixels"]]))


def _escapes(name: str) -> bool:
    """True for archive entries that would land outside the extraction root."""
    normalized = posixpath.normpath(name.replace("\\", "/"))
    return (name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) is not None
            or normalized == ".." or normalized.startswith("../"))


def _zip_refs(path: str, split: str) -> Iterator[RecordRef]:
    with tf.io.gfile.GFile(path, "rb") as f, zipfile.ZipFile(f) as zf:
        inner, where = _zip_layout(zf)
        if inner == "csv":
            with zf.open(where) as member:
                yield from _csv_refs(io.TextIOWrapper(member, "utf-8", newline=""),
                                     f"{path}!{where}", split)
        names = zf.namelist()
    if split == "train":  # entries outside the root belong to no split: report them once
        for name in names:
            if _escapes(name) and not name.endswith("/"):
                stem = os.path.splitext(posixpath.basename(name))[0]
                yield RecordRef(split, stem, f"{path}!{name}", "", "", None,
                                problem="zip entry escapes the archive root")
    if inner != "folder":
        return
    folder_split = _FOLDER_SPLIT_DIRS[split]
    for name in names:
        if name.endswith("/") or _escapes(name) or not name.startswith(where + folder_split + "/"):
            continue
        parts = name[len(where) + len(folder_split) + 1:].split("/")
        file_name = parts[-1]
        if features.folder_split(folder_split, file_name) != split:
            continue
        stem = os.path.splitext(file_name)[0]
        if len(parts) != 2:
            yield RecordRef(split, stem, f"{path}!{name}", _usage_of(split), "", None,
                            ("zip", path, name), problem="file is not inside an emotion folder")
            continue
        yield RecordRef(split, stem, f"{path}!{name}", _usage_of(split), parts[0],
                        _emotion(parts[0]), ("zip", path, name))


def _sample(refs: List[RecordRef], classes: Sequence[str], per_class: int) -> List[RecordRef]:
    by_class: Dict[str, List[RecordRef]] = {}
    for ref in refs:
        if not ref.problem and ref.label_name in classes:
            by_class.setdefault(ref.label_name, []).append(ref)
    keep = set()
    for members in by_class.values():
        members.sort(key=lambda r: hashlib.md5(r.image_id.encode()).hexdigest())
        keep.update(id(r) for r in members[:per_class])
    return [r if id(r) in keep or r.problem or r.label_name not in by_class
            else dataclasses.replace(r, sampled_out=True, location=()) for r in refs]


# ----------------------------------------------------------------------------
# Reading and validating one record
# ----------------------------------------------------------------------------

def to_outcome(ref: RecordRef, classes: Sequence[str], annotations_path: str = "",
               annotation_columns: Tuple[str, ...] = ()) -> Outcome:
    """Reads, validates and (if usable) encodes one record as a tf.Example, with the
    record's annotations (see `annotations.py`) when an annotations file is given."""
    label = ref.label_name or ""

    def result(status: str, reason: str = "", example: Optional[bytes] = None) -> Outcome:
        return Outcome(ref.split, ref.image_id, ref.source, label, status, reason, example)

    if ref.problem:
        return result(QUARANTINED, ref.problem)
    if ref.label_name is None:
        kind = "emotion code" if ref.location[:1] == ("pixels",) else "emotion folder"
        return result(QUARANTINED, f"unknown {kind} {ref.raw_label!r}")
    if ref.label_name not in classes:
        return result(EXCLUDED, "emotion not in the configured classes")
    if ref.sampled_out:
        return result(SAMPLED_OUT, "not in the profile's stratified sample")
    try:
        if ref.location[0] == "pixels":
            pixels = _pixels(ref.location[1])
            encoded, note = _png(pixels), ""
        else:
            encoded, pixels, note = _checked_image(_read_bytes(ref.location))
    except _BadRecord as e:
        return result(QUARANTINED, str(e))
    extra = annotation_lib.values_for(annotations_path, annotation_columns, ref.image_id)
    example = make_example(encoded, ref.label_name, ref.usage, ref.image_id, pixels, extra)
    return result(CONVERTED if note else OK, note, example)


class _BadRecord(Exception):
    pass


@functools.lru_cache(maxsize=4)
def _open_archive(path: str) -> zipfile.ZipFile:
    """One open archive per worker: reading its directory per record would cost O(entries)."""
    return zipfile.ZipFile(tf.io.gfile.GFile(path, "rb"))


def _read_bytes(location: Tuple) -> bytes:
    try:
        if location[0] == "file":
            with tf.io.gfile.GFile(location[1], "rb") as f:
                return f.read()
        return _open_archive(location[1]).read(location[2])
    except (OSError, zipfile.BadZipFile, tf.errors.OpError) as e:
        raise _BadRecord(f"cannot read: {e}") from None


def _checked_image(data: bytes) -> Tuple[bytes, np.ndarray, str]:
    """Returns (bytes to keep, 48x48 uint8 pixels, conversion note); raises _BadRecord
    for non-images."""
    if not data:
        raise _BadRecord("empty file")
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except UnidentifiedImageError:
        raise _BadRecord("not an image file") from None
    except Image.DecompressionBombError as e:
        raise _BadRecord(f"image too large: {e}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise _BadRecord(f"cannot decode image: {e}") from None
    size = (features.IMAGE_SIZE, features.IMAGE_SIZE)
    if image.size == size and image.mode == "L" and image.format in _KEEP_FORMATS:
        return data, np.asarray(image), ""
    note = (f"converted {image.format} {image.mode} {image.size[0]}x{image.size[1]} "
            f"to 48x48 grayscale PNG")
    converted = image.convert("L")
    if converted.size != size:
        converted = converted.resize(size, Image.Resampling.BILINEAR, reducing_gap=None)
    pixels = np.asarray(converted)
    return _png(pixels), pixels, note


def _pixels(text: str) -> np.ndarray:
    """48x48 uint8 pixels from a CSV row's space-separated values."""
    values = text.split()
    if len(values) != features.NUM_PIXELS:
        raise _BadRecord(f"expected {features.NUM_PIXELS} pixel values, got {len(values)}")
    try:
        pixels = np.array([int(v) for v in values], dtype=np.int64)
    except ValueError:
        bad = next(v for v in values if not v.lstrip("-").isdigit())
        raise _BadRecord(f"non-numeric pixel value {bad[:20]!r}") from None
    if pixels.min() < 0 or pixels.max() > 255:
        raise _BadRecord("pixel value outside 0..255")
    return pixels.astype(np.uint8).reshape(features.IMAGE_SIZE, features.IMAGE_SIZE)


def _png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array, mode="L").save(out, format="PNG")
    return out.getvalue()


def image_statistics(pixels: np.ndarray) -> Tuple[float, float]:
    """(brightness, contrast) of one image: mean and standard deviation of its pixels / 255."""
    values = np.asarray(pixels, dtype=np.float64) / 255.0
    return float(values.mean()), float(values.std())


def make_example(encoded: bytes, label_name: str, usage: str, image_id: str,
                 pixels: np.ndarray, annotations: Optional[Mapping[str, str]] = None) -> bytes:
    """A serialized tf.Example with the raw features the pipeline expects; `pixels`
    (the decoded image) gives the per-image statistics that drift checks compare and
    the proxy bands the Evaluator slices by; `annotations` adds string features."""
    def bytes_feature(value: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def float_feature(value: float) -> tf.train.Feature:
        return tf.train.Feature(float_list=tf.train.FloatList(value=[value]))

    brightness, contrast = image_statistics(pixels)

    return tf.train.Example(features=tf.train.Features(feature={
        features.IMAGE_KEY: bytes_feature(encoded),
        features.LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(
            value=[features.EMOTIONS.index(label_name)])),
        features.LABEL_NAME_KEY: bytes_feature(label_name.encode()),
        features.SOURCE_SPLIT_KEY: bytes_feature(usage.encode()),
        features.IMAGE_ID_KEY: bytes_feature(image_id.encode()),
        features.BRIGHTNESS_KEY: float_feature(brightness),
        features.CONTRAST_KEY: float_feature(contrast),
        features.BRIGHTNESS_BAND_KEY: bytes_feature(
            features.band(brightness, features.BRIGHTNESS_BANDS).encode()),
        features.CONTRAST_BAND_KEY: bytes_feature(
            features.band(contrast, features.CONTRAST_BANDS).encode()),
        **{name: bytes_feature(value.encode()) for name, value in (annotations or {}).items()},
    })).SerializeToString()
