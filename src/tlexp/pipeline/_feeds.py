"""Feeds: what training, evaluation and feature export read, and the model that reads it.

A run trains in one of two ways, and this module is the only place that knows which:

* :class:`ImageFeed`: images, decoded and preprocessed, through the whole model;
* :class:`ActivationFeed`: the frozen prefix's cached activations through the rest of
  the model (the same layer objects, so training it trains the whole model).

Both give the same ``(x, label, file index)`` batches in the same order (same seed,
same shuffle), so a run's steps do not depend on the path taken; :func:`open_feed`
picks the path and records why. The feeds sit above ``data/`` and ``model/``: they
know images and activations both.

Images are decoded by :func:`tlexp.data._decode.load_image` (Pillow) inside the pipeline, so
training and any later check decode a file identically. A file that cannot be decoded
does not stop training: it is dropped from the stream and recorded in ``Decoder.failed``.
Every element carries its index into the dataset's file list, so predictions can always
be matched with their file and label, whatever was dropped.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tlexp.config import Config
from tlexp.data import Dataset, Decoder
from tlexp.model import Network
from tlexp.pipeline._loader import Batches

log = logging.getLogger("tlexp")


@dataclass
class Feed:
    """Batches of one run's data and the network that reads them.

    Attributes:
        network: the model to train and its features twin (whole model, or the part
            after the cached prefix).
        dataset: the run's files, labels and splits.
        prefix_cache: what the run record keeps of the path taken (``used``, and the
            entry, or the ``reason`` it was not used).
        failed: dataset index -> why that file could not be decoded (filled while
            images are decoded; complete once every split was read).
    """

    network: Network
    dataset: Dataset
    batch_size: int
    seed: int
    prefix_cache: dict[str, Any]
    failed: dict[int, str] = field(default_factory=dict)

    @property
    def label_dtype(self) -> str:
        # One sigmoid unit for two classes (float labels), softmax otherwise (int labels).
        return "float32" if len(self.dataset.class_names) == 2 else "int32"

    def batches(self, split: str, shuffle: bool = False):
        """``(x, label, file index)`` batches of one split; ``shuffle`` reshuffles every epoch."""
        raise NotImplementedError

    def fit_batches(self, split: str, shuffle: bool):
        """``(x, label)`` batches for ``model.fit``."""
        return without_index(self.batches(split, shuffle))


@dataclass
class ImageFeed(Feed):
    """Images through the whole model, decoded (or read from the decoded cache) every epoch."""

    decoder: Decoder | None = None
    preprocess: Callable | None = None

    def __post_init__(self) -> None:
        self.failed = self.decoder.failed  # the decoder fills it as files fail

    def batches(self, split: str, shuffle: bool = False):
        return self.rows(self.dataset.indices(split), shuffle)

    def rows(self, indices: np.ndarray, shuffle: bool = False):
        """Batches of the files ``indices`` (any subset of the dataset)."""
        return make_dataset(
            self.decoder,
            indices,
            self.dataset.labels,
            batch_size=self.batch_size,
            preprocess=self.preprocess,
            shuffle=shuffle,
            seed=self.seed,
            label_dtype=self.label_dtype,
        )


@dataclass
class ActivationFeed(Feed):
    """Cached activations of the frozen prefix through the rest of the model."""

    activations: Any = None  # tlexp.pipeline._prefixcache.PrefixActivations

    def __post_init__(self) -> None:
        self.failed = self.activations.failed

    def batches(self, split: str, shuffle: bool = False):
        dtypes = [str(t.dtype) for t in self.network.model.inputs]
        return activation_dataset(
            self.activations,
            self.dataset.indices(split),
            self.dataset.labels,
            batch_size=self.batch_size,
            shuffle=shuffle,
            seed=self.seed,
            label_dtype=self.label_dtype,
            dtypes=dtypes,
        )


def open_feed(cfg: Config, ds: Dataset, whole, plan, accel, check, decoder: Decoder) -> Feed:
    """The feed of a run: cached activations where the frozen prefix can be cached, else images.

    Args:
        whole: the run's :class:`tlexp.model._head.TransferModel`, frozen per ``plan``.
        plan: its :class:`tlexp.model._freeze.FreezePlan`.
        accel: the run's resolved :class:`tlexp.model._accel.Accel`.
        check: the data check (content hashes key the cache).
        decoder: decodes the dataset's files (or reads them from the decoded cache).
    """
    from tlexp.model import preprocess_fn

    images = ImageFeed(
        whole, ds, cfg.train.batch_size, cfg.seed, {}, decoder=decoder, preprocess=preprocess_fn(cfg.model.backbone)
    )
    acts, why, warn = _prefix_activations(cfg, ds, whole, plan, accel, check, images)
    if acts is None:
        log.log(
            logging.WARNING if warn else logging.INFO,
            "train: no cached prefix (%s); every epoch runs the whole model",
            why,
        )
        images.prefix_cache = {"used": False, "reason": why}
        return images

    from tlexp.model import _accel as accel_mod
    from tlexp.model import compile_model, suffix_model

    with accel_mod.scope(accel):
        suffix = suffix_model(whole, plan.layers_frozen, cfg.model.batchnorm)
        compile_model(suffix.trainer, cfg, len(ds.class_names))
    how = "reused" if acts.source == "reused" else f"computed from {acts.source} in {acts.seconds:.1f}s"
    log.info("train: cached prefix: %s (%s, %s); training %s on it", acts.summary(), acts.dtype, how, suffix.model.name)
    if acts.decision:
        log.info("train: caching pays: %s", acts.decision)
    return ActivationFeed(suffix, ds, cfg.train.batch_size, cfg.seed, acts.describe(), activations=acts)


def _prefix_activations(cfg: Config, ds: Dataset, whole, plan, accel, check, images: ImageFeed):
    """``(activations, None, False)`` of the frozen prefix for every image, or ``(None, why not, warn)``."""
    from tlexp.data import cache_dir, image_key
    from tlexp.model import numerics_fingerprint
    from tlexp.pipeline._cachecost import run_passes
    from tlexp.pipeline._prefixcache import ActivationStore, Fallback, blocker, prefix_activations

    pc, cut = cfg.train.prefix_cache, plan.layers_frozen
    why = blocker(whole.backbone, cut, enabled=pc.enabled, batchnorm=cfg.model.batchnorm, distribute=accel.distribute)
    if why is not None:
        return None, why, False
    sha = {f.path: f.sha256 for f in check.usable()}
    # Everything else that changes the values is in the key: the compute dtype (mixed
    # precision), the library versions and the device (kernels differ in their last bits).
    key = "|".join(
        [
            image_key(ds.paths, [sha[p] for p in ds.paths], cfg.data.image_size),
            accel.precision,
            numerics_fingerprint(accel.gpus),
        ]
    )
    store = ActivationStore(cache_dir(cfg), None if pc.max_gb == "auto" else int(pc.max_gb * 1e9))
    # enabled=auto: cache only where it pays over the passes this run makes (figures measured).
    split = [len(ds.indices(s)) for s in ("train", "val")]
    passes = run_passes(cfg.train.epochs, *split, len(ds.paths)) if pc.enabled == "auto" else None
    try:
        acts = prefix_activations(
            whole.backbone,
            cut,
            store=store,
            images=lambda: images.rows(np.arange(len(ds.paths))),
            failures=lambda: dict(images.failed),
            n_files=len(ds.paths),
            data_key=key,
            dtype=pc.dtype,
            batch_size=cfg.train.batch_size,
            passes=passes,
        )
    except Fallback as e:
        return None, str(e), e.warn
    except OSError as e:  # disk full, no permission: the run still works the ordinary way
        return None, f"could not write the activation cache: {e}", True
    return acts, None, False


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
    A ``tf.data.Dataset`` on TensorFlow; on any other backend a :class:`Batches`.
    """
    kwargs = dict(batch_size=batch_size, preprocess=preprocess, shuffle=shuffle, seed=seed, label_dtype=label_dtype)
    if not _on_tensorflow():
        return image_batches(decoder, indices, labels, **kwargs)
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


def image_batches(
    decoder: Decoder,
    indices: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int,
    preprocess: Callable,
    shuffle: bool,
    seed: int,
    label_dtype: str,
) -> Batches:
    """:func:`make_dataset` off TensorFlow: the same batches as numpy arrays (:class:`Batches`)."""

    def load(rows: np.ndarray):
        # Each image converted straight into the float32 batch: one pass over the pixels
        # (np.stack, then astype, took 3x as long).
        x = np.empty((len(rows), decoder.size, decoder.size, 3), np.float32)
        keep = np.zeros(len(rows), dtype=bool)
        for j, i in enumerate(rows):
            img, ok = decoder(i)
            if ok:
                x[j] = img
                keep[j] = True
        return np.asarray(preprocess(x if keep.all() else x[keep])), keep

    known_bad = np.zeros(len(labels), dtype=bool)
    known_bad[list(decoder.failed)] = True  # the decoded-image cache knows them all up front
    return Batches(load, indices, labels, known_bad, batch_size, shuffle, seed, label_dtype)


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
    if isinstance(ds, Batches):
        return ds.for_fit()
    return ds.map(lambda x, y, i: (x, y))


def _on_tensorflow() -> bool:
    from tlexp.model import backend_name

    return backend_name() == "tensorflow"


def activation_dataset(
    activations,
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

    Each batch's rows are read from disk when the pipeline gets to it
    (:meth:`PrefixActivations.read`, ``pread``: no GIL held while waiting for the disk),
    a few batches ahead and in parallel, in order: memory holds the batches in flight,
    whatever the size of the split.

    Args:
        activations: the :class:`tlexp.pipeline._prefixcache.PrefixActivations` entry.
        indices: the split's file indices.
        dtypes: dtype each frontier tensor is fed to the model in (its compute dtype).

    Yields batches: activations (one tensor, or a tuple of them), labels (b,), indices (b,).
    A ``tf.data.Dataset`` on TensorFlow; on any other backend a :class:`Batches`.
    """
    if not _on_tensorflow():
        from tlexp.pipeline._prefixcache import numpy_dtype

        np_dtypes = [numpy_dtype(d) for d in dtypes]

        def load(rows: np.ndarray):
            xs = [a.astype(d, copy=False) for a, d in zip(activations.read(rows), np_dtypes, strict=True)]
            return (xs[0] if len(xs) == 1 else tuple(xs)), np.ones(len(rows), dtype=bool)

        known_bad = ~np.asarray(activations.ok, dtype=bool)
        return Batches(load, indices, labels, known_bad, batch_size, shuffle, seed, label_dtype)
    import tensorflow as tf

    from tlexp.pipeline._prefixcache import numpy_dtype

    idx = np.asarray(indices, dtype=np.int64)
    lab = np.asarray(labels)[idx].astype(label_dtype)
    usable = np.asarray(activations.ok, dtype=bool)[idx]
    ds = tf.data.Dataset.from_tensor_slices((idx, lab, usable))
    if shuffle:  # a permutation that depends on the length and seed only: make_dataset's
        ds = ds.shuffle(len(idx), seed=seed, reshuffle_each_iteration=True)

    def decodable(i, y, ok):
        return ok

    def without_flag(i, y, ok):
        return i, y

    ds = ds.filter(decodable).map(without_flag).batch(batch_size)
    np_dtypes = [numpy_dtype(d) for d in dtypes]
    shapes = [(None, *(int(n) for n in f.shape[1:])) for f in activations.files]

    def read(rows: np.ndarray) -> list[np.ndarray]:
        return [a.astype(d, copy=False) for a, d in zip(activations.read(rows), np_dtypes, strict=True)]

    def load(i, y):
        xs = tf.numpy_function(read, [i], [tf.as_dtype(d) for d in dtypes], stateful=False)
        for x, shape in zip(xs, shapes, strict=True):
            x.set_shape(shape)
        return (xs[0] if len(xs) == 1 else tuple(xs)), y, i

    # Reads overlap each other and the training step; deterministic keeps the batch order.
    workers = min(4, max(2, os.cpu_count() or 1))
    return _without_autotune(ds.map(load, num_parallel_calls=workers, deterministic=True).prefetch(2))
