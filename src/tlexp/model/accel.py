"""Use the hardware: mixed precision, XLA and multi-GPU settings, resolved per run.

``auto`` settings look at the GPUs TensorFlow sees: bfloat16 on Ampere/Hopper (compute
capability >= 8.0, where it needs no loss scaling), float16 on Volta/Turing (7.x),
float32 on CPUs (where mixed precision is slower); XLA is left to Keras ("auto": on for
GPUs, off on CPU); MirroredStrategy when more than one GPU is visible. What was resolved
is recorded in metrics.json.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from tlexp.config import TrainConfig

log = logging.getLogger("tlexp")


@dataclass
class Accel:
    """Resolved settings of one run."""

    gpus: list[str]
    precision: str  # a Keras dtype policy name
    jit_compile: bool | str  # True/False, or "auto" until the model is compiled
    distribute: str  # "none" or "mirrored"
    deterministic: bool = False  # TensorFlow's op determinism, on for this run

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve(train: TrainConfig) -> Accel:
    """Resolve the ``auto`` settings of ``train`` for the GPUs TensorFlow sees."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    details = [_details(g) for g in gpus]
    names = [d.get("device_name", g.name) for d, g in zip(details, gpus, strict=True)]
    precision = train.precision
    if precision == "auto":
        capabilities = [d.get("compute_capability", (0, 0)) for d in details]
        if capabilities and min(capabilities) >= (8, 0):
            precision = "mixed_bfloat16"
        elif capabilities and min(capabilities) >= (7, 0):
            precision = "mixed_float16"
        else:
            precision = "float32"
    distribute = train.distribute
    if distribute == "auto":
        distribute = "mirrored" if len(gpus) > 1 else "none"
    return Accel(
        gpus=names,
        precision=precision,
        jit_compile=train.jit_compile,
        distribute=distribute,
        deterministic=train.deterministic,
    )


@contextlib.contextmanager
def scope(accel: Accel) -> Iterator[None]:
    """Build and compile the model inside this: dtype policy and distribution strategy.

    The global dtype policy is restored afterwards, so one run's setting never leaks
    into the next (sweep cells share a process).
    """
    import keras
    import tensorflow as tf

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(accel.precision)
    strategy = tf.distribute.MirroredStrategy() if accel.distribute == "mirrored" else None
    try:
        with strategy.scope() if strategy else contextlib.nullcontext():
            yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _details(gpu) -> dict[str, Any]:
    import tensorflow as tf

    try:
        return tf.config.experimental.get_device_details(gpu)
    except Exception:
        return {}


def set_determinism(enabled: bool) -> None:
    """Turn TensorFlow's op determinism on or off for the run about to start.

    Process-wide, so it is set (both ways) at the start of every run: a sweep cell that
    asked for it must not leave it on for the next cell, which did not.
    """
    from tensorflow.python.framework import config as tf_config

    if enabled:
        tf_config.enable_op_determinism()
    else:
        tf_config.disable_op_determinism()
