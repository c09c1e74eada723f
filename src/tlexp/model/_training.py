"""The dense head on top of a backbone: build, compile, fit, predict.

Follows Keras' transfer-learning guide: freezing is ``layer.trainable``; the backbone is
called with ``training=False`` unless BatchNorm is asked to train; the model is compiled
(with a fresh optimizer) after ``trainable`` was set.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tlexp.model._accel import batch_multiple
from tlexp.model._head import Network

log = logging.getLogger("tlexp")

EXACT_LOSS = "weighted_loss"  # the loss over real rows where batches are padded (compile_model)


def compile_model(
    model,
    n_classes: int,
    *,
    optimizer: str = "adam",
    learning_rate: float = 1e-4,
    jit_compile: bool | str = "auto",
    lr_scales: dict[int, float] | None = None,
) -> None:
    """Compile with a new optimizer (required after any change to ``trainable``).

    ``optimizer``: ``adam``, ``adamw``, ``sgd`` or ``rmsprop``; ``jit_compile``: Keras' XLA
    setting (``"auto"``: on for GPUs); ``lr_scales``: ``id(variable) -> factor`` of its
    learning rate (layer-wise decay, :mod:`tlexp.model._rates`), 1 for the others.

    ``model`` outputs logits (a network's ``trainer``, :class:`tlexp.model._head.Network`):
    the loss is computed from them, and accuracy thresholds them at 0 (two classes) or
    takes their arg max, which is what thresholding the probabilities at 0.5 or taking
    theirs gives.
    """
    import keras

    optimizers = {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
    }
    two = n_classes == 2
    kind = keras.losses.BinaryCrossentropy if two else keras.losses.SparseCategoricalCrossentropy
    loss = kind(from_logits=True)
    metrics = [
        keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0)
        if two
        else keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    ]
    if batch_multiple() > 1:
        # JAX's data parallel training pads batches with zero-weight rows (tlexp.pipeline.padded).
        # The loss is then the mean over the weights, so the gradient is the real rows';
        # Keras' loss tracker would still average batch losses by padded batch size, so
        # the loss reported is this metric (a weighted mean over all rows; fit renames it).
        loss = kind(from_logits=True, reduction="mean_with_sample_weight")
        # The loss itself, per row (it matches the labels' rank to the output's, which
        # Keras' crossentropy metrics do not), averaged with the sample weights.
        metrics.append(keras.metrics.MeanMetricWrapper(kind(from_logits=True, reduction=None), name=EXACT_LOSS))
    # The logits layer is float32 under any precision policy (set in build_model), so the
    # loss is computed in float32; Keras adds loss scaling itself for mixed_float16.
    # In the model's own distribution strategy (TensorFlow's MirroredStrategy keeps one per
    # model, and an optimizer belongs to the strategy it was made in): a schedule recompiles
    # between its stages, outside the scope the model was built in.
    strategy = getattr(model, "distribute_strategy", None)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        if lr_scales and any(f != 1.0 for f in lr_scales.values()):
            from tlexp.model._rates import scaled

            opt = scaled(optimizers[optimizer], learning_rate, lr_scales)
        else:
            opt = optimizers[optimizer](learning_rate=learning_rate)
        model.compile(optimizer=opt, loss=loss, metrics=metrics, jit_compile=jit_compile)


def fit(
    model,
    train_ds,
    val_ds,
    epochs: int,
    verbose: int,
    callbacks: Sequence[Any] = (),
    tensorboard_dir: Path | None = None,
    initial_epoch: int = 0,
) -> dict[str, list[float]]:
    """``model.fit``; returns the per-epoch history (loss, accuracy, val_loss, val_accuracy,
    and ``seconds``: each epoch's wall time, validation included).

    Args:
        train_ds, val_ds: ``(x, y)`` batches (the input pipeline's ``FitInput.data``).
        callbacks: what the input pipeline needs called (its ``FitInput.callbacks``).
        tensorboard_dir: where Keras' TensorBoard callback writes its logs, if anywhere.
        initial_epoch: epochs already run by earlier stages of a schedule: this call runs
            epochs ``initial_epoch + 1`` to ``epochs`` (Keras' numbering, in logs and TensorBoard).
    """
    import warnings

    import keras

    if not model.optimizer.built:
        # Create the optimizer's slots before fit(). Inside fit() they are created in the
        # first trace, and tf.function then traces the whole train step a second time:
        # 15 s of a DenseNet121 cell on a 2-core CPU.
        import contextlib

        strategy = getattr(model, "distribute_strategy", None)  # TensorFlow's models only
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            model.optimizer.build(model.trainable_variables)
    logger = _epoch_logger(epochs)
    callbacks = [logger, *callbacks]
    if tensorboard_dir is not None:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(tensorboard_dir)))

    with warnings.catch_warnings():
        # Undecodable files are filtered out of the stream, so its length is unknown and
        # Keras warns at the end of every epoch that the input "ran out of data". Expected.
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        history = model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=epochs,
            initial_epoch=initial_epoch,
            verbose=verbose,
            shuffle=False,
            callbacks=callbacks,
        )
    out = _exact_loss({k: [float(v) for v in vals] for k, vals in history.history.items()})
    if out.get("loss"):  # none when no training batch could be decoded (the caller raises)
        out["seconds"] = logger.seconds
    return out


@dataclass(frozen=True)
class Predictions:
    """One pass of a network over a stream: what the head says and what the classifiers read.

    Attributes:
        proba: class probabilities, shape (n, k).
        logits: shape (n, 1) for two classes or (n, k); None for a saved model without a
            logits layer.
        features: the penultimate activations, shape (n, d).
        labels: shape (n,).
        indices: the file index of each row, shape (n,), in stream order.
    """

    proba: np.ndarray
    logits: np.ndarray | None
    features: np.ndarray
    labels: np.ndarray
    indices: np.ndarray


def predict_with_features(network: Network, ds, n_classes: int, progress: str | None = None) -> Predictions:
    """One pass over ``ds`` giving the head's logits, probabilities and the penultimate features.

    The probabilities are computed from the logits in float64 (a float32 sigmoid rounds
    every logit above 17 to exactly 1), so they and the log loss stay exact.

    Args:
        network: the model and its features twin (:class:`tlexp.model._head.Network`).
        ds: batches ``(x, y, index)``.
        n_classes: classes of the task (a two-class model has one sigmoid output).
        progress: label of a progress bar (batches) on stderr; None for no bar.

    Returns:
        The :class:`Predictions` of every row, in stream order.
    """
    step = network.predict_step
    feats, outs, labels, indices = [], [], [], []
    if progress:
        from tqdm.auto import tqdm

        ds = tqdm(ds, desc=progress, unit="batch", leave=False)
    for x, y, i in ds:
        f, z = step(list(x) if isinstance(x, tuple) else x)  # the feeds give tuples, the signature a list
        feats.append(np.asarray(f, dtype=np.float32))
        outs.append(np.asarray(z, dtype=np.float64))
        labels.append(np.asarray(y))
        indices.append(np.asarray(i))
    if not feats:
        return Predictions(
            proba=np.zeros((0, n_classes)),
            logits=np.zeros((0, 1 if n_classes == 2 else n_classes)) if network.logits else None,
            features=np.zeros((0, 0), np.float32),
            labels=np.zeros(0, np.int64),
            indices=np.zeros(0, np.int64),
        )
    from scipy.special import expit, softmax

    out = np.concatenate(outs)
    logits = out if network.logits else None
    if logits is None:  # a saved model without its logits layer: probabilities
        proba = np.concatenate([1.0 - out, out], axis=1) if n_classes == 2 else out
    elif n_classes == 2:  # one sigmoid unit -> [P(class 0), P(class 1)], each exact in float64
        proba = np.concatenate([expit(-out), expit(out)], axis=1)
    else:
        proba = softmax(out, axis=1)
    return Predictions(
        proba=proba,
        logits=logits,
        features=np.concatenate(feats),
        labels=np.concatenate(labels).astype(np.int64),
        indices=np.concatenate(indices).astype(np.int64),
    )


def param_counts(model) -> dict[str, int]:
    """Trainable / non-trainable / total parameters of the whole model."""
    from tlexp.model._freeze import count

    t, n = count(model.trainable_weights), count(model.non_trainable_weights)
    return {"trainable": t, "non_trainable": n, "total": t + n}


def _exact_loss(logs: dict) -> dict:
    """Keras' logs, with the exactly weighted loss as ``loss`` where batches were padded
    (:func:`compile_model`)."""
    out = dict(logs)
    for prefix in ("", "val_"):
        if prefix + EXACT_LOSS in out:
            out[prefix + "loss"] = out.pop(prefix + EXACT_LOSS)
    return out


def _epoch_logger(epochs: int):
    """A callback logging one line per epoch through the tlexp logger (so it lands in run.log)
    and keeping each epoch's wall time in ``.seconds``."""
    import keras

    class EpochLogger(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(round(time.perf_counter() - self.t0, 4))
            parts = " ".join(f"{k}={v:.4f}" for k, v in _exact_loss(logs or {}).items() if k != "learning_rate")
            log.info("train: epoch %d/%d %s (%.1fs)", epoch + 1, epochs, parts, self.seconds[-1])

    return EpochLogger()
