"""Rows of an array on disk, read and written by offset: what the activation cache streams from.

No memory map for training: a reader holds only the batches it asked for, so an entry
of tens of GB is trained on in the memory of a few batches, and the kernel (not the
process) decides what stays in the page cache.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np


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


def numpy_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes  # ships with TensorFlow

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)
