"""Training cost of every model on the machine that runs it: parameters, FLOPs per image,
training throughput (with the recipe's augmentation and without it) and the seconds one
FER2013 epoch takes.

    python -m components.trainer.benchmark --data /path/to/fer2013 [--models dcnn,vgg16] \\
        [--steps 20] [--json out.json]

Each model trains (augmentation, Nadam, the Trainer's recipe) on batches of real faces;
after a warm-up, `--steps` steps are timed. One epoch = the train split minus the 10%
validation carve-out (25,838 faces). Runs on any Keras backend (KERAS_BACKEND).
"""
import argparse
import json
import time
from typing import Dict, List, Optional

import keras
import numpy as np

from components.trainer import model as model_lib, standalone
from pipeline import features

EPOCH_IMAGES = 25_838  # 28,709 FER2013 training faces minus the 10% carve-out


def measure(name: str, x: np.ndarray, y: np.ndarray, batch_size: int, steps: int) -> Dict:
    """The model's size and training throughput, with the recipe's augmentation and without
    it (what the augmentation costs: on an H100 under JAX, Keras's own flip, rotation, shift
    and zoom layers took 0.5 s of a 0.53 s DCNN step)."""
    keras.utils.set_random_seed(0)
    network = model_lib.build(name, y.shape[1])
    with_augmentation = round(images_per_second(model_lib.with_augmentation(network), x, y, batch_size,
                                                steps), 1)
    # the same network, already trained a few steps: the weights do not change the timing
    without = images_per_second(network, x, y, batch_size, steps)
    return {"model": name, "parameters": int(network.count_params()),
            "gflops_per_image": round(model_lib.flops_per_image(network) / 1e9, 3),
            "train_images_per_second": with_augmentation,
            "seconds_per_epoch": round(EPOCH_IMAGES / with_augmentation),
            "train_images_per_second_without_augmentation": round(without, 1),
            "batch_size": batch_size, "timed_steps": steps}


def images_per_second(model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int,
                      steps: int) -> float:
    model = model_lib.compile_model(model, 1e-3)
    batches = [(x[i:i + batch_size], y[i:i + batch_size])
               for i in range(0, len(x) - batch_size + 1, batch_size)]
    for bx, by in batches[:2]:  # warm-up: tracing and compilation
        model.train_on_batch(bx, by)
    started = time.perf_counter()
    for step in range(steps):
        model.train_on_batch(*batches[step % len(batches)])
    return steps * batch_size / (time.perf_counter() - started)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="FER2013 folder with train/")
    parser.add_argument("--models", default=",".join(model_lib.BUILDERS))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    x, labels, _ = standalone.load_split(args.data, "train", features.EMOTIONS, per_class=40)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], np.eye(len(features.EMOTIONS), dtype="float32")[labels[order]]
    results = {"machine": standalone.machine(),
               "backend": keras.backend.backend(), "models": []}
    for name in args.models.split(","):
        row = measure(name, x, y, args.batch_size, args.steps)
        results["models"].append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
