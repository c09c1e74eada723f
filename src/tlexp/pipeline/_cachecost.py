"""Whether caching a frozen prefix pays, from measured figures.

Caching turns every later pass of an image through the frozen prefix into a read of its
activations from disk. On a CPU the prefix's convolutions are far slower than any disk;
on a fast GPU, reading 1.8 MB per image (VGG16's ``block3_pool`` at 224 px, float32)
can take longer than recomputing it. So the choice is made per cut from four figures:

* the bytes per image of the cut's activations (known from the model);
* the prefix's compute time per image on this device, measured on the run's own
  batches while the entry is built (and kept in the entry, for later reuse);
* the read and write rates of the cache's disk, measured once per process with a
  probe file (the read rate cold, i.e. past the page cache; warm where the entry fits
  in the memory the system has available, since the page cache then serves the epochs
  after the first);
* the passes the run makes over its images (epochs x (train + val), plus one
  prediction pass over every split).

Caching costs one build (compute + write) plus one read per pass; not caching costs one
prefix computation per pass. The smaller wins, and the decision is logged with its
figures. ``train.prefix_cache.enabled: true`` or ``false`` skips the figures.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PROBE_BYTES = 64 * 2**20
_rates: dict[int, tuple[float, float, float]] = {}  # st_dev -> (write, cold read, warm read) bytes/s


@dataclass(frozen=True)
class CacheCost:
    """The figures of one decision, and the decision.

    Attributes:
        n_images: rows of the entry (files in the dataset).
        bytes_per_image: activations of one image at the cut, as stored.
        compute_s: seconds per image of the whole prefix on this device (measured).
        build_s: seconds per image to make the entry (0 when it exists; the part of the
            prefix after a shallower entry when built from one).
        write_rate, read_rate: bytes/s of the cache's disk (read: cold or page cache).
        passes: passes over every image the run makes after the entry exists.
    """

    n_images: int
    bytes_per_image: int
    compute_s: float
    build_s: float
    write_rate: float
    read_rate: float
    read_from: str
    passes: float

    @property
    def cached_s(self) -> float:
        per_image = self.build_s + (self.bytes_per_image / self.write_rate if self.build_s else 0.0)
        return self.n_images * (per_image + self.passes * self.bytes_per_image / self.read_rate)

    @property
    def recompute_s(self) -> float:
        return self.n_images * self.passes * self.compute_s

    @property
    def pays(self) -> bool:
        return self.cached_s < self.recompute_s

    def describe(self) -> str:
        return (
            f"{self.bytes_per_image / 1e6:.3g} MB/image read at {self.read_rate / 1e9:.2g} GB/s ({self.read_from}) "
            f"= {1e3 * self.bytes_per_image / self.read_rate:.3g} ms/image against "
            f"{1e3 * self.compute_s:.3g} ms/image to compute the prefix; over {self.passes:.3g} passes of "
            f"{self.n_images} images: cached {self.cached_s:.3g} s (build included), "
            f"recomputed {self.recompute_s:.3g} s"
        )


def run_passes(epochs: int, n_train: int, n_val: int, n_files: int) -> float:
    """Passes over all ``n_files`` images a run makes through its model after the entry exists."""
    return (epochs * (n_train + n_val) + n_files) / max(n_files, 1)


def disk_rates(folder: Path) -> tuple[float, float, float]:
    """``(write, cold read, warm read)`` bytes/s of the file system holding ``folder``.

    Measured once per file system and process: a 64 MB probe file is written and synced,
    dropped from the page cache (``posix_fadvise``; where that is missing, or on a RAM
    file system, the cold figure is the page cache's) and read back twice, then removed.
    """
    folder.mkdir(parents=True, exist_ok=True)
    dev = folder.stat().st_dev
    if dev in _rates:
        return _rates[dev]
    import shutil
    import tempfile

    # Small beside the free space: the probe must never be what fills a disk.
    size = int(min(PROBE_BYTES, max(shutil.disk_usage(folder).free // 8, 2**20)))
    data = np.random.default_rng(0).bytes(size)
    buf = memoryview(bytearray(size))
    fd, name = tempfile.mkstemp(prefix=".probe-", dir=folder)
    try:
        t = time.perf_counter()
        with open(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        write = size / (time.perf_counter() - t)
        reads = []
        for drop in (True, False):
            with open(name, "rb", buffering=0) as f:
                if drop and hasattr(os, "posix_fadvise"):
                    os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
                t, got = time.perf_counter(), 0
                while got < size and (k := f.readinto(buf[got:])):
                    got += k
                reads.append(size / (time.perf_counter() - t))
    finally:
        os.unlink(name)
    _rates[dev] = (write, reads[0], reads[1])
    return _rates[dev]


def available_memory() -> int:
    """Bytes the system could give without swapping (``MemAvailable``); 0 if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def read_rate(folder: Path, entry_bytes: int) -> tuple[float, str]:
    """The rate an entry of ``entry_bytes`` is read at over a run, and where from.

    An entry that fits in half the available memory stays in the page cache after it is
    written (or first read): its epochs read at the warm rate. A bigger one is read
    from the disk every pass.
    """
    _, cold, warm = disk_rates(folder)
    if entry_bytes <= available_memory() // 2:
        return warm, "page cache"
    return cold, "disk"
