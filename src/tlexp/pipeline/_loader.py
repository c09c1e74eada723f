"""Batches off TensorFlow: the input pipeline of the JAX backend, and what ``fit`` reads.

:mod:`tlexp.pipeline._feeds` builds one of these where TensorFlow's ``tf.data`` is not there; it
gives the same ``(x, labels, file indices)`` batches in a fixed, seeded order.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from tlexp.model import padding_rows


class Batches:
    """``(x, labels, indices)`` numpy batches: the input pipeline off TensorFlow (JAX).

    Why this and not Grain or a torch DataLoader: ``fit`` reads it as Keras' own
    ``PyDataset`` (:meth:`for_fit`), which is backend-neutral and maintained with Keras;
    the batches ahead are read in a thread pool (decoding with Pillow and ``pread``
    release the GIL, so threads overlap like tf.data's parallel map). Grain would add a
    dependency for what a batch list and a thread pool do here; a torch DataLoader
    would pull in PyTorch. Measured against tf.data on the same 256 JPEGs (224 px, a
    2-core CPU shared with other jobs; scripts/bench_pipeline.py --loader both):
    decoding on the fly 178-285 images/s vs tf.data's 186-225, from the warm
    decoded-image cache 2400-3300 vs 1150-1220.

    Order: one seeded permutation per epoch (``default_rng([seed, epoch])``) of the
    split's indices, without those known to be unusable (undecodable files, which the
    decoded-image cache lists up front, or rows missing from an activation cache), cut
    into batches. The image feed and the activation feed of a run thus give the same
    batches in the same order, epoch after epoch. A file that fails only while being
    decoded here (no decoded-image cache) is dropped from its batch.

    The last batch is smaller (``n % batch_size`` rows), as with tf.data. On one device
    it is not padded: JAX compiles once per input shape and Keras keeps its jitted train,
    test and predict steps for the whole ``fit``, so the smaller batch costs one more
    compile per step function, not one per epoch (tests/test_backend_jax.py counts the
    compiles). Split over several devices (JAX's data parallel training) a batch must
    divide evenly, so :meth:`for_fit` pads it with zero-weight rows (see there).
    """

    def __init__(self, load, indices, labels, known_bad, batch_size, shuffle, seed, label_dtype):
        self.load = load  # rows -> (x, kept mask)
        idx = np.asarray(indices, dtype=np.int64)
        self.indices = idx[~np.asarray(known_bad, dtype=bool)[idx]]
        self.labels = np.asarray(labels)
        self.batch_size, self.shuffle, self.seed, self.label_dtype = batch_size, shuffle, seed, label_dtype
        self.epoch = 0
        self._order = None

    def order(self) -> np.ndarray:
        if not self.shuffle:
            return self.indices
        if self._order is None or self._order[0] != self.epoch:
            perm = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.indices))
            self._order = (self.epoch, self.indices[perm])
        return self._order[1]

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)

    def batch(self, k: int):
        rows = self.order()[k * self.batch_size : (k + 1) * self.batch_size]
        x, keep = self.load(rows)
        rows = rows[keep]
        return x, self.labels[rows].astype(self.label_dtype), rows

    def __iter__(self):
        """The batches of the current epoch in order, read a few ahead in threads."""
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        workers = _workers()
        with ThreadPoolExecutor(workers) as pool:
            ahead = deque(pool.submit(self.batch, k) for k in range(min(len(self), 2 * workers)))
            k = len(ahead)
            while ahead:
                yield ahead.popleft().result()
                if k < len(self):
                    ahead.append(pool.submit(self.batch, k))
                    k += 1

    def for_fit(self):
        """``(x, y)`` batches as a ``keras.utils.PyDataset``, for ``model.fit``.

        Reshuffled per epoch by the callback of its ``epoch_callback()``, which ``fit``
        must get (:func:`tlexp.model._training.fit` adds it): it sets the epoch number
        before Keras reads the epoch's first batch. Keras itself reads the batches in
        order from one thread (``workers=1``); the batches ahead are read here, in a
        thread pool, keyed by (epoch, batch). Keras' own threaded enqueuer
        (``workers>1``) was tried and is not used: it starts reading ahead for the batch
        ``fit`` peeks at to build the model, and serves what it read then in later
        epochs (measured with Keras 3.15, 2 epochs of 13 batches: 26 batches trained,
        24 read for their own epoch), so the per-epoch order would not hold.

        Under JAX's data parallel training (:func:`tlexp.model._accel.devices`) every batch
        must split evenly over the devices: a batch that does not is padded to the next
        multiple with copies of its own first rows, and each batch comes with sample
        weights, 1 for its rows and 0 for the copies. The losses and metrics stay those
        of the real rows (:func:`tlexp.model._training.compile_model` makes the loss a
        mean over the weights and reports an exactly weighted loss); the copies only
        enter that batch's BatchNorm statistics where BatchNorm trains.
        """
        import keras

        from tlexp.model import batch_multiple

        batches, multiple = self, batch_multiple()

        class EpochSetter(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                batches.epoch = epoch

        class FitBatches(keras.utils.PyDataset):
            def __init__(self):
                super().__init__(workers=1, use_multiprocessing=False)
                self.pool = None
                self.ahead: dict[tuple[int, int], Any] = {}

            def __len__(self) -> int:
                return len(batches)

            def __getitem__(self, k: int):
                from concurrent.futures import ThreadPoolExecutor

                if self.pool is None:
                    self.pool = ThreadPoolExecutor(_workers())
                epoch, n = batches.epoch, len(batches)
                self.ahead = {key: f for key, f in self.ahead.items() if key[0] == epoch and key[1] >= k}
                for j in range(k, min(n, k + 2 * _workers())):
                    if (epoch, j) not in self.ahead:
                        self.ahead[(epoch, j)] = self.pool.submit(batches.batch, j)
                x, y, _ = self.ahead.pop((epoch, k)).result()
                return (x, y) if multiple == 1 else padded(x, y, multiple)

            def epoch_callback(self):
                return EpochSetter()

            def __del__(self):
                if self.pool is not None:
                    self.pool.shutdown(wait=False, cancel_futures=True)

        return FitBatches()


def padded(x, y, multiple: int):
    """``(x, y, sample weights)`` with the batch padded to a multiple of ``multiple`` rows:
    copies of its first rows, weight 0 (the real rows weigh 1)."""
    n = len(y)
    rows = padding_rows(n, multiple)
    w = (np.arange(len(rows)) < n).astype(np.float32)
    pad = (lambda a: a) if len(rows) == n else (lambda a: np.asarray(a)[rows])
    return (tuple(pad(a) for a in x) if isinstance(x, tuple | list) else pad(x)), pad(y), w


def _workers() -> int:
    return min(4, max(2, os.cpu_count() or 1))
