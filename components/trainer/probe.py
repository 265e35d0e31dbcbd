"""Does a network leave chance at all? A few hundred plain steps (no augmentation) of one
model at one or more learning rates (Nadam unless --optimizer says otherwise) on a
class-balanced subset of train/, with the loss and the accuracy on held-out faces of that
subset after every block of steps. Minutes on CPU instead of the hours a full epoch of a
large model from scratch costs there.

    python -m components.trainer.probe --data FER2013 --model vgg16 \
        --learning-rates 1e-3,1e-4 [--json out.json]

A loss that stays near ln(7) = 1.95 with one or two distinct predictions means the
network has not started to learn in that many steps (it may still, later).
"""
import argparse
import datetime
import json
import math
import time
from typing import List, Optional, Tuple

import keras
import numpy as np

from components.trainer import model as model_lib, standalone
from pipeline import config, features

NUM_CLASSES = len(features.EMOTIONS)


def balanced_subset(data: str, per_class: int, held_out: int
                    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train x, train y, held-out x, held-out y): the first `per_class` faces of each
    emotion in train/, shuffled (fixed seed), the last `held_out` of them held out."""
    x, y, _ = standalone.load_split(data, "train", features.EMOTIONS, per_class=per_class)
    if not 0 < held_out < len(x):
        raise ValueError(f"--held-out {held_out}: must be at least 1 and under the subset's {len(x)} faces")
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    return x[:-held_out], y[:-held_out], x[-held_out:], y[-held_out:]


def probe(subset, model_name: str, learning_rate: float, blocks: int, steps_per_block: int,
          batch_size: int, seed: int, optimizer: str = config.TrainingConfig.optimizer) -> dict:
    """`blocks` x `steps_per_block` steps of a freshly initialised model, each block on new
    faces, with the held-out faces scored after each."""
    x, y, x_held, y_held = subset
    block = steps_per_block * batch_size
    if blocks * block > len(x):
        raise ValueError(f"{blocks} blocks of {block} faces need {blocks * block} training faces; "
                         f"the subset has {len(x)} (raise --per-class)")
    keras.utils.set_random_seed(seed)
    network = model_lib.compile_model(model_lib.build(model_name, NUM_CLASSES), learning_rate, optimizer)
    targets = keras.utils.to_categorical(y, NUM_CLASSES)
    rows, start = [], time.time()
    for b in range(blocks):
        history = network.fit(x[b * block:(b + 1) * block], targets[b * block:(b + 1) * block],
                              batch_size=batch_size, epochs=1, verbose=0)
        predicted = network.predict(x_held, verbose=0).argmax(axis=1)
        rows.append({"steps": (b + 1) * steps_per_block,
                     "loss": round(float(history.history["loss"][0]), 4),
                     "held_out_accuracy": round(float((predicted == y_held).mean()), 4),
                     "distinct_predictions": int(len(set(predicted.tolist()))),
                     "seconds": round(time.time() - start, 1)})
        print(f"{model_name} lr={learning_rate:g} {rows[-1]}", flush=True)
    return {"learning_rate": learning_rate, "blocks": rows}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="FER2013 folder with train/<emotion>/")
    parser.add_argument("--model", default="vgg16", choices=config.MODELS)
    parser.add_argument("--learning-rates", default="1e-3,1e-4")
    parser.add_argument("--optimizer", default=config.TrainingConfig.optimizer, choices=config.OPTIMIZERS)
    parser.add_argument("--per-class", type=int, default=1000)
    parser.add_argument("--held-out", type=int, default=700)
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--steps-per-block", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", help="write the measurements here")
    args = parser.parse_args(argv)
    subset = balanced_subset(args.data, args.per_class, args.held_out)
    runs = [probe(subset, args.model, float(lr), args.blocks, args.steps_per_block, args.batch_size,
                  args.seed, args.optimizer) for lr in args.learning_rates.split(",")]
    report = {"model": args.model, "backend": keras.backend.backend(), "optimizer": args.optimizer,
              "augmentation": False, "per_class": args.per_class, "held_out": args.held_out,
              "batch_size": args.batch_size, "chance_loss": round(math.log(NUM_CLASSES), 4),
              "machine": standalone.machine(), "date": datetime.date.today().isoformat(), "runs": runs}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
