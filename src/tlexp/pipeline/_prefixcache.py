"""Compute the frozen prefix of a backbone once per image, and keep its activations.

A frozen prefix (inference mode, no random layer, nothing random before it) maps each
image to the same activations in every epoch, in the final prediction pass, and in
every sweep cell that freezes at least as much of the same backbone with the same
weights. So a run computes them once, stores them on disk, and trains only the rest of
the model on them, reading the rows of each batch from disk as it goes (:class:`RowFile`):
memory holds a few batches, whatever the size of the entry. Whether that pays against
recomputing the prefix every pass is decided per cut from measured figures
(:mod:`tlexp.pipeline._cachecost`).

Entries live in ``<cache_dir>/activations/<key>/``; the key hashes the image list (path
and content hash of each file, in row order), the image size, the compute dtype, and
the architecture and weights of every prefix layer, chained layer by layer. A deeper cut
of the same backbone with the same weights therefore finds a shallower entry by key and
computes only the layers between the two cuts: across a sweep every frozen layer runs
once per image. Random initial weights differ by seed, and so do their keys.

Like the decoded-image cache: built in a temporary folder and renamed into place, no
lock files. The folder is kept within its disk budget (``train.prefix_cache.max_gb``,
by default the disk's free space) by removing the least recently used entries, also
when the budget is lowered below what is already there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("tlexp")

FORMAT_VERSION = 2  # bump when what an entry holds changes: old entries are never read
META = "meta.json"


class Fallback(Exception):
    """Caching would be wrong, does not fit or does not pay: train the ordinary way. The message says why.

    ``warn``: the user would want to act on it (the entry does not fit), not just know it.
    """

    def __init__(self, message: str, warn: bool = False):
        super().__init__(message)
        self.warn = warn


@dataclass
class PrefixActivations:
    """The frontier activations of every image at one cut.

    Attributes:
        arrays: one read-only memory-mapped array per frontier tensor, shape
            (n_files, *tensor_shape), rows in the dataset's file order: for looking at
            the values. Training reads rows through ``files`` (:meth:`read`).
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
    files: list[RowFile] = field(default_factory=list)
    compute_s: float = 0.0  # the whole prefix's seconds per image, measured when the entry was built
    decision: str | None = None  # the figures that decided for caching (train.prefix_cache.enabled=auto)

    def read(self, rows: Sequence[int]) -> list[np.ndarray]:
        """The activations of files ``rows``, one array per frontier tensor."""
        return [f.read(rows) for f in self.files]

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
            "decision": self.decision,
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


class RowFile:
    """Rows of one ``.npy`` array on disk, read and written by offset (``pread``/``pwrite``).

    No memory map: a reader holds only the batches it asked for, so a 45 GB entry is
    trained on in the memory of a few batches, and the kernel (not the process) decides
    what stays in the page cache. ``pread`` also releases the GIL, so several batches
    can be read at once by the input pipeline's parallel calls.
    """

    def __init__(self, path: Path, dtype: np.dtype, shape: tuple[int, ...], offset: int, writable: bool = False):
        self.path, self.dtype, self.shape, self.offset = Path(path), np.dtype(dtype), tuple(shape), int(offset)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._fd = os.open(self.path, os.O_RDWR if writable else os.O_RDONLY)
        self._close = weakref.finalize(self, os.close, self._fd)

    @classmethod
    def of(cls, array: np.memmap, writable: bool = False) -> RowFile:
        return cls(Path(array.filename), array.dtype, array.shape, array.offset, writable)

    def close(self) -> None:
        self._close()

    def read(self, rows: Sequence[int]) -> np.ndarray:
        """Rows ``rows`` (any order, repeats allowed), shape ``(len(rows), *row_shape)``."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), *self.shape[1:]), self.dtype)
        flat = memoryview(out.reshape(-1).view(np.uint8))
        for first, count in _runs(rows):  # consecutive rows: one read
            view = flat[first * self.row_bytes : (first + count) * self.row_bytes]
            at, done = self.offset + int(rows[first]) * self.row_bytes, 0
            while done < len(view):
                got = os.preadv(self._fd, [view[done:]], at + done)
                if got == 0:
                    raise OSError(f"{self.path} ends before row {rows[first]}: the cache entry is truncated")
                done += got
        return out

    def write(self, rows: Sequence[int], values: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        values = np.ascontiguousarray(values, dtype=self.dtype)
        flat = memoryview(values.reshape(-1).view(np.uint8))
        for first, count in _runs(rows):
            view = flat[first * self.row_bytes : (first + count) * self.row_bytes]
            at, done = self.offset + int(rows[first]) * self.row_bytes, 0
            while done < len(view):
                done += os.pwritev(self._fd, [view[done:]], at + done)


def _runs(rows: np.ndarray):
    """``(position, length)`` of each stretch of consecutive ascending rows in ``rows``."""
    if len(rows) == 0:
        return
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks, [len(rows)]])
    yield from zip(starts.tolist(), (ends - starts).tolist(), strict=True)


def entry_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir())


class ActivationStore:
    """The folder of activation entries (``<cache_dir>/activations``), kept within a disk budget.

    ``max_bytes=None`` (``max_gb: auto``): the budget is what the entries hold now plus
    the disk's free space above a margin left free for everything else (5 % of the
    disk, at most 10 GB). The budget holds for entries already there too: opening the
    store removes the least recently used ones until the rest fit.
    """

    def __init__(self, cache_dir: Path, max_bytes: int | None = None):
        self.root = Path(cache_dir) / "activations"
        self._max_bytes = max_bytes

    def folder(self, key: str) -> Path:
        return self.root / key[:32]

    def entries(self) -> list[tuple[float, int, Path]]:
        """``(last used, bytes, folder)`` of every finished entry."""
        out = []
        for d in self.root.iterdir() if self.root.is_dir() else ():
            meta = d / META
            try:
                if not d.name.startswith(".") and meta.is_file():
                    out.append((meta.stat().st_mtime, entry_size(d), d))
            except OSError:
                continue  # removed by another process's eviction just now
        return out

    @property
    def max_bytes(self) -> int:
        if self._max_bytes is not None:
            return self._max_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        disk = shutil.disk_usage(self.root)
        margin = min(disk.total // 20, 10 * 10**9)
        # What is there stays (a disk filled by something else does not wipe the cache); new
        # entries get only the free space above the margin.
        return sum(size for _, size, _ in self.entries()) + max(0, disk.free - margin)

    def budget_text(self) -> str:
        if self._max_bytes is not None:
            return f"train.prefix_cache.max_gb={self._max_bytes / 1e9:g}"
        free = shutil.disk_usage(self.root).free
        return f"train.prefix_cache.max_gb=auto: {_size(free)} free on the disk of {self.root}, 5 % of it kept free"

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
            files = [RowFile.of(a) for a in arrays]
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
            files=files,
            compute_s=float(meta["compute_s"]),
        )

    def build(
        self,
        key: str,
        specs: Sequence[tuple[tuple[int, ...], str]],
        n: int,
        layer: str,
        fill: Callable[[list[RowFile], np.ndarray, dict[int, str]], float],
        source: str,
    ) -> PrefixActivations:
        """Create entry ``key``: ``fill(files, ok, failed)`` writes every row and returns
        the prefix's compute seconds per image (kept in the entry for later decisions)."""
        from tlexp.files import build_folder

        t0 = time.perf_counter()
        with build_folder(self.folder(key), META) as tmp:
            files = []
            for i, (shape, dt) in enumerate(specs):
                reserved = self._allocate(tmp / f"frontier{i}.npy", numpy_dtype(dt), (n, *shape))
                files.append(RowFile(tmp / f"frontier{i}.npy", numpy_dtype(dt), reserved.shape, reserved.offset, True))
                del reserved
            ok = np.zeros(n, dtype=bool)
            failed: dict[int, str] = {}
            try:
                compute_s = fill(files, ok, failed)
                for f in files:
                    os.fsync(f._fd)  # written before the entry is published (and before a crash)
            finally:
                for f in files:
                    f.close()
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
                "compute_s": compute_s,
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
        """A ``.npy`` file of ``shape`` whose blocks are reserved on disk (a full disk fails here, not later)."""
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

    def evict(self, keep: Path | None = None) -> None:
        """Remove least recently used entries (never ``keep``) until the folder fits the budget."""
        entries = self.entries()
        total, budget = sum(size for _, size, _ in entries), self.max_bytes
        for _, size, d in sorted(entries):
            if total <= budget:
                break
            if d != keep:
                shutil.rmtree(d, ignore_errors=True)  # a reader keeps its open files (POSIX)
                total -= size
                log.info("train: removed cached activations %s (%s; cache over budget)", d.name, _size(size))


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
        n_files: rows (files in the dataset).
        data_key: :func:`image_key` of those files plus anything else that changes the
            input (the backbone name fixes the preprocessing).
        dtype: 'auto' (the compute dtype: exact) or 'float16' / 'float32'.
        batch_size: rows per forward pass when computing from a shallower entry.
        passes: passes over every image the run will make
            (:func:`tlexp.pipeline._cachecost.run_passes`): cache only where that pays, from
            measured figures (:mod:`tlexp.pipeline._cachecost`). None: cache wherever it is
            correct and fits (``train.prefix_cache.enabled: true``).

    Raises:
        Fallback: the entry would not fit the budget, float16 cannot hold the values, or
            caching does not pay (the message gives the figures).
    """
    from tlexp.model import frontier_spec, inference_fn, segment
    from tlexp.pipeline._cachecost import CacheCost, disk_rates, read_rate

    compute = frontier_spec(backbone, cut)
    specs = [(shape, dt if dtype == "auto" else dtype) for shape, dt in compute]
    hashes = layer_hashes(backbone, cut, f"{FORMAT_VERSION}|{backbone.name}|{data_key}")

    def key(j: int) -> str:
        return hashlib.sha256(f"{hashes[j]}|{j}|{n_files}|{dtype}".encode()).hexdigest()

    layer = backbone.layers[cut - 1].name
    row_bytes = sum(int(np.prod(s)) * numpy_dtype(d).itemsize for s, d in specs)
    need = n_files * row_bytes
    store.evict()  # the budget holds for what is already there, before anything is read
    budget = store.max_bytes
    if need > budget:
        raise Fallback(
            f"activations at {layer} need {_size(need)} for {n_files} images, more than the cache's budget "
            f"({store.budget_text()}); free disk space, point data.cache_dir at a bigger disk, or use "
            "train.prefix_cache.dtype=float16 to halve it",
            warn=True,
        )

    def cost(compute_s: float, build_s: float) -> CacheCost:
        rate, where = read_rate(store.root, need)
        return CacheCost(n_files, row_bytes, compute_s, build_s, disk_rates(store.root)[0], rate, where, passes or 0)

    def check_pays(c: CacheCost) -> None:
        if passes is not None and not c.pays:
            raise Fallback(f"caching at {layer} does not pay here: {c.describe()}")

    found = store.open(key(cut))
    if found is not None:
        if passes is not None:
            c = cost(found.compute_s, 0.0)
            check_pays(c)
            found.decision = c.describe()
        return found
    # The deepest shallower entry of the same backbone, weights and images, if any.
    source, start = None, 1
    for j in range(cut - 1, 1, -1):
        source = store.open(key(j), source=backbone.layers[j - 1].name)
        if source is not None:
            start = j
            break
    seg_fn = inference_fn(segment(backbone, start, cut))
    seg_inputs = frontier_spec(backbone, start)
    before_s = source.compute_s if source is not None else 0.0
    decision: list[str] = []

    def write(files: list[RowFile], rows: np.ndarray, outs) -> None:
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for f, o in zip(files, outs, strict=True):
            v = np.asarray(o)
            with np.errstate(over="ignore"):  # overflow is checked right below
                stored = v.astype(f.dtype, copy=False)
            if stored.dtype != v.dtype and not np.isfinite(stored).all() and np.isfinite(v).all():
                raise Fallback(
                    f"activations at {layer} exceed the {f.dtype} range (max |x| = "
                    f"{np.abs(v).max():.4g}); set train.prefix_cache.dtype=auto"
                )
            f.write(rows, stored)

    def batches():
        if source is None:
            for x, _, idx in images():
                yield np.asarray(idx), x
        else:
            rows_all = np.flatnonzero(source.ok)
            for s in range(0, len(rows_all), batch_size):
                rows = rows_all[s : s + batch_size]
                # In the segment's input dtype: a float16 entry may feed a float32 model.
                xs = [
                    f.read(rows).astype(numpy_dtype(d), copy=False)
                    for f, (_, d) in zip(source.files, seg_inputs, strict=True)
                ]
                yield rows, (xs[0] if len(xs) == 1 else xs)

    def fill(files: list[RowFile], ok: np.ndarray, failed: dict[int, str]) -> float:
        # The segment's compute time per image, timed on every batch after the first
        # (which pays for tracing); the decision is made as soon as two are timed.
        timed_s, timed_n, first_s = 0.0, 0, None
        for rows, x in batches():
            t = time.perf_counter()
            out = seg_fn(x)
            out = [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]
            took = time.perf_counter() - t
            if first_s is None:
                first_s = took / len(rows)
            else:
                timed_s, timed_n = timed_s + took, timed_n + len(rows)
            write(files, rows, out)
            ok[rows] = True
            if not decision and timed_n >= 2 * batch_size:
                decide(before_s + timed_s / timed_n)
        segment_s = timed_s / timed_n if timed_n else (first_s or 0.0)
        if not decision:
            decide(before_s + segment_s)
        if source is None:
            failed.update(failures())
        else:
            failed.update(source.failed)
        return before_s + segment_s

    def decide(compute_s: float) -> None:
        c = cost(compute_s, compute_s - before_s)
        check_pays(c)  # raising here removes the half-built entry
        decision.append(c.describe())

    entry = store.build(key(cut), specs, n_files, layer, fill, "images" if source is None else source.layer)
    if passes is not None:
        entry.decision = decision[0]
    return entry


def _size(nbytes: int) -> str:
    return f"{nbytes / 1e9:.1f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:.1f} MB"


def numpy_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes  # ships with TensorFlow

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)
