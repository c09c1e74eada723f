"""The feed of a run: what training, evaluation and feature export read, and the network that reads it.

A run trains in one of two ways, and :func:`open_feed` is the only place that picks:

* images, decoded and preprocessed, through the whole model (:class:`ImageSource`);
* the frozen prefix's cached activations through the rest of the model, the same layer
  objects, so training it trains the whole model (:class:`ActivationSource`).

Either way the feed gives the same ``(x, label, file index)`` batches in the same order
(same plan, same seed), so a run's steps do not depend on the path taken, and the run
record says which was taken and why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from tlexp.config import Config
from tlexp.data import Dataset
from tlexp.pipeline._loaders import stream
from tlexp.pipeline._plan import BatchPlan, FitInput
from tlexp.pipeline._sources import ActivationSource, ImageSource, Source

log = logging.getLogger("tlexp")


@dataclass
class Feed:
    """Batches of one run's data and the network that reads them.

    Attributes:
        network: the model to train and its features twin (whole model, or the part
            after the cached prefix).
        dataset: the run's files, labels and splits.
        source: what a row is (images or cached activations).
        plan: how a split is cut into batches (unshuffled; training shuffles it).
        prefix_cache: what the run record keeps of the path taken (``used``, and the
            entry, or the ``reason`` it was not used).
    """

    network: Any
    dataset: Dataset
    source: Source
    plan: BatchPlan
    prefix_cache: dict[str, Any]

    @property
    def failed(self) -> dict[int, str]:
        """Dataset index -> why that file could not be read (complete once every split was read)."""
        return self.source.failed

    def batches(self, split: str, shuffle: bool = False):
        """``(x, label, file index)`` batches of one split; ``shuffle`` reshuffles every epoch."""
        return stream(self.source, self.dataset.indices(split), self.plan.shuffled(shuffle))

    def fit_input(self, split: str, shuffle: bool) -> FitInput:
        """``(x, label)`` batches of one split for ``model.fit``, with the callbacks they need."""
        return self.batches(split, shuffle).for_fit()


def open_feed(cfg: Config, ds: Dataset, whole, plan, accel, check, decoder) -> Feed:
    """The feed of a run: cached activations where the frozen prefix can be cached, else images.

    Args:
        whole: the run's :class:`tlexp.model.TransferModel`, frozen per ``plan``.
        plan: its :class:`tlexp.model.FreezePlan`.
        accel: the run's resolved :class:`tlexp.model.Accel`.
        check: the data check (content hashes key the cache).
        decoder: decodes the dataset's files (or reads them from the decoded-image cache).
    """
    from tlexp.model import accel_scope, compile_model, preprocess_fn, suffix_model

    batches = BatchPlan.for_classes(len(ds.class_names), cfg.train.batch_size, cfg.seed)
    images = ImageSource(decoder, preprocess_fn(cfg.model.backbone), ds.labels)
    acts, why, warn = _prefix_activations(cfg, ds, whole, plan, accel, check, images, batches)
    if acts is None:
        log.log(
            logging.WARNING if warn else logging.INFO,
            "train: no cached prefix (%s); every epoch runs the whole model",
            why,
        )
        return Feed(whole, ds, images, batches, {"used": False, "reason": why})
    with accel_scope(accel):
        suffix = suffix_model(whole, plan.layers_frozen, cfg.model.batchnorm)
        t = cfg.train
        compile_model(
            suffix.trainer,
            len(ds.class_names),
            optimizer=t.optimizer,
            learning_rate=t.learning_rate,
            jit_compile=t.jit_compile,
        )
    how = "reused" if acts.source == "reused" else f"computed from {acts.source} in {acts.seconds:.1f}s"
    log.info("train: cached prefix: %s (%s, %s); training %s on it", acts.summary(), acts.dtype, how, suffix.model.name)
    if acts.decision:
        log.info("train: caching pays: %s", acts.decision)
    source = ActivationSource(acts, ds.labels, [str(t.dtype) for t in suffix.model.inputs])
    return Feed(suffix, ds, source, batches, acts.describe())


def cached_cuts(cfg: Config, ds: Dataset, check, backbone, cut: int, distribute: str, precisions) -> dict[str, int]:
    """For each compute precision (a Keras policy name), the deepest cut up to ``cut`` whose
    activations the cache holds for this run's images, backbone and weights on this CPU
    (0: none); what ``train.precision: auto`` weighs. Empty where this run caches no prefix."""
    from tlexp.pipeline._prefix import blocker
    from tlexp.pipeline._prefix import cached_cuts as held

    pc = cfg.train.prefix_cache
    if blocker(backbone, cut, enabled=pc.enabled, batchnorm=cfg.model.batchnorm, distribute=distribute):
        return {}
    keys = {p: _data_key(cfg, ds, check, p, []) for p in precisions}
    return held(backbone, cut, store=_store(cfg), n_files=len(ds.paths), data_keys=keys, dtype=pc.dtype)


def _data_key(cfg: Config, ds: Dataset, check, precision: str, gpus: list[str]) -> str:
    """What identifies the prefix's input: the images (paths and content), their size, and
    everything else that changes the values: the compute dtype (mixed precision), the
    library versions and the device (kernels differ in their last bits)."""
    from tlexp.data import image_key
    from tlexp.model import numerics_fingerprint

    sha = {f.path: f.sha256 for f in check.usable()}
    images = image_key(ds.paths, [sha[p] for p in ds.paths], cfg.data.image_size)
    return "|".join([images, precision, numerics_fingerprint(gpus)])


def _store(cfg: Config):
    from tlexp.data import cache_dir
    from tlexp.pipeline._store import ActivationStore

    max_gb = cfg.train.prefix_cache.max_gb
    return ActivationStore(cache_dir(cfg), None if max_gb == "auto" else int(max_gb * 1e9))


def _prefix_activations(cfg: Config, ds: Dataset, whole, plan, accel, check, images: ImageSource, batches: BatchPlan):
    """``(activations, None, False)`` of the frozen prefix for every image, or ``(None, why not, warn)``."""
    from tlexp.pipeline._cachecost import run_passes
    from tlexp.pipeline._prefix import blocker, prefix_activations
    from tlexp.pipeline._store import Fallback

    pc, cut = cfg.train.prefix_cache, plan.layers_frozen
    why = blocker(whole.backbone, cut, enabled=pc.enabled, batchnorm=cfg.model.batchnorm, distribute=accel.distribute)
    if why is not None:
        return None, why, False
    key = _data_key(cfg, ds, check, accel.precision, accel.gpus)
    store = _store(cfg)
    # enabled=auto: cache only where it pays over the passes this run makes (figures measured).
    split = [len(ds.indices(s)) for s in ("train", "val")]
    passes = run_passes(cfg.train.epochs, *split, len(ds.paths)) if pc.enabled == "auto" else None
    try:
        acts = prefix_activations(
            whole.backbone,
            cut,
            store=store,
            images=lambda: stream(images, np.arange(len(ds.paths)), batches),
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
