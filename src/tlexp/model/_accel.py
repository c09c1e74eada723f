"""Use the hardware: mixed precision, XLA and multi-GPU settings, resolved per run.

``auto`` settings look at the GPUs the Keras backend sees: bfloat16 on Ampere/Hopper (compute
capability >= 8.0, where it needs no loss scaling), float16 on Volta/Turing (7.x),
float32 on CPUs here; a run then measures whether bfloat16 pays on its CPU, part by part
(:mod:`tlexp.model._precision`, called by the run's build); XLA is left to Keras ("auto": on for
GPUs, off on CPU); data parallel training when more than one GPU is visible. What was resolved
is recorded in metrics.json.

On JAX: GPUs and their compute capability come from ``jax.devices()``; data parallel
training is Keras' own ``keras.distribution.DataParallel`` over those devices (what
MirroredStrategy is on TensorFlow: variables replicated, each batch split over the
devices); op determinism is XLA's flag, which must be set before JAX starts (a clear
error says how).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

log = logging.getLogger("tlexp")


@dataclass
class Accel:
    """Resolved settings of one run."""

    gpus: list[str]
    # A Keras dtype policy name: the one the model is built under. Where ``auto`` on a CPU gave
    # the parts different answers, the frozen prefix's (tlexp.model.choose_precision).
    precision: str
    jit_compile: bool | str  # True/False, or "auto" until the model is compiled
    distribute: str  # "none" or "mirrored" (data parallel over all devices)
    deterministic: bool = False  # TensorFlow's op determinism, on for this run
    replicas: int = 1  # devices each batch is split over (distribute: mirrored)
    # train.precision auto on a CPU: the choice per part, its figures and reason (PrecisionDecision.to_dict)
    precision_decision: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_accel(
    precision: str, distribute: str, jit_compile: bool | str, deterministic: bool, batch_size: int
) -> Accel:
    """Resolve the ``auto`` settings (``train.precision``, ``train.distribute``, ...) for the GPUs the backend sees.

    ``batch_size`` must split evenly over the devices of JAX's data parallel training.
    """
    from tlexp.model._backend import backend_name

    jax = backend_name() == "jax"
    names, capabilities = _jax_gpus() if jax else _tf_gpus()
    if precision == "auto":
        if capabilities and min(capabilities) >= (8, 0):
            precision = "mixed_bfloat16"
        elif capabilities and min(capabilities) >= (7, 0):
            precision = "mixed_float16"
        else:
            precision = "float32"
    if distribute == "auto":
        distribute = "mirrored" if len(names) > 1 else "none"
    replicas = 1
    if distribute == "mirrored" and jax:
        replicas = len(_jax_devices())
        if batch_size % replicas:
            from tlexp.errors import UserError

            raise UserError(
                f"train.batch_size={batch_size} does not split evenly over the {replicas} devices of "
                f"data parallel training on JAX; use a multiple of {replicas} "
                f"(e.g. train.batch_size={batch_size + replicas - batch_size % replicas}), "
                "or train.distribute=none for one device."
            )
    return Accel(
        gpus=names,
        precision=precision,
        jit_compile=jit_compile,
        distribute=distribute,
        deterministic=deterministic,
        replicas=replicas,
    )


@contextlib.contextmanager
def data_parallel(accel: Accel) -> Iterator[None]:
    """Hold this around a whole run, from the first variable made to the last prediction.

    On JAX with ``distribute: mirrored``: ``keras.distribution.DataParallel`` over all
    devices of JAX's default backend. It must be active while variables are created (they
    are replicated) and while Keras trains and predicts (each batch is sharded over the
    devices), so it spans the run, not only the model's build. Each batch must then split
    evenly: :func:`batch_multiple` says by how much, and the input pipeline pads the last
    batch (:meth:`tlexp.pipeline.Batches.for_fit`, :func:`tlexp.model.inference_fn`).
    On TensorFlow nothing: its MirroredStrategy lives in :func:`accel_scope`.
    """
    from tlexp.model._backend import backend_name

    if accel.distribute != "mirrored" or backend_name() != "jax":
        yield
        return
    import keras

    with keras.distribution.DataParallel(devices=_jax_devices()).scope():
        yield


def batch_multiple() -> int:
    """How many rows every batch must be a multiple of: the devices of the JAX data parallel
    distribution in effect (:func:`data_parallel`), else 1."""
    from tlexp.model._backend import backend_name

    if backend_name() != "jax":
        return 1
    import keras

    dist = keras.distribution.distribution()
    return int(dist.device_mesh.devices.size) if dist is not None else 1


def _jax_devices() -> list[Any]:
    """The devices of JAX's default backend (GPUs where there are, else the CPU's; several
    CPU devices only with ``XLA_FLAGS=--xla_force_host_platform_device_count=N``)."""
    import jax

    return jax.devices()


@contextlib.contextmanager
def accel_scope(accel: Accel) -> Iterator[None]:
    """Build and compile the model inside this: dtype policy and distribution strategy.

    The global dtype policy is restored afterwards, so one run's setting never leaks
    into the next (sweep cells share a process).
    """
    import keras

    from tlexp.model._backend import backend_name

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(accel.precision)
    strategy = None
    if accel.distribute == "mirrored" and backend_name() == "tensorflow":  # JAX's is devices()
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy()
        accel.replicas = strategy.num_replicas_in_sync
    try:
        with strategy.scope() if strategy else contextlib.nullcontext():
            yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _tf_gpus() -> tuple[list[str], list[tuple[int, int]]]:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    details = [_details(g) for g in gpus]
    names = [d.get("device_name", g.name) for d, g in zip(details, gpus, strict=True)]
    return names, [tuple(d.get("compute_capability", (0, 0))) for d in details]


def _jax_gpus() -> tuple[list[str], list[tuple[int, int]]]:
    from tlexp.model._backend import jax_gpus

    gpus = jax_gpus()

    def capability(d) -> tuple[int, int]:
        try:  # "9.0" on CUDA devices
            major, minor = str(d.compute_capability).split(".")[:2]
            return int(major), int(minor)
        except (AttributeError, ValueError):
            return (0, 0)

    return [d.device_kind for d in gpus], [capability(d) for d in gpus]


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

    On JAX: XLA on a CPU is deterministic already; on a GPU it needs
    ``XLA_FLAGS=--xla_gpu_deterministic_ops=true`` set before JAX starts, so a run that
    asks for determinism without it stops with a message saying so.
    """
    from tlexp.model._backend import backend_name

    if backend_name() == "jax":
        from tlexp.model._backend import jax_gpus

        if enabled and jax_gpus() and "--xla_gpu_deterministic_ops=true" not in os.environ.get("XLA_FLAGS", ""):
            from tlexp.errors import UserError

            raise UserError(
                "train.deterministic on a GPU under JAX needs XLA_FLAGS=--xla_gpu_deterministic_ops=true "
                "in the environment before tlexp starts; set it, or use the TensorFlow backend."
            )
        return
    from tensorflow.python.framework import config as tf_config

    if enabled:
        tf_config.enable_op_determinism()
    else:
        tf_config.disable_op_determinism()


def padding_rows(n: int, multiple: int) -> np.ndarray:
    """Row indices of a batch of ``n`` rows padded to the next multiple of ``multiple``:
    its own rows, then copies of its first ones (the padding data parallel batches need)."""
    return np.arange(-(-n // multiple) * multiple) % max(n, 1)
