"""Feeds: what training, evaluation and feature export read, and the model that reads it.

A run trains in one of two ways, and this module is the only place that knows which:

* :class:`ImageFeed`: images, decoded and preprocessed, through the whole model;
* :class:`ActivationFeed`: the frozen prefix's cached activations through the rest of
  the model (the same layer objects, so training it trains the whole model).

Both give the same ``(x, label, file index)`` batches in the same order (same seed,
same shuffle), so a run's steps do not depend on the path taken; :func:`open_feed`
picks the path and records why. The feeds sit above ``data/`` and ``model/``: they
know images and activations both.

Images are decoded by :func:`tlexp.data.decode.load_image` (Pillow) inside the pipeline, so
training and any later check decode a file identically. A file that cannot be decoded
does not stop training: it is dropped from the stream and recorded in ``Decoder.failed``.
Every element carries its index into the dataset's file list, so predictions can always
be matched with their file and label, whatever was dropped.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np

from tlexp.data.decode import Decoder  # noqa: F401 - re-exported for callers of the feeds


def make_dataset(
    decoder: Decoder,
    indices: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int,
    preprocess: Callable,
    shuffle: bool,
    seed: int,
    label_dtype: str,
):
    """A batched ``tf.data.Dataset`` of ``(images, labels, indices)``.

    Args:
        decoder: decodes file ``i`` to uint8 (size, size, 3).
        indices: indices into ``decoder.paths`` to stream, shape (n,).
        labels: label of every file in ``decoder.paths``, shape (n_files,).
        batch_size: images per batch.
        preprocess: the backbone's ``preprocess_input`` (0-255 RGB float in).
        shuffle: reshuffle every epoch (seeded, so runs repeat exactly).
        seed: shuffle seed.
        label_dtype: ``"float32"`` (sigmoid output) or ``"int32"`` (softmax output).

    Yields batches: images float32 (b, size, size, 3), labels (b,), indices int64 (b,).
    """
    import tensorflow as tf

    size = decoder.size
    idx = np.asarray(indices, dtype=np.int64)
    lab = np.asarray(labels)[idx].astype(label_dtype)
    ds = tf.data.Dataset.from_tensor_slices((idx, lab))
    if shuffle:
        ds = ds.shuffle(len(idx), seed=seed, reshuffle_each_iteration=True)

    def decode(i, y):
        img, ok = tf.numpy_function(decoder, [i], [tf.uint8, tf.bool], stateful=False)
        img.set_shape((size, size, 3))
        ok.set_shape(())
        return img, y, i, ok

    # deterministic=True keeps the element order fixed, so a seed fully fixes a run.
    workers = os.cpu_count() or 1
    ds = ds.map(decode, num_parallel_calls=workers, deterministic=True)
    ds = ds.filter(lambda img, y, i, ok: ok)
    ds = ds.map(lambda img, y, i, ok: (preprocess(tf.cast(img, tf.float32)), y, i), num_parallel_calls=workers)
    return _without_autotune(ds.batch(batch_size).prefetch(2))


def _without_autotune(ds):
    """``ds`` with tf.data's autotuning off.

    The autotuner's background thread makes the teardown of a finished iterator wait
    for it: measured on a 2-core CPU with TensorFlow 2.21, 8-20 s stalls at the start
    and end of every epoch after the first (a 29 s training phase took 55 s). tlexp's
    pipelines are simple enough to size by hand: one parallel call per core, two
    batches prefetched.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def without_index(ds):
    """``(x, y, i)`` batches -> ``(x, y)`` for ``model.fit``."""
    return ds.map(lambda x, y, i: (x, y))


def activation_dataset(
    arrays: Sequence[np.ndarray],
    ok: np.ndarray,
    indices: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    label_dtype: str,
    dtypes: Sequence[str],
):
    """Like :func:`make_dataset`, but from cached prefix activations instead of images.

    The (index, label) pairs are shuffled and filtered exactly as ``make_dataset`` does
    (same seed, same op order), so both give the same batches in the same order: the
    cached path trains on the same steps as the ordinary one.

    The rows of ``indices`` are copied into TensorFlow tensors once (the entry fits
    ``train.prefix_cache.max_gb``) and gathered by TensorFlow ops: no Python call per batch.

    Args:
        arrays: one array per frontier tensor, shape (n_files, *shape) (memory-mapped).
        ok: (n_files,) bool, False for files that could not be decoded.
        dtypes: dtype each array is fed to the model in (its compute dtype).

    Yields batches: activations (one tensor, or a tuple of them), labels (b,), indices (b,).
    """
    import tensorflow as tf

    from tlexp.model.prefixcache import numpy_dtype

    idx = np.asarray(indices, dtype=np.int64)
    lab = np.asarray(labels)[idx].astype(label_dtype)
    # Only this split's rows, in memory, addressed by their position in `idx`.
    rows = [tf.convert_to_tensor(np.asarray(a[idx], dtype=numpy_dtype(d))) for a, d in zip(arrays, dtypes)]
    usable = tf.constant(np.asarray(ok, dtype=bool)[idx])
    ds = tf.data.Dataset.from_tensor_slices((np.arange(len(idx)), lab))
    if shuffle:  # a permutation that depends on the length and seed only: make_dataset's
        ds = ds.shuffle(len(idx), seed=seed, reshuffle_each_iteration=True)
    ds = ds.filter(lambda pos, y: tf.gather(usable, pos)).batch(batch_size)

    def load(pos, y):
        xs = [tf.gather(r, pos) for r in rows]
        return (xs[0] if len(xs) == 1 else tuple(xs)), y, tf.gather(idx, pos)

    return _without_autotune(ds.map(load).prefetch(2))
