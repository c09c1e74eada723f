"""The activation cache on disk: entries of the frozen prefix's activations, within a disk budget.

Entries live in ``<cache_dir>/activations/<key>/``; :mod:`tlexp.pipeline._prefix` makes
their keys and fills them. Like the decoded-image cache: built in a temporary folder and
renamed into place, no lock files. The folder is kept within its disk budget
(``train.prefix_cache.max_gb``, by default the disk's free space) by removing the least
recently used entries, also when the budget is lowered below what is already there.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tlexp.pipeline._rowfile import RowFile, numpy_dtype

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
        return f"train.prefix_cache.max_gb=auto: {size_text(free)} free on the disk of {self.root}, 5 % of it kept free"

    def holds(self, key: str) -> bool:
        """Whether the finished entry ``key`` is there (not marked as used)."""
        return (self.folder(key) / META).is_file()

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
                log.info("train: removed cached activations %s (%s; cache over budget)", d.name, size_text(size))


def size_text(nbytes: int) -> str:
    return f"{nbytes / 1e9:.1f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:.1f} MB"
