"""The fit loop: EarlyStopping and ReduceLROnPlateau on validation accuracy, TensorBoard logs."""
import os
from typing import Dict, List

import keras
import tensorflow as tf

from pipeline.config import TrainingConfig


def callbacks(config: TrainingConfig, log_dir: str) -> List[keras.callbacks.Callback]:
    return [
        keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max",
                                      patience=config.early_stopping_patience,
                                      restore_best_weights=True, verbose=1),
        keras.callbacks.ReduceLROnPlateau(monitor="val_accuracy", mode="max",
                                          factor=config.reduce_lr_factor,
                                          patience=config.reduce_lr_patience,
                                          min_lr=1e-6, verbose=1),
        keras.callbacks.TensorBoard(log_dir=os.path.join(log_dir, "tensorboard")),
    ]


def fit(model: keras.Model, train: tf.data.Dataset, validation: tf.data.Dataset,
        config: TrainingConfig, log_dir: str) -> Dict[str, List[float]]:
    """Trains `model` in place; returns the per-epoch history."""
    os.makedirs(log_dir, exist_ok=True)
    history = model.fit(train, validation_data=validation, epochs=config.epochs,
                        callbacks=callbacks(config, log_dir), verbose=2)
    return {k: [float(v) for v in values] for k, values in history.history.items()}
