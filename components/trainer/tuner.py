"""TFX Tuner: keras-tuner random search over batch size, learning rate and optimizer.

Off by default (`TuningConfig.enabled`). Each trial trains the configured model for
`TuningConfig.epochs` epochs on the train split minus the validation carve-out and is
scored by validation accuracy; the Trainer then trains with the best values
(`tuned_config`). Transfer models are tuned in their first phase only.
"""
import dataclasses
import json
from typing import Any, Dict, Optional

import keras_tuner
import tensorflow_transform as tft
from tfx.components.trainer.fn_args_utils import FnArgs
from tfx.components.tuner.component import TunerFnResult

from components.trainer import data, model as model_lib, recipe
from pipeline.config import TrainingConfig, TuningConfig

TUNED = ("batch_size", "learning_rate", "optimizer")


def tuned_config(config: TrainingConfig, hyperparameters: Optional[Dict[str, Any]]) -> TrainingConfig:
    """`config` with the Tuner's best batch size, learning rate and optimizer, if any."""
    if not hyperparameters:
        return config
    values = keras_tuner.HyperParameters.from_config(hyperparameters).values
    return dataclasses.replace(config, **{k: values[k] for k in TUNED if k in values})


class FerHyperModel(keras_tuner.HyperModel):
    def __init__(self, config: TrainingConfig, tuning: TuningConfig):
        super().__init__(name=config.model)
        self.config, self.tuning = config, tuning

    def build(self, hp: keras_tuner.HyperParameters):
        config = self.config
        network = model_lib.build(config.model, len(config.classes), config.pretrained_weights)
        model = model_lib.training_model(network, config)
        return model_lib.compile_model(
            model, hp.Choice("learning_rate", list(self.tuning.learning_rates)),
            hp.Choice("optimizer", list(self.tuning.optimizers)), config.label_smoothing,
            config.momentum, config.weight_decay)

    def fit(self, hp: keras_tuner.HyperParameters, model, x, *args, **kwargs):
        # The examples arrive unbatched: the batch size is a hyperparameter.
        return model.fit(x.batch(hp.Choice("batch_size", list(self.tuning.batch_sizes))), *args, **kwargs)


def tuner_fn(fn_args: FnArgs) -> TunerFnResult:
    config = TrainingConfig.from_dict(fn_args.custom_config["training"])
    tuning = TuningConfig.from_dict(fn_args.custom_config["tuning"])
    train, validation, counts = data.make_datasets(
        fn_args.train_files, tft.TFTransformOutput(fn_args.transform_graph_path),
        config.classes, 1, config.validation_fraction, config.seed, imbalance=config.imbalance)
    tuner = keras_tuner.RandomSearch(
        FerHyperModel(config, tuning), objective=keras_tuner.Objective("val_accuracy", "max"),
        max_trials=tuning.max_trials, seed=config.seed, directory=fn_args.working_dir,
        project_name=f"tune_{config.model}", overwrite=True)
    class_weight = recipe.class_weight_for(config, counts)
    return TunerFnResult(tuner=tuner, fit_kwargs={
        "x": train.unbatch(), "validation_data": validation, "epochs": tuning.epochs,
        "class_weight": class_weight, "verbose": 2})


def describe(hyperparameters_file: str) -> Dict[str, Any]:
    """The best values from a Tuner's best_hyperparameters.txt."""
    with open(hyperparameters_file) as f:
        return keras_tuner.HyperParameters.from_config(json.load(f)).values
