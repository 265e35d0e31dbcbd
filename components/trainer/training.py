"""The fit loop and device placement: EarlyStopping and ReduceLROnPlateau on validation accuracy, TensorBoard logs."""
import os
from typing import Dict, List, Optional, Sequence

import keras
import tensorflow as tf

from pipeline.config import TrainingConfig


def distribution_strategy(devices: Optional[Sequence[str]] = None) -> tf.distribute.Strategy:
    """MirroredStrategy over `devices` (default: every visible GPU) when there are several,
    else the default strategy (one GPU or the CPU). Batches are per replica."""
    if devices is None:
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
    if len(devices) > 1:
        return tf.distribute.MirroredStrategy(list(devices))
    return tf.distribute.get_strategy()


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
        config: TrainingConfig, log_dir: str,
        class_weight: Optional[Dict[int, float]] = None) -> Dict[str, List[float]]:
    """Trains `model` in place (loss weighted per class when `class_weight` is given);
    returns the per-epoch history."""
    os.makedirs(log_dir, exist_ok=True)
    history = model.fit(train, validation_data=validation, epochs=config.epochs,
                        callbacks=callbacks(config, log_dir), class_weight=class_weight,
                        verbose=2)
    return {k: [float(v) for v in values] for k, values in history.history.items()}
