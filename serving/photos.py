"""Photo to emotions: find the faces in each photo and classify them, in process or on a server.

    fer-pipeline predict PHOTO... (--model DIR | --server URL) [--tta flip|multiview|flip_when_unsure]
        [--json] [--annotate OUTDIR]

`--model` is a pushed SavedModel: a version directory, or the model's base
directory (its newest numeric version is used). `--server` is TF Serving:
http(s)://host:8501 for REST, grpc://host:8500 (or host:8500) for gRPC.
`--tta` asks the model about each face in several views: more accurate, and as many
times the work. Models exported by this pipeline build the views themselves (signature
`predict_image_<views>`); for older ones the client builds and sends them
(`with_test_time_views`). `--tta flip_when_unsure` adds the mirror image only for the
faces the model is unsure of (its `predict_image_flip_when_unsure` signature).
Per photo: the file and its faces, each with `box` [x, y, w, h], `label` and
`probabilities`. A bad photo gets a one-line message; the exit status is
non-zero only when no photo could be processed. Image bytes and face crops
are never logged or printed.
"""
import copy
import dataclasses
import json
import os
import sys
from typing import Dict, List, Optional, Sequence

from PIL import ImageDraw

from pipeline import features
from serving import client as clients
from serving import faces as face_lib


class LocalModel:
    """The SavedModel in this process (TensorFlow), with the same interface as the clients."""

    def __init__(self, model_dir: str, signature: str = features.PREDICT_IMAGE_SIGNATURE):
        import tensorflow as tf

        self._tf = tf
        self.path = resolve_model_dir(model_dir)
        self._signatures = tf.saved_model.load(self.path).signatures
        self.signature = signature

    def signature_names(self) -> List[str]:
        return sorted(self._signatures)

    def predict_images(self, images: Sequence[bytes]) -> List[clients.Prediction]:
        if not images:
            return []
        if self.signature not in self._signatures:
            raise clients.BadRequest(f"{self.path} has no signature {self.signature!r} "
                                     f"(it has {', '.join(self.signature_names())})")
        predict = self._signatures[self.signature]
        out = predict(**{features.IMAGES_INPUT: self._tf.constant(list(images))})
        return clients.predictions_from_outputs({k: v.numpy().tolist() for k, v in out.items()})


class TestTimeViews:
    """A classifier (`LocalModel` or a REST/gRPC client) asked about every face in several
    test-time views at once (`model.TEST_TIME_VIEWS`, one request for all of them); each
    face's answer is the mean of its views' probabilities and the label their arg-max.
    The served label rule is the arg-max too, so one view gives the model's own answer."""

    def __init__(self, classifier, views: Sequence):
        if not views:
            raise ValueError("test-time augmentation needs at least one view")
        self.classifier, self.views = classifier, tuple(views)

    def predict_images(self, images: Sequence[bytes]) -> List[clients.Prediction]:
        if not images:
            return []
        seen = [face_lib.seen_in(images, view) for view in self.views]
        answers = self.classifier.predict_images([image for batch in seen for image in batch])
        n = len(images)
        predictions = []
        for i in range(n):
            views = [answers[k * n + i].probabilities for k in range(len(self.views))]
            mean = {name: sum(view[name] for view in views) / len(views) for name in views[0]}
            predictions.append(clients.Prediction(max(mean, key=mean.get), mean))
        return predictions


def with_test_time_views(classifier, name: str):
    """`classifier` answering with the test-time views `name` (`model.TEST_TIME_VIEWS`): the
    model's own `predict_image_<name>` signature where it has one (one image a face is sent;
    the model builds the views from the 48x48 face it sees), else `TestTimeViews` (the client
    builds the views and sends them all; for models exported before those signatures).
    The two agree to within the client's rounding of each view to whole grey levels.
    `features.FLIP_WHEN_UNSURE` needs the model's own signature (its threshold lives in the
    model)."""
    from components.trainer.model import TEST_TIME_VIEWS

    choices = (*TEST_TIME_VIEWS, features.FLIP_WHEN_UNSURE)
    if name not in choices:
        raise ValueError(f"--tta {name}: choose from {', '.join(choices)}")
    signature = features.views_signature(name)
    if signature in classifier.signature_names():
        served = copy.copy(classifier)
        served.signature = signature
        return served
    if name == features.FLIP_WHEN_UNSURE:
        raise ValueError(f"--tta {name}: the model has no {signature} signature (exported before "
                         "2026-12-07): export it again, or use --tta flip")
    return TestTimeViews(classifier, TEST_TIME_VIEWS[name])


def resolve_model_dir(path: str, what: str = "--model") -> str:
    """`path` if it holds saved_model.pb, else its newest numeric version subdirectory;
    `what` names the path in the error (the flag or the record it came from)."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    if not os.path.isdir(path):
        raise ValueError(f"{what}: no such directory: {path}")
    versions = sorted((int(n) for n in os.listdir(path)
                       if n.isdigit() and os.path.isfile(os.path.join(path, n, "saved_model.pb"))))
    if not versions:
        raise ValueError(f"{what}: {path} holds no SavedModel (saved_model.pb) and no "
                         f"numeric version directory with one")
    return os.path.join(path, str(versions[-1]))


def server_client(url: str, model_name: str, timeout_s: float):
    """A REST (http://, https://) or gRPC (grpc://, or host:port) client of TF Serving."""
    if not timeout_s > 0:
        raise ValueError(f"--timeout {timeout_s:g}: seconds per request, more than 0")
    if url.startswith(("http://", "https://")):
        return clients.RestClient(url, model_name, timeout_s=timeout_s)
    if "://" in url and not url.startswith("grpc://"):
        raise ValueError(f"--server {url}: http://host:8501 (REST), grpc://host:8500 or host:8500 (gRPC)")
    return clients.GrpcClient(url, model_name, timeout_s=timeout_s)


OK, NO_FACE, FAILED = "ok", "no_face", "failed"


@dataclasses.dataclass
class PhotoResult:
    """status: ok (faces found), no_face (read, but no face in it) or failed (`error` says why)."""
    file: str
    faces: List[Dict] = dataclasses.field(default_factory=list)
    status: str = OK
    error: Optional[str] = None
    annotated: Optional[str] = None

    def to_dict(self) -> Dict:
        return dataclasses.asdict(self)


def analyze(path: str, classifier, margin: float = face_lib.DEFAULT_MARGIN,
            annotate_dir: Optional[str] = None, whole_image: bool = False,
            annotated_name: Optional[str] = None) -> PhotoResult:
    """Faces, boxes and emotions of one photo (with `whole_image`, the photo is the face);
    problems become `error`, not exceptions. Its annotated copy is `annotated_name` in
    `annotate_dir` (default: `<stem>.annotated.png`)."""
    result = PhotoResult(path)
    try:
        image = face_lib.read_photo(path)
    except face_lib.PhotoError as e:
        result.status, result.error = FAILED, str(e)
        return result
    boxes, crops = face_lib.faces_in(image, margin, whole_image)
    if not boxes:
        hint = " (already a face crop? --whole-image classifies it as one face)" if max(image.size) <= 96 else ""
        result.status, result.error = NO_FACE, f"{path}: no face found{hint}"
    else:
        predictions = classifier.predict_images(crops)
        result.faces = [{"box": box.as_list(), **p.to_dict()} for box, p in zip(boxes, predictions)]
    if annotate_dir:
        result.annotated = annotate(image, result.faces, path, annotate_dir, annotated_name)
    return result


def annotated_names(photos: Sequence[str]) -> List[str]:
    """The file name of each photo's annotated copy: `<stem>.annotated.png`, and for photos
    whose stems repeat (a/x.jpg, b/x.jpg) `<stem>.2.annotated.png`, ... after the first, so
    no copy overwrites another."""
    seen: Dict[str, int] = {}
    names = []
    for path in photos:
        stem = os.path.splitext(os.path.basename(path))[0]
        seen[stem] = seen.get(stem, 0) + 1
        names.append(f"{stem}.annotated.png" if seen[stem] == 1 else f"{stem}.{seen[stem]}.annotated.png")
    return names


def annotate(image, faces: List[Dict], path: str, out_dir: str, name: Optional[str] = None) -> str:
    """A copy of the photo with each face's box and label drawn on it, as `name` in `out_dir`."""
    os.makedirs(out_dir, exist_ok=True)
    drawn = image.copy()
    draw = ImageDraw.Draw(drawn)
    width = max(2, round(max(image.size) / 300))
    for face in faces:
        x, y, w, h = face["box"]
        draw.rectangle([x, y, x + w, y + h], outline=(255, 200, 0), width=width)
        text = f"{face['label']} {face['probabilities'][face['label']]:.2f}"
        draw.text((x + width, max(0, y - 12 - width)), text, fill=(255, 200, 0))
    out = os.path.join(out_dir, name or annotated_names([path])[0])
    drawn.save(out)
    return out


def format_text(results: List[PhotoResult]) -> str:
    """The report of the photos read (faces found or none); a photo that failed is left to
    `run`'s one line on stderr."""
    lines = []
    for r in results:
        if r.status == FAILED:
            continue
        if r.status == NO_FACE:   # its error names the file
            lines.append(r.error)
            continue
        lines.append(f"{r.file}: {len(r.faces)} face(s)")
        for face in r.faces:
            ranked = sorted(face["probabilities"].items(), key=lambda kv: -kv[1])
            lines.append(f"  box {face['box']}: {face['label']} ("
                         + ", ".join(f"{k} {v:.2f}" for k, v in ranked) + ")")
        if r.annotated:
            lines.append(f"  annotated: {r.annotated}")
    return "\n".join(lines)


def run(photos: Sequence[str], classifier, as_json: bool = False,
        annotate_dir: Optional[str] = None, margin: float = face_lib.DEFAULT_MARGIN,
        whole_image: bool = False) -> int:
    """Prints the results (on stdout; with `as_json`, the failed photos' errors too) and one
    line on stderr for each photo that failed; 0 unless no photo could be processed at all.
    `annotate_dir` must be a folder or not exist (ValueError)."""
    if annotate_dir and os.path.exists(annotate_dir) and not os.path.isdir(annotate_dir):
        raise ValueError(f"--annotate {annotate_dir}: a file, not a folder")
    results = []
    names = annotated_names(photos)
    for i, path in enumerate(photos):
        try:
            results.append(analyze(path, classifier, margin, annotate_dir, whole_image, names[i]))
        except clients.Unavailable as e:
            # The server did not answer after its retries: the rest are not sent (each would
            # wait as long), and each is reported.
            results.append(PhotoResult(path, status=FAILED, error=f"{path}: {e}"))
            results += [PhotoResult(rest, status=FAILED, error=f"{rest}: not sent: the server did not "
                                    f"answer for {path}") for rest in photos[i + 1:]]
            break
        except clients.ServingError as e:
            results.append(PhotoResult(path, status=FAILED, error=f"{path}: {e}"))
    if as_json:
        print(json.dumps({"photos": [r.to_dict() for r in results]}, indent=1))
    elif any(r.status != FAILED for r in results):
        print(format_text(results))
    failed = [r for r in results if r.status == FAILED]
    for r in failed:
        sys.stderr.write(f"fer-pipeline predict: {r.error}\n")
    return 1 if len(failed) == len(results) else 0
