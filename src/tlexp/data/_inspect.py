"""The verdict on one file: read it, hash it, decode it fully, say what it is. No TensorFlow.

The user's file is only ever opened for reading. A file passes only if training's own
decoder (:func:`tlexp.data._decode.load_image`) reads the same bytes. A usable file also
gets a perceptual hash (:func:`perceptual_hash`), so resized or recompressed copies of
one photo can be found without decoding anything again.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tlexp.data._decode import load_image
from tlexp.data._neardup import THUMB_SIDE

PHASH_SIZE = THUMB_SIDE  # pixels of the square image the hash and the thumbnail are made of


@dataclass
class FileVerdict:
    """What the check found for one file.

    Attributes:
        path: relative to the dataset root, posix separators.
        label: class name, or None (flat layout, a name without ``class.`` prefix).
        status: ``"good"``, ``"converted"`` or ``"rejected"``.
        detail: ``""`` when good; the conversions (joined by ``"; "``) when converted; the
            reason, starting with one of :data:`REJECT_REASONS`, when rejected.
        size: bytes, -1 if unreadable.
        sha256: hex digest of the bytes, ``""`` if unreadable.
        width, height: pixels after EXIF orientation (0 when not decoded).
        mtime_ns, inode: of the file read (0 if unreadable); the cache key with ``size``.
        phash: 64-bit perceptual hash (:func:`perceptual_hash`) as 16 hex digits; ``""``
            when the file is rejected.
        thumb: :func:`thumbnail` bytes (1,024); ``b""`` when the file is rejected.
    """

    path: str
    label: str | None
    status: str
    detail: str
    size: int
    sha256: str
    width: int = 0
    height: int = 0
    mtime_ns: int = 0
    inode: int = 0
    phash: str = ""
    thumb: bytes = b""


_ORIENTATION = 0x0112  # EXIF tag
_SAME_FORMAT = {"MPO": "JPEG", "DIB": "BMP"}  # camera JPEGs open as MPO; both decode like their base
_MODE_NAMES = {
    "1": "1-bit",
    "L": "grayscale",
    "LA": "grayscale+alpha",
    "La": "grayscale+alpha",
    "P": "palette",
    "PA": "palette",
    "RGBA": "RGBA",
    "RGBa": "RGBA",
    "CMYK": "CMYK",
    "I;16": "16-bit",
    "I;16L": "16-bit",
    "I;16B": "16-bit",
    "I;16N": "16-bit",
    "I": "integer",
    "F": "float",
}


def check_file(root: Path, rel: str, label: str | None, min_side: int) -> FileVerdict:
    """Read, hash and inspect one file (read-only)."""
    try:
        # O_NONBLOCK: a FIFO named .jpg must not hang the check; no effect on regular files.
        fd = os.open(root / rel, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())  # before reading: a write during the read changes mtime after it
            if not stat.S_ISREG(st.st_mode):
                return FileVerdict(rel, label, "rejected", "unreadable: not a regular file", -1, "")
            data = f.read()
    except OSError as e:
        return FileVerdict(rel, label, "rejected", f"unreadable: {e.strerror or e}", -1, "")
    status, detail, width, height, small = _inspect(data, os.path.splitext(rel)[1].lower(), min_side)
    return FileVerdict(
        rel,
        label,
        status,
        detail,
        len(data),
        hashlib.sha256(data).hexdigest(),
        width,
        height,
        st.st_mtime_ns,
        st.st_ino,
        perceptual_hash(small) if small is not None else "",
        thumbnail(small) if small is not None else b"",
    )


def _inspect(data: bytes, ext: str, min_side: int) -> tuple[str, str, int, int, np.ndarray | None]:
    """Verdict of an image file's bytes: (status, detail, width, height, the image at 32 px or None)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        return "rejected", "empty", 0, 0, None
    notes = []
    try:
        with Image.open(io.BytesIO(data)) as img:
            expected = Image.registered_extensions().get(ext)
            if _SAME_FORMAT.get(img.format, img.format) != expected:
                notes.append(f"{img.format} named {ext}")
            if getattr(img, "is_animated", False):
                notes.append("animated (first frame used)")
            mode, orientation = img.mode, img.getexif().get(_ORIENTATION, 1)
            img.load()  # full decode: raises on truncated data (LOAD_TRUNCATED_IMAGES stays False)
            if mode != "RGB":
                # load_image scales a 16-bit range down to 8 bits (not clipped)
                notes.append(f"{_MODE_NAMES.get(mode, mode)}->RGB")
            if orientation in range(2, 9):
                notes.append("EXIF-rotated")
            width, height = ImageOps.exif_transpose(img).convert("RGB").size
        # Training's own decoder on the same bytes; its small output is what the hash is made of.
        small = load_image(io.BytesIO(data), PHASH_SIZE)
    except UnidentifiedImageError:
        return "rejected", f"not an image ({_sniff(data)})", 0, 0, None
    except Exception as e:
        msg = str(e)
        if isinstance(e, EOFError) or "truncated" in msg.lower():
            return "rejected", f"truncated: {msg}", 0, 0, None
        return "rejected", f"unsupported: cannot decode ({type(e).__name__}: {msg})"[:300], 0, 0, None
    if min(width, height) < min_side:
        return "rejected", f"too small ({width}x{height}; min_side is {min_side})", width, height, None
    return ("converted" if notes else "good"), "; ".join(notes), width, height, small


def _dct_matrix(n: int) -> np.ndarray:
    """DCT-II basis, shape (n, n): row k is cos(pi * k * (2i + 1) / 2n) over i (unnormalised)."""
    i = np.arange(n)
    return np.cos(np.pi * i[:, None] * (2 * i[None, :] + 1) / (2 * n))


_DCT_LOW = _dct_matrix(PHASH_SIZE)[:8]  # the 8 lowest frequencies, shape (8, 32)


def perceptual_hash(rgb: np.ndarray) -> str:
    """pHash of an image: 64 bits, as 16 hex digits.

    The algorithm of ``imagehash.phash`` (hash_size 8): grayscale (ITU-R 601 luma, as
    Pillow's ``convert("L")``), 32 x 32 pixels, 2-D DCT, the 8 x 8 lowest frequencies,
    each bit set where a coefficient is above their median. Resizing, recompressing and
    mild colour changes move few bits; different photos differ in about half of them.

    Written here in a few lines of NumPy rather than taken from ``imagehash``: that would
    add PyWavelets and SciPy's fftpack for one function, and decode each file again,
    while the check already holds the file decoded at 32 x 32 pixels by training's own
    decoder (EXIF orientation applied), so the hash costs microseconds.

    Args:
        rgb: uint8 array, shape (32, 32, 3) (:func:`tlexp.data._decode.load_image` at 32 px).
    """
    low = _DCT_LOW @ _luma(rgb) @ _DCT_LOW.T  # shape (8, 8)
    bits = (low > np.median(low)).ravel()
    return f"{int(np.packbits(bits).view('>u8')[0]):016x}"


def thumbnail(rgb: np.ndarray) -> bytes:
    """The grayscale thumbnail near-duplicates are confirmed with: 1,024 bytes, row-major.

    Args:
        rgb: uint8 array, shape (32, 32, 3), the image :func:`perceptual_hash` hashes.
    """
    return np.clip(np.rint(_luma(rgb)), 0, 255).astype(np.uint8).tobytes()


def _luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma, as Pillow's ``convert("L")``, float64 of shape (32, 32)."""
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def _sniff(data: bytes) -> str:
    """What a non-image file seems to be, for the rejection message."""
    head = data[:1024].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head:
        return "HTML"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "unknown format"
    return "text" if all(ch.isprintable() or ch.isspace() for ch in text) else "unknown format"
