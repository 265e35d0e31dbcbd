"""Device placement for the TFX Trainer (TensorFlow): MirroredStrategy over the GPUs it sees."""
from typing import Optional, Sequence

import tensorflow as tf


def distribution_strategy(devices: Optional[Sequence[str]] = None) -> tf.distribute.Strategy:
    """MirroredStrategy over `devices` (default: every visible GPU) when there are several,
    else the default strategy (one GPU or the CPU). Batches are per replica."""
    if devices is None:
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
    if len(devices) > 1:
        return tf.distribute.MirroredStrategy(list(devices))
    return tf.distribute.get_strategy()
