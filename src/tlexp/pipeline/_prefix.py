"""Compute the frozen prefix of a backbone once per image, and keep its activations.

A frozen prefix (inference mode, no random layer, nothing random before it) maps each
image to the same activations in every epoch, in the final prediction pass, and in
every sweep cell that freezes at least as much of the same backbone with the same
weights. So a run computes them once, stores them (:mod:`tlexp.pipeline._store`), and
trains only the rest of the model on them, reading the rows of each batch from disk as it
goes. Whether that pays against recomputing the prefix every pass is decided per cut
from measured figures (:mod:`tlexp.pipeline._cachecost`).

An entry's key hashes the image list (path and content hash of each file, in row
order), the image size, the compute dtype, and the architecture and weights of every
prefix layer, chained layer by layer. A deeper cut of the same backbone with the same
weights therefore finds a shallower entry by key and computes only the layers between
the two cuts: across a sweep every frozen layer runs once per image. Random initial
weights differ by seed, and so do their keys.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from tlexp.pipeline._rowfile import RowFile, numpy_dtype
from tlexp.pipeline._store import FORMAT_VERSION, ActivationStore, Fallback, PrefixActivations, size_text


def blocker(backbone, cut: int, *, enabled: bool, batchnorm: str, distribute: str) -> str | None:
    """Why the prefix ``backbone.layers[:cut]`` must not (or need not) be cached; None if it can be.

    Frozen layers run in inference mode in every BatchNorm policy (Keras runs a layer
    with ``trainable=False`` in inference mode), and tlexp puts no augmentation before
    the backbone; a random layer in the prefix would still make cached values wrong
    whenever the backbone sees ``training=True``.
    """
    from tlexp.model import backend_name, randomness

    if not enabled:
        return "train.prefix_cache.enabled is false"
    if cut <= 1:
        return "no backbone layer is frozen"
    if distribute == "mirrored" and backend_name() == "tensorflow":
        return "not combined with MirroredStrategy yet (each GPU recomputes its prefix)"
    for layer in backbone.layers[:cut]:
        if layer.trainable:
            return f"frozen-part layer {layer.name} is trainable"
        kind = randomness(layer)  # Dropout, noise, stochastic depth: found by their seed generators
        if kind == "training" and batchnorm == "train":
            return f"frozen-part layer {layer.name} ({type(layer).__name__}) is random in training"
        if kind == "augmentation":
            return f"frozen-part layer {layer.name} ({type(layer).__name__}) is a random augmentation"
    return None


def layer_hashes(backbone, cut: int, seed_text: str, digests: list[bytes] | None = None) -> list[str]:
    """Chained hashes: entry ``j`` identifies ``backbone.layers[:j]`` (architecture and weights).

    ``seed_text`` identifies everything before the first layer (images, preprocessing,
    compute dtype). Entry 0 hashes only that. ``digests``: :func:`layer_digests`, where the
    caller has them already.
    """
    h = hashlib.sha256(seed_text.encode())
    out = [h.hexdigest()]
    for digest in layer_digests(backbone, cut) if digests is None else digests[:cut]:
        h = hashlib.sha256(h.digest() + digest)
        out.append(h.hexdigest())
    return out


def layer_digests(backbone, cut: int) -> list[bytes]:
    """One digest per layer of ``backbone.layers[:cut]``: its kind, configuration and weights."""
    out = []
    for layer in backbone.layers[:cut]:
        h = hashlib.sha256(type(layer).__name__.encode())
        # Not the layer's name: Keras numbers unnamed layers per session ("input_layer_3"),
        # and a name changes no value. Not its dtype policy: the compute dtype is in the
        # chain's ``seed_text``, and ``auto`` may set the policy after the build (so the keys
        # of either precision can be found before it is chosen: :func:`cached_cuts`).
        config = {k: v for k, v in layer.get_config().items() if k not in ("name", "dtype")}
        h.update(json.dumps(config, sort_keys=True, default=str).encode())
        for w in layer.weights:
            v = np.ascontiguousarray(w.numpy())
            h.update(f"{v.dtype}{v.shape}".encode())
            h.update(v.tobytes())
        out.append(h.digest())
    return out


def cached_cuts(backbone, cut: int, *, store: ActivationStore, n_files: int, data_keys: dict[str, str], dtype: str):
    """For each compute precision, the deepest cut up to ``cut`` whose entry the store holds.

    Args:
        data_keys: precision -> the ``data_key`` its entries would have (the compute dtype is in it).
        n_files, dtype: as :func:`prefix_activations` takes them.

    Returns:
        precision -> cut (0 where none is held).
    """
    digests, out = layer_digests(backbone, cut), {}
    for precision, data_key in data_keys.items():
        build = _Build(backbone, cut, store, n_files, data_key, dtype, None, digests)
        out[precision] = next((j for j in range(cut, 1, -1) if store.holds(build.key(j))), 0)
    return out


def prefix_activations(
    backbone,
    cut: int,
    *,
    store: ActivationStore,
    images: Callable[[], Iterable],
    failures: Callable[[], dict[int, str]],
    n_files: int,
    data_key: str,
    dtype: str,
    batch_size: int,
    passes: float | None = None,
) -> PrefixActivations:
    """The frontier activations at ``cut`` for every image: reused, or computed once.

    Args:
        backbone: the backbone with its weights, prefix frozen.
        cut: number of frozen leading layers (``FreezePlan.layers_frozen``).
        store: where entries live.
        images: returns a fresh iterable of ``(x, y, index)`` batches of preprocessed
            images of every file, in any order (undecodable files are simply absent).
        failures: returns the files that could not be decoded (index -> why).
        n_files: rows (files in the dataset).
        data_key: :func:`tlexp.data.image_key` of those files plus anything else that
            changes the input (the backbone name fixes the preprocessing).
        dtype: 'auto' (the compute dtype: exact) or 'float16' / 'float32'.
        batch_size: rows per forward pass when computing from a shallower entry.
        passes: passes over every image the run will make
            (:func:`tlexp.pipeline._cachecost.run_passes`): cache only where that pays, from
            measured figures. None: cache wherever it is correct and fits
            (``train.prefix_cache.enabled: true``).

    Raises:
        Fallback: the entry would not fit the budget, float16 cannot hold the values, or
            caching does not pay (the message gives the figures).
    """
    build = _Build(backbone, cut, store, n_files, data_key, dtype, passes)
    build.check_budget()
    found = store.open(build.key(cut))
    if found is not None:
        if passes is not None:
            found.decision = build.decide(found.compute_s, reused=True)
        return found
    source = build.shallower()
    entry = store.build(
        build.key(cut),
        build.specs,
        n_files,
        build.layer,
        lambda files, ok, failed: build.fill(files, ok, failed, source, images, failures, batch_size),
        "images" if source is None else source.layer,
    )
    if passes is not None:
        entry.decision = build.decision
    return entry


class _Build:
    """One entry of :func:`prefix_activations`: its key, its size against the budget, the
    decision whether it pays, and the pass that fills it."""

    def __init__(
        self, backbone, cut: int, store: ActivationStore, n_files: int, data_key: str, dtype: str, passes, digests=None
    ):
        from tlexp.model import frontier_spec

        self.backbone, self.cut, self.store, self.n_files, self.dtype = backbone, cut, store, n_files, dtype
        self.passes = passes
        self.hashes = layer_hashes(backbone, cut, f"{FORMAT_VERSION}|{backbone.name}|{data_key}", digests)
        self.specs = [(shape, dt if dtype == "auto" else dtype) for shape, dt in frontier_spec(backbone, cut)]
        self.layer = backbone.layers[cut - 1].name
        self.row_bytes = sum(int(np.prod(s)) * numpy_dtype(d).itemsize for s, d in self.specs)
        self.need = n_files * self.row_bytes
        self.before_s = 0.0  # seconds per image of the shallower entry computed from, if any
        self.decision: str | None = None

    def key(self, j: int) -> str:
        return hashlib.sha256(f"{self.hashes[j]}|{j}|{self.n_files}|{self.dtype}".encode()).hexdigest()

    def check_budget(self) -> None:
        self.store.evict()  # the budget holds for what is already there, before anything is read
        if self.need > self.store.max_bytes:
            raise Fallback(
                f"activations at {self.layer} need {size_text(self.need)} for {self.n_files} images, more than the "
                f"cache's budget ({self.store.budget_text()}); free disk space, point data.cache_dir at a bigger "
                "disk, or use train.prefix_cache.dtype=float16 to halve it",
                warn=True,
            )

    def shallower(self) -> PrefixActivations | None:
        """The deepest shallower entry of the same backbone, weights and images, if any."""
        for j in range(self.cut - 1, 1, -1):
            found = self.store.open(self.key(j), source=self.backbone.layers[j - 1].name)
            if found is not None:
                self.start, self.before_s = j, found.compute_s
                return found
        self.start = 1
        return None

    def decide(self, compute_s: float, reused: bool = False) -> str:
        """The figures of caching against recomputing; raises :class:`Fallback` where caching
        does not pay (while building, that removes the half-built entry)."""
        from tlexp.pipeline._cachecost import CacheCost, disk_rates, read_rate

        rate, where = read_rate(self.store.root, self.need)
        build_s = 0.0 if reused else compute_s - self.before_s
        c = CacheCost(
            self.n_files, self.row_bytes, compute_s, build_s, disk_rates(self.store.root)[0], rate, where, self.passes
        )
        if not c.pays:
            raise Fallback(f"caching at {self.layer} does not pay here: {c.describe()}")
        self.decision = c.describe()
        return self.decision

    def fill(self, files, ok, failed, source, images, failures, batch_size: int) -> float:
        """Compute every row into ``files``; the prefix's compute seconds per image.

        The segment's time per image is measured on every batch after the first (which
        pays for tracing); the decision is made as soon as two batches' worth are timed.
        """
        from tlexp.model import inference_fn, segment

        seg_fn = inference_fn(segment(self.backbone, self.start, self.cut))
        timed_s, timed_n, first_s = 0.0, 0, None
        for rows, x in self._inputs(source, images, batch_size):
            t = time.perf_counter()
            out = seg_fn(x)
            out = [np.asarray(o) for o in (out if isinstance(out, list | tuple) else [out])]
            took = time.perf_counter() - t
            if first_s is None:
                first_s = took / len(rows)
            else:
                timed_s, timed_n = timed_s + took, timed_n + len(rows)
            self._write(files, rows, out)
            ok[rows] = True
            if self.passes is not None and self.decision is None and timed_n >= 2 * batch_size:
                self.decide(self.before_s + timed_s / timed_n)
        segment_s = timed_s / timed_n if timed_n else (first_s or 0.0)
        if self.passes is not None and self.decision is None:
            self.decide(self.before_s + segment_s)
        failed.update(failures() if source is None else source.failed)
        return self.before_s + segment_s

    def _inputs(self, source, images, batch_size: int) -> Iterator[tuple[np.ndarray, object]]:
        """``(rows, x)``: the images, or the rows of the shallower entry in the segment's input dtype."""
        from tlexp.model import frontier_spec

        if source is None:
            for x, _, idx in images():
                yield np.asarray(idx), x
            return
        seg_inputs = frontier_spec(self.backbone, self.start)
        rows_all = np.flatnonzero(source.ok)
        for s in range(0, len(rows_all), batch_size):
            rows = rows_all[s : s + batch_size]
            # In the segment's input dtype: a float16 entry may feed a float32 model.
            xs = [
                f.read(rows).astype(numpy_dtype(d), copy=False)
                for f, (_, d) in zip(source.files, seg_inputs, strict=True)
            ]
            yield rows, (xs[0] if len(xs) == 1 else xs)

    def _write(self, files: list[RowFile], rows: np.ndarray, outs: list[np.ndarray]) -> None:
        for f, v in zip(files, outs, strict=True):
            with np.errstate(over="ignore"):  # overflow is checked right below
                stored = v.astype(f.dtype, copy=False)
            if stored.dtype != v.dtype and not np.isfinite(stored).all() and np.isfinite(v).all():
                raise Fallback(
                    f"activations at {self.layer} exceed the {f.dtype} range (max |x| = "
                    f"{np.abs(v).max():.4g}); set train.prefix_cache.dtype=auto"
                )
            f.write(rows, stored)
