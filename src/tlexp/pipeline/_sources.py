"""What a row of the dataset is: a decoded image, or the frozen prefix's cached activations.

A source knows how to read its rows, as a numpy batch (:meth:`Source.read`, what Keras'
``PyDataset`` loader calls) and as a ``tf.data`` map over shuffled ``(index, label)``
elements (:meth:`Source.tf_batches`); the loaders (:mod:`tlexp.pipeline._loaders`)
know how rows become an epoch's batches. Both sources give the same batches in the same
order: the ``(index, label)`` pairs are shuffled and filtered the same way (same seed,
same op order), so a run trained on cached activations takes the same steps as one
trained on images.

Images are decoded by :func:`tlexp.data.load_image` (Pillow) inside the pipeline, so
training and any later check decode a file identically. A file that cannot be decoded
does not stop training: it is dropped from the stream and recorded in ``failed``.
Every batch carries each row's index into the dataset's file list, so predictions can
always be matched with their file and label, whatever was dropped.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tlexp.pipeline._plan import BatchPlan


class Source:
    """Rows of a dataset, by file index.

    Attributes:
        labels: the label of every file of the dataset, shape (n_files,).
        failed: file index -> why it could not be read (filled as rows are read; complete
            once every split was read).
    """

    labels: np.ndarray
    failed: dict[int, str]

    def known_bad(self) -> np.ndarray:
        """bool (n_files,): rows known to be unusable before any is read."""
        raise NotImplementedError

    def read(self, rows: np.ndarray) -> tuple[Any, np.ndarray]:
        """``(x, kept)``: the batch of ``rows`` (those that could be read) and a bool mask of them."""
        raise NotImplementedError

    def tf_batches(self, elements, plan: BatchPlan):
        """``(x, y, index)`` batches from a ``tf.data.Dataset`` of shuffled ``(index, label)`` pairs."""
        raise NotImplementedError


class ImageSource(Source):
    """Images decoded by ``decoder`` (or read from the decoded-image cache) and preprocessed.

    Args:
        decoder: :class:`tlexp.data.Decoder` or :class:`tlexp.data.CachedDecoder`.
        preprocess: the backbone's ``preprocess_input`` (0-255 RGB float in).
        labels: shape (n_files,).
    """

    def __init__(self, decoder, preprocess: Callable, labels: np.ndarray):
        self.decoder, self.preprocess, self.labels = decoder, preprocess, np.asarray(labels)
        self.failed = decoder.failed  # the decoder fills it as files fail

    def known_bad(self) -> np.ndarray:
        bad = np.zeros(len(self.labels), dtype=bool)
        bad[list(self.decoder.failed)] = True  # the decoded-image cache knows them all up front
        return bad

    def read(self, rows: np.ndarray) -> tuple[Any, np.ndarray]:
        # Each image converted straight into the float32 batch: one pass over the pixels
        # (np.stack, then astype, took 3x as long).
        size = self.decoder.size
        x = np.empty((len(rows), size, size, 3), np.float32)
        keep = np.zeros(len(rows), dtype=bool)
        for j, i in enumerate(rows):
            img, ok = self.decoder(i)
            if ok:
                x[j] = img
                keep[j] = True
        return np.asarray(self.preprocess(x if keep.all() else x[keep])), keep

    def tf_batches(self, elements, plan: BatchPlan):
        import tensorflow as tf

        decoder, size = self.decoder, self.decoder.size

        def decode(i, y):
            img, ok = tf.numpy_function(decoder, [i], [tf.uint8, tf.bool], stateful=False)
            img.set_shape((size, size, 3))
            ok.set_shape(())
            return img, y, i, ok

        # deterministic=True keeps the element order fixed, so a seed fully fixes a run.
        workers = os.cpu_count() or 1
        ds = elements.map(decode, num_parallel_calls=workers, deterministic=True)
        ds = ds.filter(lambda img, y, i, ok: ok)
        preprocess = self.preprocess
        ds = ds.map(lambda img, y, i, ok: (preprocess(tf.cast(img, tf.float32)), y, i), num_parallel_calls=workers)
        return ds.batch(plan.batch_size)


class ActivationSource(Source):
    """The frozen prefix's cached activations (:class:`tlexp.pipeline.PrefixActivations`).

    Each batch's rows are read from disk when the pipeline gets to it (``pread``: no GIL
    held while waiting for the disk), a few batches ahead and in parallel, in order:
    memory holds the batches in flight, whatever the size of the split.

    Args:
        activations: the cache entry.
        labels: shape (n_files,).
        dtypes: the dtype each frontier tensor is fed to the model in (its compute dtype).
    """

    def __init__(self, activations, labels: np.ndarray, dtypes: Sequence[str]):
        from tlexp.pipeline._rowfile import numpy_dtype

        self.activations, self.labels, self.dtypes = activations, np.asarray(labels), list(dtypes)
        self.np_dtypes = [numpy_dtype(d) for d in self.dtypes]
        self.failed = activations.failed

    def known_bad(self) -> np.ndarray:
        return ~np.asarray(self.activations.ok, dtype=bool)

    def read(self, rows: np.ndarray) -> tuple[Any, np.ndarray]:
        xs = self._rows(rows)
        return (xs[0] if len(xs) == 1 else tuple(xs)), np.ones(len(rows), dtype=bool)

    def _rows(self, rows: np.ndarray) -> list[np.ndarray]:
        return [a.astype(d, copy=False) for a, d in zip(self.activations.read(rows), self.np_dtypes, strict=True)]

    def tf_batches(self, elements, plan: BatchPlan):
        import tensorflow as tf

        usable = tf.constant(~self.known_bad())
        ds = elements.filter(lambda i, y: tf.gather(usable, i)).batch(plan.batch_size)
        shapes = [(None, *(int(n) for n in f.shape[1:])) for f in self.activations.files]
        dtypes = [tf.as_dtype(d) for d in self.dtypes]

        def load(i, y):
            xs = tf.numpy_function(self._rows, [i], dtypes, stateful=False)
            for x, shape in zip(xs, shapes, strict=True):
                x.set_shape(shape)
            return (xs[0] if len(xs) == 1 else tuple(xs)), y, i

        # Reads overlap each other and the training step; deterministic keeps the batch order.
        workers = min(4, max(2, os.cpu_count() or 1))
        return ds.map(load, num_parallel_calls=workers, deterministic=True)
