"""Faces in ordinary photos: read a photo safely, find the faces, crop each with a margin.

Detection uses OpenCV's Haar cascade for frontal faces (shipped with
opencv-python-headless 4.x; OpenCV 5 dropped the cascades). Photos are
downscaled for detection only; boxes are in the original photo's pixels.
Crops are re-encoded as PNG, the form the model's `predict_image` takes.
"""
import dataclasses
import io
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 50_000_000          # larger photos are refused with a clear message
DETECTION_MAX_SIDE = 1280        # detection runs on a copy at most this large
DEFAULT_MARGIN = 0.2             # each side of a face box grows by this fraction
CASCADE = "haarcascade_frontalface_default.xml"


class PhotoError(ValueError):
    """A photo that cannot be used: unreadable, not an image, too large."""


@dataclasses.dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int

    def as_list(self) -> List[int]:
        return [self.x, self.y, self.w, self.h]


def read_photo(path: str) -> Image.Image:
    """The photo as an RGB PIL image, upright (EXIF orientation applied)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise PhotoError(f"cannot read {path}: {e.strerror or e}") from None
    if not data:
        raise PhotoError(f"{path} is empty")
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise PhotoError(f"{path} is too large ({width}x{height} = {width * height / 1e6:.0f} "
                             f"megapixels; at most {MAX_PIXELS / 1e6:.0f})")
        image.load()
        image = ImageOps.exif_transpose(image)
    except PhotoError:
        raise
    except UnidentifiedImageError:
        raise PhotoError(f"{path} is not an image OpenCV/PIL can read") from None
    except Image.DecompressionBombError:
        raise PhotoError(f"{path} is too large (decompression bomb check)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise PhotoError(f"{path} cannot be decoded: {e}") from None
    return image.convert("RGB")


_detector = None


def _cascade():
    global _detector
    if _detector is None:
        import cv2

        path = os.path.join(cv2.data.haarcascades, CASCADE)
        _detector = cv2.CascadeClassifier(path)
        if _detector.empty():
            raise RuntimeError(f"OpenCV could not load its face cascade {path}")
    return _detector


def detect_faces(image: Image.Image, min_face: int = 24) -> List[Box]:
    """Face boxes (x, y, w, h) in `image`'s pixels, largest first."""
    gray = np.asarray(image.convert("L"))
    scale = min(1.0, DETECTION_MAX_SIDE / max(gray.shape))
    if scale < 1.0:
        small = Image.fromarray(gray).resize(
            (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale))),
            Image.Resampling.BILINEAR)
        gray = np.asarray(small)
    found = _cascade().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5,
                                        minSize=(min_face, min_face))
    boxes = [Box(*(int(round(v / scale)) for v in box)) for box in np.asarray(found).reshape(-1, 4)]
    return sorted(boxes, key=lambda b: -b.w * b.h)


def crop(image: Image.Image, box: Box, margin: float = DEFAULT_MARGIN) -> bytes:
    """The face with `margin` of its size added on each side (clamped to the photo), as a
    grayscale PNG."""
    dx, dy = int(box.w * margin), int(box.h * margin)
    left, top = max(0, box.x - dx), max(0, box.y - dy)
    right, bottom = min(image.width, box.x + box.w + dx), min(image.height, box.y + box.h + dy)
    out = io.BytesIO()
    image.crop((left, top, right, bottom)).convert("L").save(out, format="PNG")
    return out.getvalue()


def faces_in(image: Image.Image, margin: float = DEFAULT_MARGIN,
             whole_image: bool = False) -> Tuple[List[Box], List[bytes]]:
    """The faces the detector finds and their crops; with `whole_image`, the whole image as
    one face (a photo that is already a face crop, as FER2013's are: the detector needs
    more than the face to find it)."""
    boxes = [Box(0, 0, image.width, image.height)] if whole_image else detect_faces(image)
    return boxes, [crop(image, box, 0.0 if whole_image else margin) for box in boxes]


def seen_in(images: Sequence[bytes], view, names: Optional[Sequence[str]] = None) -> List[bytes]:
    """Encoded face images as seen in a test-time `view` (`model.View`), as grayscale
    PNGs: the trainer's own view transform (`model.view_of`, one call per image size),
    rounded to whole grey levels. The plain view gives the images back unchanged. An
    image that cannot be decoded raises ValueError naming it (`names`, else its index)."""
    if view == type(view)():
        return list(images)
    from components.trainer.model import view_of

    by_size: Dict[Tuple[int, int], List[int]] = {}
    pixels = []
    for i, data in enumerate(images):
        try:
            with Image.open(io.BytesIO(data)) as image:
                pixels.append(np.asarray(image.convert("L"), np.uint8))
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"{names[i] if names else f'image {i}'}: not a readable image ({e})") from None
        by_size.setdefault(pixels[-1].shape, []).append(i)
    out: List[bytes] = [b""] * len(pixels)
    for indices in by_size.values():
        seen = view_of(np.stack([pixels[i] for i in indices])[..., None], view)[..., 0]
        for i, face in zip(indices, np.clip(np.rint(seen), 0, 255).astype(np.uint8)):
            encoded = io.BytesIO()
            Image.fromarray(face).save(encoded, format="PNG")
            out[i] = encoded.getvalue()
    return out
