"""Decode one image file the one way tlexp does, everywhere. No TensorFlow.

The data check, the decoded-image cache, training and ``tlexp predict`` all call
:func:`load_image`, so a file the check passes is a file training can read, and a
prediction sees the same pixels training saw.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"})


def is_image_name(name: str) -> bool:
    """Whether a file name is one tlexp reads: an image extension (any case), not hidden."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def load_image(path: str | os.PathLike, size: int) -> np.ndarray:
    """Decode one image file to RGB uint8, shape (size, size, 3).

    EXIF orientation is applied and any mode (grayscale, CMYK, palette, RGBA) becomes
    RGB, so every file yields the same kind of array. Raises on an undecodable file.
    """
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        img.draft("RGB", (size, size))  # JPEG: decode at a reduced scale when that is enough
        img = ImageOps.exif_transpose(img)
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            # 16-bit (or 32-bit int) gray: Pillow's convert("RGB") clips at 255, which turns
            # a real 16-bit photo nearly white; scale the range down instead.
            wide = np.asarray(img, dtype=np.float64)
            img = Image.fromarray(np.clip(wide / (257.0 if wide.max() > 255 else 1.0), 0, 255).astype(np.uint8), "L")
        img = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(img, dtype=np.uint8)


class Decoder:
    """Decodes files by index; remembers which failed and why (thread-safe)."""

    def __init__(self, root: Path, paths: Sequence[str], size: int):
        self.root, self.paths, self.size = root, list(paths), size
        self.failed: dict[int, str] = {}
        self._lock = threading.Lock()

    def __call__(self, index: np.int64) -> tuple[np.ndarray, np.bool_]:
        try:
            return load_image(self.root / self.paths[int(index)], self.size), np.bool_(True)
        except Exception as e:
            with self._lock:
                self.failed[int(index)] = f"{type(e).__name__}: {e}"[:200]
            return np.zeros((self.size, self.size, 3), np.uint8), np.bool_(False)
