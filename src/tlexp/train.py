"""The dense head on top of a backbone: build, compile, fit, predict.

Follows Keras' transfer-learning guide: freezing is ``layer.trainable``; the backbone is
called with ``training=False`` unless BatchNorm is asked to train; the model is compiled
(with a fresh optimizer) after ``trainable`` was set.
"""

from __future__ import annotations

import logging
import time
import weakref
from pathlib import Path

import numpy as np

from tlexp.config import Config

log = logging.getLogger("tlexp")

PENULTIMATE = "penultimate"  # name of the layer whose output feeds the output layer
_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> traced prediction step


def build_model(backbone, cfg: Config, n_classes: int):
    """Backbone -> pooling -> Dense layers (+ dropout) -> output layer.

    The output is one sigmoid unit for two classes, else ``n_classes`` softmax units.
    The input of the output layer (the "penultimate activations") is exposed as the
    output of an identity layer named ``penultimate`` so the forest can read it.
    """
    import keras

    size = cfg.data.image_size
    head = cfg.model.head
    inputs = keras.Input((size, size, 3), name="image")
    if cfg.model.batchnorm == "train":
        # fit() passes training=True: BN in the trainable part uses batch statistics and
        # updates its moving averages; frozen BN layers (trainable=False) stay in inference.
        x = backbone(inputs)
    else:
        # 'inference' and 'frozen': every BN layer keeps its moving statistics.
        from tlexp.layers import InferenceMode

        x = InferenceMode(backbone, name=f"{backbone.name}_inference")(inputs)
    x = {
        "flatten": keras.layers.Flatten(name="flatten"),
        "avg": keras.layers.GlobalAveragePooling2D(name="avg_pool"),
        "max": keras.layers.GlobalMaxPooling2D(name="max_pool"),
    }[head.pooling](x)
    for i, units in enumerate(head.dense, start=1):
        x = keras.layers.Dense(units, activation=head.activation, name=f"dense_{i}")(x)
        if head.dropout > 0:
            x = keras.layers.Dropout(head.dropout, seed=cfg.seed + i, name=f"dropout_{i}")(x)
    x = keras.layers.Identity(name=PENULTIMATE)(x)
    if n_classes == 2:
        outputs = keras.layers.Dense(1, activation="sigmoid", name="output", dtype="float32")(x)
    else:
        outputs = keras.layers.Dense(n_classes, activation="softmax", name="output", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=f"{cfg.model.backbone}_transfer")


def compile_model(model, cfg: Config, n_classes: int) -> None:
    """Compile with a new optimizer (required after any change to ``trainable``)."""
    import keras

    optimizers = {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
    }
    loss = "binary_crossentropy" if n_classes == 2 else "sparse_categorical_crossentropy"
    # The output layer is float32 under any precision policy (set in build_model), so the
    # loss is computed in float32; Keras adds loss scaling itself for mixed_float16.
    model.compile(optimizer=optimizers[cfg.train.optimizer](learning_rate=cfg.train.learning_rate), loss=loss,
                  metrics=["accuracy"], jit_compile=cfg.train.jit_compile)


def fit(model, train_ds, val_ds, epochs: int, verbose: int, tensorboard_dir: Path | None = None) -> dict[str, list[float]]:
    """``model.fit``; returns the per-epoch history (loss, accuracy, val_loss, val_accuracy).

    With ``tensorboard_dir``, Keras' TensorBoard callback writes its logs there.
    """
    import warnings

    import keras

    callbacks = [_epoch_logger(epochs)]
    if tensorboard_dir is not None:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(tensorboard_dir)))

    with warnings.catch_warnings():
        # Undecodable files are filtered out of the stream, so its length is unknown and
        # Keras warns at the end of every epoch that the input "ran out of data". Expected.
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        history = model.fit(train_ds, validation_data=val_ds, epochs=epochs, verbose=verbose, shuffle=False,
                            callbacks=callbacks)
    return {k: [float(v) for v in vals] for k, vals in history.history.items()}


def predict_with_features(model, ds, n_classes: int, progress: str | None = None) -> dict[str, np.ndarray]:
    """One pass over ``ds`` giving the head's probabilities and the penultimate features.

    ``progress``: label of a progress bar (batches) on stderr; None for no bar.

    Returns:
        ``proba`` (n, k) class probabilities, ``features`` (n, d) penultimate activations,
        ``labels`` (n,), ``indices`` (n,): the file index of each row, in stream order.
    """
    import keras
    import tensorflow as tf

    step = _STEPS.get(model)
    if step is None:
        both = keras.Model(model.inputs, [model.get_layer(PENULTIMATE).output, model.output])
        # A traced function, not eager calls: eager execution of a 427-layer DenseNet
        # costs more per batch than the convolutions themselves on a GPU. One trace per
        # model (any batch size), reused for every split.
        spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
        step = _STEPS[model] = tf.function(lambda x: both(x, training=False), input_signature=[spec])
    feats, probs, labels, indices = [], [], [], []
    if progress:
        from tqdm.auto import tqdm

        ds = tqdm(ds, desc=progress, unit="batch", leave=False)
    for x, y, i in ds:
        f, p = step(x)
        feats.append(np.asarray(f, dtype=np.float32))
        probs.append(np.asarray(p, dtype=np.float64))
        labels.append(np.asarray(y))
        indices.append(np.asarray(i))
    if not feats:
        return {"proba": np.zeros((0, n_classes)), "features": np.zeros((0, 0), np.float32),
                "labels": np.zeros(0, np.int64), "indices": np.zeros(0, np.int64)}
    proba = np.concatenate(probs)
    if n_classes == 2:  # one sigmoid unit -> [P(class 0), P(class 1)]
        proba = np.concatenate([1.0 - proba, proba], axis=1)
    return {"proba": proba, "features": np.concatenate(feats), "labels": np.concatenate(labels).astype(np.int64),
            "indices": np.concatenate(indices).astype(np.int64)}


def param_counts(model) -> dict[str, int]:
    """Trainable / non-trainable / total parameters of the whole model."""
    from tlexp.backbones import count

    t, n = count(model.trainable_weights), count(model.non_trainable_weights)
    return {"trainable": t, "non_trainable": n, "total": t + n}


def _epoch_logger(epochs: int):
    """A callback logging one line per epoch through the tlexp logger (so it lands in run.log)."""
    import keras

    class EpochLogger(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            parts = " ".join(f"{k}={v:.4f}" for k, v in (logs or {}).items() if k != "learning_rate")
            log.info("train: epoch %d/%d %s (%.1fs)", epoch + 1, epochs, parts, time.perf_counter() - self.t0)

    return EpochLogger()
