"""How rows become an epoch's batches: ``tf.data`` on TensorFlow, Keras' ``PyDataset`` elsewhere.

:func:`stream` is the one place that picks the loader; a source (:mod:`tlexp.pipeline._sources`)
says what a row is. Either loader gives ``(x, labels, file indices)`` batches in a fixed,
seeded order, and :meth:`for_fit` what ``model.fit`` reads.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from tlexp.model import padding_rows
from tlexp.pipeline._plan import BatchPlan, FitInput


def stream(source, indices: np.ndarray, plan: BatchPlan):
    """The batches of the files ``indices`` read from ``source``, cut as ``plan`` says.

    Returns:
        A :class:`TFBatches` on TensorFlow, else a :class:`Batches`; both iterate over
        ``(x, y, index)`` batches and have ``for_fit()``.
    """
    from tlexp.model import backend_name

    if backend_name() == "tensorflow":
        return TFBatches(source, indices, plan)
    return Batches(source, indices, plan)


class TFBatches:
    """A ``tf.data`` pipeline: the ``(index, label)`` pairs shuffled (seeded, every epoch),
    then the source's map, two batches prefetched."""

    def __init__(self, source, indices: np.ndarray, plan: BatchPlan):
        import tensorflow as tf

        idx = np.asarray(indices, dtype=np.int64)
        lab = np.asarray(source.labels)[idx].astype(plan.label_dtype)
        elements = tf.data.Dataset.from_tensor_slices((idx, lab))
        if plan.shuffle:  # a permutation that depends on the length and the seed only, whatever the source
            elements = elements.shuffle(len(idx), seed=plan.seed, reshuffle_each_iteration=True)
        self.dataset = _without_autotune(source.tf_batches(elements, plan).prefetch(2))

    def __iter__(self):
        return iter(self.dataset)

    def for_fit(self) -> FitInput:
        return FitInput(self.dataset.map(lambda x, y, i: (x, y)))


def _without_autotune(ds):
    """``ds`` with tf.data's autotuning off.

    The autotuner's background thread makes the teardown of a finished iterator wait for
    it, which stalled every epoch after the first for seconds (the benchmarks page has
    the figures). tlexp's pipelines are simple enough to size by hand: one parallel call
    per core, two batches prefetched.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


class Batches:
    """``(x, labels, indices)`` numpy batches: the input pipeline off TensorFlow (JAX).

    Why this and not Grain or a torch DataLoader: ``fit`` reads it as Keras' own
    ``PyDataset`` (:meth:`for_fit`), which is backend-neutral and maintained with Keras;
    the batches ahead are read in a thread pool (decoding with Pillow and ``pread``
    release the GIL, so threads overlap like tf.data's parallel map). Grain would add a
    dependency for what a batch list and a thread pool do here; a torch DataLoader would
    pull in PyTorch. ``scripts/bench_pipeline.py --loader both`` times it against tf.data.

    Order: one seeded permutation per epoch (``default_rng([seed, epoch])``) of the
    split's indices, without those the source knows to be unusable, cut into batches.
    The image source and the activation source of a run thus give the same batches in
    the same order, epoch after epoch. A file that fails only while being decoded here
    (no decoded-image cache) is dropped from its batch.

    The last batch is smaller (``n % batch_size`` rows), as with tf.data. On one device
    it is not padded: JAX compiles once per input shape and Keras keeps its jitted train,
    test and predict steps for the whole ``fit``, so the smaller batch costs one more
    compile per step function, not one per epoch. Split over several devices (JAX's data
    parallel training) a batch must divide evenly, so :meth:`for_fit` pads it with
    zero-weight rows (see there).
    """

    def __init__(self, source, indices: np.ndarray, plan: BatchPlan):
        self.source, self.plan = source, plan
        idx = np.asarray(indices, dtype=np.int64)
        self.indices = idx[~np.asarray(source.known_bad(), dtype=bool)[idx]]
        self.labels = np.asarray(source.labels)
        self.epoch = 0
        self._order: tuple[int, np.ndarray] | None = None

    def order(self) -> np.ndarray:
        if not self.plan.shuffle:
            return self.indices
        if self._order is None or self._order[0] != self.epoch:
            perm = np.random.default_rng([self.plan.seed, self.epoch]).permutation(len(self.indices))
            self._order = (self.epoch, self.indices[perm])
        return self._order[1]

    def __len__(self) -> int:
        return -(-len(self.indices) // self.plan.batch_size)

    def batch(self, k: int):
        size = self.plan.batch_size
        rows = self.order()[k * size : (k + 1) * size]
        x, keep = self.source.read(rows)
        rows = rows[keep]
        return x, self.labels[rows].astype(self.plan.label_dtype), rows

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

    def for_fit(self) -> FitInput:
        """``(x, y)`` batches as a ``keras.utils.PyDataset``, and the callback that reshuffles them.

        The callback sets the epoch number before Keras reads the epoch's first batch.
        Keras itself reads the batches in order from one thread (``workers=1``); the
        batches ahead are read here, in a thread pool, keyed by (epoch, batch). Keras' own
        threaded enqueuer (``workers>1``) is not used: it starts reading ahead for the
        batch ``fit`` peeks at to build the model and serves what it read then in later
        epochs, so the per-epoch order would not hold.

        Under JAX's data parallel training (:func:`tlexp.model.devices`) every batch must
        split evenly over the devices: a batch that does not is padded to the next
        multiple with copies of its own first rows, and each batch comes with sample
        weights, 1 for its rows and 0 for the copies. The losses and metrics stay those
        of the real rows (:func:`tlexp.model.compile_model` makes the loss a mean over the
        weights and reports an exactly weighted loss); the copies only enter that batch's
        BatchNorm statistics where BatchNorm trains.
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

            def __del__(self):
                if self.pool is not None:
                    self.pool.shutdown(wait=False, cancel_futures=True)

        return FitInput(FitBatches(), [EpochSetter()])


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
