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
# model -> its penultimate tensor. The head's layers are shared by the whole model and
# the suffix model of the cached path, so `layer.output` (the first graph's) is ambiguous.
_FEATURES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


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
    features = x = keras.layers.Identity(name=PENULTIMATE)(x)
    if n_classes == 2:
        outputs = keras.layers.Dense(1, activation="sigmoid", name="output", dtype="float32")(x)
    else:
        outputs = keras.layers.Dense(n_classes, activation="softmax", name="output", dtype="float32")(x)
    model = keras.Model(inputs, outputs, name=f"{cfg.model.backbone}_transfer")
    _FEATURES[model] = features
    return model


def suffix_model(model, backbone, cut: int, cfg: Config):
    """The part of ``model`` after ``backbone.layers[:cut]``, fed with the activations there.

    The same layer objects as ``model`` (its backbone layers from ``cut`` on, then its
    head), called the same way (``InferenceMode`` unless BatchNorm trains), so training
    this model trains ``model``. Build it in the run's ``accel.scope``: its wrapper layer
    must have the run's dtype policy.
    """
    import keras

    from tlexp.segments import segment

    if cut == len(backbone.layers):  # everything frozen: the cached values are the backbone's output
        inputs = keras.Input(batch_shape=backbone.output.shape, dtype=backbone.output.dtype, name="cut")
        x = inputs
    else:
        inner = segment(backbone, cut, len(backbone.layers), name=f"{backbone.name}_from_{cut}")
        inputs = inner.inputs[0] if len(inner.inputs) == 1 else inner.inputs
        inputs = keras.tree.map_structure(
            lambda t: keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t.name.replace(":", "_")), inputs)
        if cfg.model.batchnorm == "train":
            x = inner(inputs)
        else:
            from tlexp.layers import InferenceMode

            x = InferenceMode(inner, name=f"{backbone.name}_inference")(inputs)
    features = None
    for layer in model.layers[2:]:  # the head: a chain after the input and the backbone (build_model)
        x = layer(x)
        if layer.name == PENULTIMATE:
            features = x
    suffix = keras.Model(inputs, x, name=f"{model.name}_from_{cut}")
    _FEATURES[suffix] = features
    return suffix


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
    """``model.fit``; returns the per-epoch history (loss, accuracy, val_loss, val_accuracy,
    and ``seconds``: each epoch's wall time, validation included).

    With ``tensorboard_dir``, Keras' TensorBoard callback writes its logs there.
    """
    import warnings

    import keras

    if not model.optimizer.built:
        # Create the optimizer's slots before fit(). Inside fit() they are created in the
        # first trace, and tf.function then traces the whole train step a second time:
        # 15 s of a DenseNet121 cell on a 2-core CPU.
        with model.distribute_strategy.scope():
            model.optimizer.build(model.trainable_variables)
    logger = _epoch_logger(epochs)
    callbacks = [logger]
    if tensorboard_dir is not None:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(tensorboard_dir)))

    with warnings.catch_warnings():
        # Undecodable files are filtered out of the stream, so its length is unknown and
        # Keras warns at the end of every epoch that the input "ran out of data". Expected.
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        history = model.fit(train_ds, validation_data=val_ds, epochs=epochs, verbose=verbose, shuffle=False,
                            callbacks=callbacks)
    out = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    if out.get("loss"):  # none when no training batch could be decoded (the caller raises)
        out["seconds"] = logger.seconds
    return out


def predict_with_features(model, ds, n_classes: int, progress: str | None = None) -> dict[str, np.ndarray]:
    """One pass over ``ds`` giving the head's probabilities and the penultimate features.

    ``progress``: label of a progress bar (batches) on stderr; None for no bar.

    Returns:
        ``proba`` (n, k) class probabilities, ``features`` (n, d) penultimate activations,
        ``labels`` (n,), ``indices`` (n,): the file index of each row, in stream order.
    """
    import keras

    from tlexp.segments import inference_fn

    step = _STEPS.get(model)
    if step is None:
        features = _FEATURES.get(model)
        if features is None:  # a loaded model.keras: its layers belong to this one graph
            features = model.get_layer(PENULTIMATE).output
        # One trace per model (any batch size), reused for every split.
        step = _STEPS[model] = inference_fn(keras.Model(model.inputs, [features, model.output]))
    feats, probs, labels, indices = [], [], [], []
    if progress:
        from tqdm.auto import tqdm

        ds = tqdm(ds, desc=progress, unit="batch", leave=False)
    for x, y, i in ds:
        f, p = step(list(x) if isinstance(x, tuple) else x)  # tf.data gives tuples, the signature a list
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
            parts = " ".join(f"{k}={v:.4f}" for k, v in (logs or {}).items() if k != "learning_rate")
            log.info("train: epoch %d/%d %s (%.1fs)", epoch + 1, epochs, parts, self.seconds[-1])

    return EpochLogger()
