"""Compute the frozen prefix of a backbone once per image, and keep its activations.

A frozen prefix (inference mode, no random layer, nothing random before it) maps each
image to the same activations in every epoch, in the final prediction pass, and in
every sweep cell that freezes at least as much of the same backbone with the same
weights. So a run computes them once, stores them on disk (memory-mapped: the page
cache keeps them in RAM while they fit), and trains only the rest of the model on them.

Entries live in ``<cache_dir>/activations/<key>/``; the key hashes the image list (path
and content hash of each file, in row order), the image size, the compute dtype, and
the architecture and weights of every prefix layer, chained layer by layer. A deeper cut
of the same backbone with the same weights therefore finds a shallower entry by key and
computes only the layers between the two cuts: across a sweep every frozen layer runs
once per image. Random initial weights differ by seed, and so do their keys.

Like the decoded-image cache: built in a temporary folder and renamed into place, no
lock files; the folder is kept under ``train.prefix_cache.max_gb`` by removing the
least recently used entries.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("tlexp")

FORMAT_VERSION = 1  # bump when what an entry holds changes: old entries are never read
META = "meta.json"
_RANDOM_LAYERS = (
    "Dropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
)


class Fallback(Exception):
    """Caching would be wrong or does not fit: train the ordinary way. The message says why."""


@dataclass
class PrefixActivations:
    """The frontier activations of every image at one cut.

    Attributes:
        arrays: one read-only memory-mapped array per frontier tensor, shape
            (n_files, *tensor_shape), rows in the dataset's file order.
        ok: (n_files,) bool: False where the image could not be decoded (row is zeros).
        layer: name of the last frozen layer (the cut).
        source: how the entry came to be: 'reused', 'images', or the layer of the
            shallower entry it was computed from.
    """

    arrays: list[np.ndarray]
    ok: np.ndarray
    layer: str
    dtype: str
    folder: Path
    source: str
    seconds: float
    failed: dict[int, str] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.arrays))

    def describe(self) -> dict[str, Any]:
        """What metrics.json records."""
        return {
            "used": True,
            "layer": self.layer,
            "mb": round(self.nbytes / 1e6, 1),
            "dtype": self.dtype,
            "tensors": [list(a.shape[1:]) for a in self.arrays],
            "source": self.source,
            "seconds": round(self.seconds, 3),
            "folder": str(self.folder),
        }

    def summary(self) -> str:
        return f"{self.layer}, {self.nbytes / 1e6:.0f} MB"


def blocker(backbone, cut: int, *, enabled: bool, batchnorm: str, distribute: str) -> str | None:
    """Why the prefix ``backbone.layers[:cut]`` must not (or need not) be cached; None if it can be.

    Frozen layers run in inference mode in every BatchNorm policy (Keras runs a layer
    with ``trainable=False`` in inference mode), and tlexp puts no augmentation before
    the backbone; a random layer in the prefix would still make cached values wrong
    whenever the backbone sees ``training=True``.
    """
    if not enabled:
        return "train.prefix_cache.enabled is false"
    if cut <= 1:
        return "no backbone layer is frozen"
    if distribute == "mirrored":
        return "not combined with MirroredStrategy yet (each GPU recomputes its prefix)"
    for layer in backbone.layers[:cut]:
        if layer.trainable:
            return f"frozen-part layer {layer.name} is trainable"
        if type(layer).__name__ in _RANDOM_LAYERS and batchnorm == "train":
            return f"frozen-part layer {layer.name} ({type(layer).__name__}) is random in training"
        if type(layer).__name__.startswith("Random"):
            return f"frozen-part layer {layer.name} ({type(layer).__name__}) is a random augmentation"
    return None


def layer_hashes(backbone, cut: int, seed_text: str) -> list[str]:
    """Chained hashes: entry ``j`` identifies ``backbone.layers[:j]`` (architecture and weights).

    ``seed_text`` identifies everything before the first layer (images, preprocessing,
    compute dtype). Entry 0 hashes only that.
    """
    h = hashlib.sha256(seed_text.encode())
    out = [h.hexdigest()]
    for layer in backbone.layers[:cut]:
        h = hashlib.sha256(h.digest())
        h.update(type(layer).__name__.encode())
        # Not the layer's name: Keras numbers unnamed layers per session ("input_layer_3"),
        # and a name changes no value.
        config = {k: v for k, v in layer.get_config().items() if k != "name"}
        h.update(json.dumps(config, sort_keys=True, default=str).encode())
        for w in layer.weights:
            v = np.ascontiguousarray(w.numpy())
            h.update(f"{v.dtype}{v.shape}".encode())
            h.update(v.tobytes())
        out.append(h.hexdigest())
    return out


class ActivationStore:
    """The folder of activation entries (``<cache_dir>/activations``)."""

    def __init__(self, cache_dir: Path, max_bytes: int):
        self.root = Path(cache_dir) / "activations"
        self.max_bytes = max_bytes

    def folder(self, key: str) -> Path:
        return self.root / key[:32]

    def open(self, key: str, source: str = "reused") -> PrefixActivations | None:
        """The finished entry ``key``, memory-mapped read-only; None if there is none."""
        folder = self.folder(key)
        try:
            meta = json.loads((folder / META).read_text())
            # .npy has no bfloat16: such files hold 2-byte voids; view them as what they are.
            arrays = [
                np.load(folder / f"frontier{i}.npy", mmap_mode="r").view(numpy_dtype(meta["dtype"]))
                for i in range(meta["tensors"])
            ]
            ok = np.load(folder / "ok.npy")
        except (OSError, ValueError, KeyError):
            return None  # absent, or removed by another process's eviction just now
        os.utime(folder / META)  # recently used: evicted last
        return PrefixActivations(
            arrays,
            ok,
            meta["layer"],
            meta["dtype"],
            folder,
            source,
            0.0,
            {int(k): v for k, v in meta.get("failed", {}).items()},
        )

    def build(
        self,
        key: str,
        specs: Sequence[tuple[tuple[int, ...], str]],
        n: int,
        layer: str,
        fill: Callable[[list[np.ndarray], np.ndarray, dict[int, str]], None],
        source: str,
    ) -> PrefixActivations:
        """Create entry ``key`` with ``fill(arrays, ok, failed)`` writing every row."""
        from tlexp.files import build_folder

        t0 = time.perf_counter()
        with build_folder(self.folder(key), META) as tmp:
            arrays = [
                self._allocate(tmp / f"frontier{i}.npy", numpy_dtype(dt), (n, *shape))
                for i, (shape, dt) in enumerate(specs)
            ]
            ok = np.zeros(n, dtype=bool)
            failed: dict[int, str] = {}
            fill(arrays, ok, failed)
            for a in arrays:
                a.flush()
            del arrays
            np.save(tmp / "ok.npy", ok)
            meta = {
                "version": FORMAT_VERSION,
                "layer": layer,
                "tensors": len(specs),
                "n": n,
                "dtype": specs[0][1],
                "source": source,
                "failed": {str(k): v for k, v in failed.items()},
                "seconds": round(time.perf_counter() - t0, 3),
            }
            (tmp / META).write_text(json.dumps(meta))
        entry = self.open(key, source)
        if entry is None:
            raise OSError(f"activation cache entry {self.folder(key)} vanished right after it was written")
        entry.seconds = time.perf_counter() - t0
        self.evict(keep=self.folder(key))
        return entry

    @staticmethod
    def _allocate(path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        """A writable ``.npy`` memory map whose blocks are reserved on disk (no SIGBUS on a full disk)."""
        from tlexp.files import reserve

        header = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        nbytes = header.offset + header.nbytes
        del header
        reserve(
            path,
            nbytes,
            what="the activation cache",
            where=path.parent.parent,
            fix="point data.cache_dir at a disk with room, or set train.prefix_cache.enabled=false",
        )
        return np.lib.format.open_memmap(path, mode="r+")

    def evict(self, keep: Path) -> None:
        """Remove least recently used entries until the folder fits ``max_bytes``."""
        entries = []
        for d in self.root.iterdir():
            meta = d / META
            if d.name.startswith(".") or not meta.is_file():
                continue
            size = sum(f.stat().st_size for f in d.iterdir())
            entries.append((meta.stat().st_mtime, size, d))
        total = sum(size for _, size, _ in entries)
        for _, size, d in sorted(entries):
            if total <= self.max_bytes:
                break
            if d != keep:
                shutil.rmtree(d, ignore_errors=True)  # a reader keeps its open maps (POSIX)
                total -= size
                log.info("train: removed cached activations %s (cache over %.1f GB)", d.name, self.max_bytes / 1e9)


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
) -> PrefixActivations:
    """The frontier activations at ``cut`` for every image: reused, or computed once.

    Args:
        backbone: the backbone with its weights, prefix frozen.
        cut: number of frozen leading layers (``FreezePlan.layers_frozen``).
        store: where entries live.
        images: returns a fresh iterable of ``(x, y, index)`` batches of preprocessed
            images of every file, in any order (undecodable files are simply absent).
        n_files: rows (files in the dataset).
        data_key: :func:`image_key` of those files plus anything else that changes the
            input (the backbone name fixes the preprocessing).
        dtype: 'auto' (the compute dtype: exact) or 'float16' / 'float32'.
        batch_size: rows per forward pass when computing from a shallower entry.

    Raises:
        Fallback: the entry would not fit the budget, or float16 cannot hold the values.
    """
    from tlexp.model.segments import frontier_spec, inference_fn, segment

    compute = frontier_spec(backbone, cut)
    specs = [(shape, dt if dtype == "auto" else dtype) for shape, dt in compute]
    hashes = layer_hashes(backbone, cut, f"{FORMAT_VERSION}|{backbone.name}|{data_key}")

    def key(j: int) -> str:
        return hashlib.sha256(f"{hashes[j]}|{j}|{n_files}|{dtype}".encode()).hexdigest()

    layer = backbone.layers[cut - 1].name
    found = store.open(key(cut))
    if found is not None:
        return found
    need = n_files * sum(int(np.prod(s)) * numpy_dtype(d).itemsize for s, d in specs)
    if need > store.max_bytes:
        size = f"{need / 1e9:.1f} GB" if need >= 1e8 else f"{need / 1e6:.1f} MB"
        raise Fallback(
            f"activations at {layer} need {size} for {n_files} images, more than "
            f"train.prefix_cache.max_gb={store.max_bytes / 1e9:g}"
        )
    # The deepest shallower entry of the same backbone, weights and images, if any.
    source, start = None, 1
    for j in range(cut - 1, 1, -1):
        source = store.open(key(j), source=backbone.layers[j - 1].name)
        if source is not None:
            start = j
            break
    seg_fn = inference_fn(segment(backbone, start, cut))
    seg_inputs = frontier_spec(backbone, start)

    def write(arrays: list[np.ndarray], rows: np.ndarray, outs) -> None:
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for a, o in zip(arrays, outs, strict=True):
            v = np.asarray(o)
            with np.errstate(over="ignore"):  # overflow is checked right below
                stored = v.astype(a.dtype, copy=False)
            if stored.dtype != v.dtype and not np.isfinite(stored).all() and np.isfinite(v).all():
                raise Fallback(
                    f"activations at {layer} exceed the {a.dtype} range (max |x| = "
                    f"{np.abs(v).max():.4g}); set train.prefix_cache.dtype=auto"
                )
            a[rows] = stored

    def fill(arrays: list[np.ndarray], ok: np.ndarray, failed: dict[int, str]) -> None:
        if source is None:
            for x, _, idx in images():
                rows = np.asarray(idx)
                write(arrays, rows, seg_fn(x))
                ok[rows] = True
            failed.update(failures())
        else:
            rows_all = np.flatnonzero(source.ok)
            failed.update(source.failed)
            for s in range(0, len(rows_all), batch_size):
                rows = rows_all[s : s + batch_size]
                # In the segment's input dtype: a float16 entry may feed a float32 model.
                xs = [
                    np.asarray(a[rows], dtype=numpy_dtype(d))
                    for a, (_, d) in zip(source.arrays, seg_inputs, strict=True)
                ]
                write(arrays, rows, seg_fn(xs[0] if len(xs) == 1 else xs))
                ok[rows] = True

    return store.build(key(cut), specs, n_files, layer, fill, "images" if source is None else source.layer)


def numpy_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes  # ships with TensorFlow

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)
