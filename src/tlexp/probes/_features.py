"""One forward pass of the frozen backbone: the pooled activations at every stage boundary."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class DepthFeatures:
    """The pooled activations of every image that could be read, at every depth.

    Attributes:
        features: one float32 array per stage, shape (n_rows, channels at that depth),
            rows in stream order.
        labels: shape (n_rows,).
        indices: each row's index into the dataset's files, shape (n_rows,).
    """

    features: list[np.ndarray]
    labels: np.ndarray
    indices: np.ndarray


def pooled_model(backbone, stages):
    """A model from the backbone's input to one (batch, channels) float32 tensor per stage:
    the global average over space of the one tensor that leaves the stage.

    It shares the backbone's layers (no copy of the weights); the pooling runs in float32
    whatever the backbone computes in.
    """
    import keras

    from tlexp.model import frontier

    outputs = []
    for stage in stages:
        (tensor,) = frontier(backbone, stage.stop)  # one tensor at a stage boundary, by construction
        if len(tensor.shape) == 4:
            pooled = keras.layers.GlobalAveragePooling2D(dtype="float32", name=f"probe_pool_{stage.index}")(tensor)
        else:  # already (batch, features)
            pooled = keras.layers.Activation("linear", dtype="float32", name=f"probe_pool_{stage.index}")(tensor)
        outputs.append(pooled)
    return keras.Model(backbone.inputs, outputs, name=f"{backbone.name}_probe")


def depth_features(model, batches, progress: str | None = None) -> DepthFeatures:
    """Run ``model`` (:func:`pooled_model`) once over ``batches`` of ``(x, label, file index)``."""
    from tlexp.model import inference_fn

    step = inference_fn(model)
    n_out = len(model.outputs)
    chunks: list[list[np.ndarray]] = [[] for _ in range(n_out)]
    labels, indices = [], []
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc=progress, unit="batch", leave=False)
    for x, y, i in batches:
        for chunk, out in zip(chunks, step(x), strict=True):
            chunk.append(np.asarray(out, dtype=np.float32))
        labels.append(np.asarray(y))
        indices.append(np.asarray(i))
    if not labels:
        widths = [int(t.shape[-1]) for t in model.outputs]
        return DepthFeatures(
            [np.zeros((0, w), np.float32) for w in widths], np.zeros(0, np.int64), np.zeros(0, np.int64)
        )
    return DepthFeatures(
        [np.concatenate(c) for c in chunks],
        np.concatenate(labels).astype(np.int64),
        np.concatenate(indices).astype(np.int64),
    )
