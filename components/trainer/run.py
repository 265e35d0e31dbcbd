"""TFX Trainer entry point: `run_fn` only orchestrates (config -> data -> fit -> export)."""
import json
import os

import keras
import tensorflow_transform as tft
from absl import logging
from tfx.components.trainer.fn_args_utils import FnArgs

from components.trainer import data, export, model as model_lib, training
from pipeline.config import TrainingConfig


def run_fn(fn_args: FnArgs) -> None:
    """Trains the configured model on the train split and exports the serving SavedModel."""
    config = TrainingConfig.from_dict(fn_args.custom_config)
    keras.utils.set_random_seed(config.seed)
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    strategy = training.distribution_strategy()
    train_ds, validation_ds, counts = data.make_datasets(
        fn_args.train_files, tf_transform_output, len(config.classes),
        config.batch_size * strategy.num_replicas_in_sync, config.validation_fraction, config.seed,
        imbalance=config.imbalance)
    class_weight = data.class_weights(counts) if config.imbalance == "class_weight" else None
    logging.info("Training class counts %s; imbalance=%s; class weights %s",
                 dict(zip(config.classes, counts.tolist())), config.imbalance, class_weight)
    with strategy.scope():
        network = model_lib.build(config.model, len(config.classes))
        model = model_lib.with_augmentation(network, config.seed) if config.augment else network
        model_lib.compile_model(model, config.learning_rate)
    history = training.fit(model, train_ds, validation_ds, config, fn_args.model_run_dir,
                           class_weight=class_weight)
    export.export_serving_model(network, tf_transform_output, config.classes,
                                fn_args.serving_model_dir)
    with open(os.path.join(fn_args.model_run_dir, "history.json"), "w") as f:
        json.dump(history, f, indent=1)
    with open(os.path.join(fn_args.model_run_dir, "class_balance.json"), "w") as f:
        json.dump({"imbalance": config.imbalance,
                   "train_counts": dict(zip(config.classes, counts.tolist())),
                   "class_weights": None if class_weight is None else
                   {config.classes[c]: round(w, 4) for c, w in class_weight.items()}}, f, indent=1)
    logging.info("Exported %s (%d classes) to %s", config.model, len(config.classes),
                 fn_args.serving_model_dir)
