"""Decoded-image cache: every image decoded and resized once per (dataset, image size).

Decoding JPEGs is the expensive part of feeding a model; a sweep of 12 cells x 2 epochs
would decode each image ~40 times. Here each usable image is decoded once into a
compact uint8 array on disk (``images.u8``, shape (n, size, size, 3)), memory-mapped by
every later run. The cache key hashes the image size, the decoder version, the Pillow and
NumPy versions and every file's path and content hash, so any change to the dataset, to
the resize settings or to the libraries that make the pixels selects a new cache and
never reads a stale one.

No lock files: a cache is built in a private temporary folder and renamed into place
when complete. A build killed half-way leaves only a temporary folder that nobody reads
(and that a later build removes once it is old); two runs building the same cache at
once both succeed, and the second rename simply finds the first one's cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from tlexp.data._decode import load_image
from tlexp.files import build_folder, reserve

log = logging.getLogger("tlexp")

DECODER_VERSION = 1  # bump when load_image's output changes: old caches are then never used
_STALE_TMP_SECONDS = 24 * 3600


def decoder_versions() -> dict[str, str | int]:
    """What shapes a decoded image besides the file: tlexp's decoder, Pillow (JPEG decoding,
    draft scaling, resampling) and NumPy (the 16-bit scaling, the array conversion)."""
    import PIL

    return {"decoder": DECODER_VERSION, "pillow": PIL.__version__, "numpy": np.__version__}


def cache_key(files: Sequence[tuple[str, str]], size: int) -> str:
    """Key of a cache: image size, :func:`decoder_versions` and every (path, content hash)."""
    h = hashlib.sha256(json.dumps([decoder_versions(), size, sorted(files)], sort_keys=True).encode())
    return h.hexdigest()[:24]


def image_key(paths: Sequence[str], sha256: Sequence[str], size: int) -> str:
    """Identity of the images in row order (content hashes, so a changed file is a new key;
    :func:`decoder_versions`, so pixels another Pillow or NumPy decoded are too)."""
    pairs = list(zip(paths, sha256, strict=True))
    return hashlib.sha256(json.dumps([decoder_versions(), size, pairs], sort_keys=True).encode()).hexdigest()


class ImageCache:
    """A finished cache, memory-mapped read-only.

    Attributes:
        images: uint8 array, shape (n, size, size, 3).
        ok: bool array, shape (n,): False where the file failed to decode when the
            cache was built (it changed after the data check).
        index: relative path -> row.
    """

    def __init__(self, folder: Path):
        meta = json.loads((folder / "index.json").read_text())
        self.folder, self.size = folder, int(meta["size"])
        self.paths: list[str] = meta["paths"]
        self.errors: dict[str, str] = meta["errors"]
        self.index = {p: i for i, p in enumerate(self.paths)}
        n = len(self.paths)
        self.images = np.memmap(folder / "images.u8", dtype=np.uint8, mode="r", shape=(n, self.size, self.size, 3))
        self.ok = np.array([p not in self.errors for p in self.paths], dtype=bool)

    @property
    def nbytes(self) -> int:
        return int(self.images.size)


def ensure_image_cache(
    root: Path,
    files: Sequence[tuple[str, str]],
    size: int,
    cache_dir: Path,
    *,
    workers: int | None = None,
    progress: bool = False,
) -> ImageCache:
    """Return the cache of ``files`` at ``size``, building it first if needed.

    Args:
        root: dataset folder.
        files: (path relative to root, content sha256) of every usable image.
        size: image size of the run.
        cache_dir: tlexp's cache folder (the cache goes in ``cache_dir/images/<key>``).
    """
    key = cache_key(files, size)
    parent = Path(cache_dir) / "images"
    final = parent / key
    if (final / "index.json").is_file():
        log.info("data: decoded-image cache hit (%d images at %d px) in %s", len(files), size, final)
        return ImageCache(final)
    t0 = time.perf_counter()
    with build_folder(final, "index.json") as tmp:
        paths = [p for p, _ in sorted(files)]
        shape = (len(paths), size, size, 3)
        reserve(
            tmp / "images.u8",
            int(np.prod(shape)),
            what="the decoded-image cache",
            fix="point data.cache_dir at a disk with room, or set data.decoded_cache=false (decode every epoch)",
            where=parent,
        )
        images = np.memmap(tmp / "images.u8", dtype=np.uint8, mode="r+", shape=shape)
        errors: dict[str, str] = {}
        lock = threading.Lock()

        def decode(i: int) -> None:
            try:
                images[i] = load_image(root / paths[i], size)
            except Exception as e:
                with lock:
                    errors[paths[i]] = f"{type(e).__name__}: {e}"[:200]

        rows = range(len(paths))
        with ThreadPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
            it = pool.map(decode, rows)
            if progress:
                from tqdm.auto import tqdm

                it = tqdm(it, total=len(paths), desc=f"decode {size}px", unit="img", leave=False)
            for _ in it:
                pass
        images.flush()
        (tmp / "index.json").write_text(
            json.dumps(
                {"size": size, "paths": paths, "errors": errors, "versions": decoder_versions(), "root": str(root)}
            )
        )
    cache = ImageCache(final)
    log.info(
        "data: decoded %d images at %d px into a %.1f MB cache in %.1fs (%s)",
        len(files),
        size,
        cache.nbytes / 1e6,
        time.perf_counter() - t0,
        final,
    )
    return cache


class CachedDecoder:
    """Same interface as :class:`tlexp.data.Decoder`, reading rows of an ImageCache."""

    def __init__(self, cache: ImageCache, paths: Sequence[str]):
        self.cache, self.size = cache, cache.size
        self.rows = np.array([cache.index[p] for p in paths], dtype=np.int64)
        self.failed: dict[int, str] = {i: cache.errors[p] for i, p in enumerate(paths) if p in cache.errors}

    def __call__(self, index: np.int64) -> tuple[np.ndarray, np.bool_]:
        row = self.rows[int(index)]
        return np.array(self.cache.images[row]), np.bool_(self.cache.ok[row])
