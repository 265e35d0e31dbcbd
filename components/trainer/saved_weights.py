"""Keras weights out of an exported or shipped SavedModel, to train on from it:

    python -m components.trainer.saved_weights --saved-model models/fer2013-dcnn/<version> \\
        --model dcnn --output out/dcnn-shipped.weights.h5

then `--warm-start out/dcnn-shipped.weights.h5` in the standalone trainer (any Keras
backend) or the pipeline. The export tracks the network as `model` (export.ServingModule),
so a network built with the same architecture and the model's own classes (read from its
`predict_image` signature) reads its variables from the SavedModel's checkpoint, either
as trained (the earlier exports) or with its batch normalisation folded
(`model.fold_batch_norm`, then unfolded). Needs
TensorFlow. The optimizer state is not in a SavedModel: training goes on from the weights
with a fresh optimizer.
"""
import argparse
import gc
import os
import sys
from typing import Callable, List, Optional, Tuple

import keras
import tensorflow as tf

from components.trainer import model as model_lib


def network_from_saved_model(saved_model_dir: str, model: str,
                             num_classes: Optional[int] = None) -> keras.Model:
    """A `model` network with the weights of the SavedModel at `saved_model_dir`, for its
    `num_classes` classes (when not given, read from its `predict_image` signature)."""
    from pipeline.ship import served_predictor

    if not os.path.isfile(os.path.join(saved_model_dir, "saved_model.pb")):
        raise ValueError(f"{saved_model_dir}: no saved_model.pb (give a version folder, "
                         "models/<name>/<version>)")
    if num_classes is None:
        num_classes = len(served_predictor(saved_model_dir)[1])
    variables = os.path.join(saved_model_dir, "variables", "variables")

    def read(build: Callable[[], keras.Model]) -> Tuple[Optional[keras.Model], str]:
        """(a network from `build()` with its variables read from the checkpoint, ''), or
        (None, why not): the SavedModel holds more than the network (expect_partial quiets
        that). A network that failed to read is dropped here, quietly: TensorFlow warns of
        each of its unrestored values (a hundred lines) when it is deleted, whenever that is."""
        candidate = build()
        try:
            tf.train.Checkpoint(model=candidate).read(variables).expect_partial() \
                .assert_existing_objects_matched()
            return candidate, ""
        except (AssertionError, ValueError) as error:
            why = str(error).splitlines()[0]
        logger, level = tf.get_logger(), tf.get_logger().level
        logger.setLevel("ERROR")
        try:
            del candidate
            gc.collect()
        finally:
            logger.setLevel(level)
        return None, why

    # Exports hold the network with its batch normalisation folded (`model.fold_batch_norm`),
    # earlier ones the network as trained: read whichever fits.
    network, error = read(lambda: model_lib.build(model, num_classes))
    if network is not None:
        return network
    unread = model_lib.build(model, num_classes)
    if model_lib.batch_norm_folds(unread):
        folded, _ = read(lambda: model_lib.fold_batch_norm(model_lib.build(model, num_classes)))
        if folded is not None:
            return model_lib.unfold_batch_norm(folded, unread)
    raise ValueError(f"{saved_model_dir}: its variables do not fit a {model!r} network with "
                     f"{num_classes} classes (exported with another --model?): {error}")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.trainer.saved_weights",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--saved-model", required=True, help="a version folder: models/<name>/<version>")
    parser.add_argument("--model", required=True, choices=sorted(model_lib.BUILDERS),
                        help="the architecture it was exported with")
    parser.add_argument("--output", required=True, help="the .weights.h5 to write")
    args = parser.parse_args(argv)
    if not args.output.endswith(".weights.h5"):
        parser.error("--output must end in .weights.h5")
    try:
        network = network_from_saved_model(args.saved_model, args.model)
    except ValueError as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    network.save_weights(args.output)
    print(f"{args.output}: {args.model}, {network.output_shape[-1]} classes, "
          f"{network.count_params():,} parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
