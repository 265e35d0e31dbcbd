"""Per-image annotations (for example gender, age_group, skin_tone) joined at ingestion.

FER2013 carries no demographic attributes. A user who has them supplies a CSV
keyed by `image_id` (the id ingestion assigns: the file stem, or <Usage>_<row>
for CSV rows) with any further columns; each column becomes a string feature of
every example, `unannotated` where the CSV has no row for the image, and the
Evaluator slices by it.
"""
import csv
import functools
import re
from typing import Dict, Mapping, Tuple

import tensorflow as tf

from pipeline import features

ID_COLUMN = "image_id"
UNANNOTATED = "unannotated"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class AnnotationError(ValueError):
    """The annotations file cannot be used; the message names the file and the row."""


def read(path: str) -> Tuple[Tuple[str, ...], Dict[str, Dict[str, str]]]:
    """(annotation columns, {image_id: {column: value}}); raises AnnotationError."""
    try:
        with tf.io.gfile.GFile(path, "r") as f:
            rows = list(csv.reader(f))
    except (tf.errors.OpError, OSError) as e:
        raise AnnotationError(f"cannot read annotations {path}: {getattr(e, 'message', e)}") from None
    except (csv.Error, UnicodeDecodeError) as e:
        raise AnnotationError(f"annotations {path} is not a readable CSV: {e}") from None
    if not rows:
        raise AnnotationError(f"annotations {path} is empty")
    header = [h.strip() for h in rows[0]]
    if ID_COLUMN not in header:
        raise AnnotationError(f"annotations {path}: no '{ID_COLUMN}' column in the header {header}")
    columns = tuple(h for h in header if h != ID_COLUMN)
    if not columns:
        raise AnnotationError(f"annotations {path}: no column besides '{ID_COLUMN}'")
    reserved = set(features.RAW_FEATURE_KEYS)
    for name in columns:
        if not _NAME.match(name):
            raise AnnotationError(f"annotations {path}: column name {name!r} must be letters, digits "
                                  f"and underscores, starting with a letter")
        if name in reserved:
            raise AnnotationError(f"annotations {path}: column {name!r} clashes with a feature the "
                                  f"pipeline writes; rename it")
    if len(set(header)) != len(header):
        raise AnnotationError(f"annotations {path}: repeated column in the header {header}")
    index = header.index(ID_COLUMN)
    table: Dict[str, Dict[str, str]] = {}
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise AnnotationError(f"annotations {path} line {number}: {len(row)} values, "
                                  f"expected {len(header)}")
        image_id = row[index].strip()
        if not image_id:
            raise AnnotationError(f"annotations {path} line {number}: empty {ID_COLUMN}")
        if image_id in table:
            raise AnnotationError(f"annotations {path} line {number}: {ID_COLUMN} {image_id!r} "
                                  f"appears twice")
        table[image_id] = {h.strip(): (v.strip() or UNANNOTATED)
                           for h, v in zip(header, row) if h.strip() != ID_COLUMN}
    return columns, table


@functools.lru_cache(maxsize=4)
def _cached(path: str) -> Dict[str, Dict[str, str]]:
    return read(path)[1]


def values_for(path: str, columns: Tuple[str, ...], image_id: str) -> Mapping[str, str]:
    """The annotation values of one image (read once per worker process)."""
    if not path:
        return {}
    row = _cached(path).get(image_id, {})
    return {column: row.get(column, UNANNOTATED) for column in columns}
