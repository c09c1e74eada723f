"""Near-duplicate images: the same picture resized, recompressed, recoloured or slightly cropped. No TensorFlow.

Two distinct files are one picture when both of these hold:

1. Their perceptual hashes (:func:`tlexp.data._inspect.perceptual_hash`) differ in at most
   :data:`HASH_BITS` of 64 bits. This finds the candidates without comparing every pair
   (:func:`hamming_pairs`).
2. Their 32 x 32 grayscale thumbnails differ by at most ``threshold``
   (:func:`pixel_difference`). The hash keeps only the signs of 64 low frequencies, so
   where images share a uniform background and a shape (clothes, product photos, X-rays,
   documents) different pictures share hashes; the pixels tell them apart.

Groups do not chain (:func:`representative_groups`): each group has a representative and
every member is confirmed close to it. Joining everything linked to anything (union-find)
made one group of 93 different shirts out of Fashion-MNIST, through chains of hashes a
few bits apart.

``scripts/bench_neardup.py`` measures what this finds on real images with planted copies
(recall per kind of copy) and without (false groups); docs/guide/data.md gives
the figures and the command.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

# Candidates: hashes at most this many bits apart. Resized and recompressed copies land within 6
# bits in 98-100 % of cases, crops far less often: see the module docstring's benchmark.
HASH_BITS = 6
# Brightness changes within this factor (either way) are matched before pixels are compared.
GAIN = 1.25
THUMB_SIDE = 32  # the thumbnail: THUMB_SIDE x THUMB_SIDE grayscale bytes, the image the hash is made of
_CHUNK = 8192  # candidate pairs compared at once (two float64 blocks of 64 MB)


@dataclass(frozen=True)
class Grouping:
    """Near-duplicate groups of ``n`` distinct images.

    Attributes:
        representative: int array, shape (n,): index of each image's group representative
            (its own index for a representative and for an image in no group).
        bits: int array, shape (n,): hash bits between each image and its representative.
        difference: float array, shape (n,): :func:`pixel_difference` to the representative.
    """

    representative: np.ndarray
    bits: np.ndarray
    difference: np.ndarray


def near_duplicate_groups(hashes: np.ndarray, thumbs: np.ndarray, threshold: float) -> Grouping:
    """Group distinct images into near-duplicate groups around representatives.

    Args:
        hashes: uint64 array, shape (n,): 64-bit perceptual hashes.
        thumbs: uint8 array, shape (n, THUMB_SIDE**2): grayscale thumbnails, row-major.
        threshold: largest :func:`pixel_difference` between a member and its representative.

    Returns:
        The :class:`Grouping`; ties in choosing representatives go to the lower index, so
        the same inputs give the same groups.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    thumbs = np.asarray(thumbs, dtype=np.uint8)
    n = len(hashes)
    if thumbs.shape != (n, THUMB_SIDE * THUMB_SIDE):
        raise ValueError(
            f"The 'thumbs' parameter must have shape ({n}, {THUMB_SIDE * THUMB_SIDE}). Got {thumbs.shape} instead."
        )
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"The 'threshold' parameter must be a float in [0, 1]. Got {threshold!r} instead.")
    kept = [np.empty((0, 2), dtype=np.int64)]
    for pairs in _candidates(hashes):
        d = pixel_difference(thumbs[pairs[:, 0]], thumbs[pairs[:, 1]])
        kept.append(pairs[d <= threshold])
    rep = representative_groups(n, np.concatenate(kept))
    bits = _popcount(hashes ^ hashes[rep]).astype(np.int64)
    difference = np.zeros(n)
    members = np.flatnonzero(rep != np.arange(n))
    if len(members):
        difference[members] = pixel_difference(thumbs[members], thumbs[rep[members]])
    return Grouping(rep, bits, difference)


def pixel_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How far apart two thumbnails are, after the best brightness match within :data:`GAIN`.

    For thumbnails ``x`` and ``y`` (pixel values as vectors), the difference of ``x`` to
    ``y`` is ``|g x - y| / |y|`` with the gain ``g = <x, y> / <x, x>`` clipped to
    ``[1 / GAIN, GAIN]``: 0 for the same pixels, or the same pixels brighter or darker
    within that factor (a brightness change multiplies every pixel); about 0.02-0.1 for a
    resized or recompressed copy; 0.1-0.5 for a different picture of the same kind of
    thing. Unlike a correlation it is not blind to contrast, so a light and a dark shirt
    of the same cut stay apart. Symmetric: the larger of the two directions.

    Args:
        a, b: uint8 or float arrays, shape (m, k): m pairs of thumbnails.

    Returns:
        float array, shape (m,).
    """
    a = np.asarray(a, dtype=np.float64)  # float64: the expanded residual below cancels digits
    b = np.asarray(b, dtype=np.float64)
    return np.maximum(_one_way(a, b), _one_way(b, a))


def _one_way(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    xx, yy, xy = (x * x).sum(axis=1), (y * y).sum(axis=1), (x * y).sum(axis=1)
    g = np.clip(np.divide(xy, xx, out=np.ones_like(xx), where=xx > 0), 1 / GAIN, GAIN)
    # |g x - y|^2 expanded, so no (m, k) temporary beyond the inputs; clipped at 0 against rounding.
    residual = np.sqrt(np.maximum(g * g * xx - 2 * g * xy + yy, 0.0))
    both_black = (xx == 0) & (yy == 0)
    return np.where(both_black, 0.0, np.divide(residual, np.sqrt(yy), out=np.full_like(yy, np.inf), where=yy > 0))


def representative_groups(n: int, pairs: np.ndarray) -> np.ndarray:
    """Groups around representatives: a greedy star cover of the graph of confirmed pairs.

    Images are taken in order of how many others they are confirmed close to (most
    first, then by index). An image not yet in a group becomes a representative, and
    its confirmed neighbours not yet in a group join it. So every member is close to
    its representative, and a chain a - b - c with a and c far apart does not become one
    group unless b is the representative of both.

    Args:
        pairs: int array, shape (m, 2): confirmed pairs.

    Returns:
        int64 array, shape (n,): the representative of each image (itself where alone).
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    both = np.concatenate([pairs, pairs[:, ::-1]])
    both = both[np.argsort(both[:, 0], kind="stable")]
    degree = np.bincount(both[:, 0], minlength=n)
    start = np.concatenate([[0], np.cumsum(degree)])
    rep = np.full(n, -1, dtype=np.int64)
    for i in np.lexsort((np.arange(n), -degree)).tolist():
        if rep[i] >= 0:
            continue
        rep[i] = i
        neighbours = both[start[i] : start[i + 1], 1]
        free = neighbours[rep[neighbours] < 0]
        rep[free] = i
    return rep


def _candidates(hashes: np.ndarray) -> Iterator[np.ndarray]:
    """Pairs ``i < j`` with hashes within :data:`HASH_BITS`, in blocks of at most ``_CHUNK``.

    Equal hashes are expanded from the distinct ones, so k images sharing a hash cost
    k^2 / 2 pairs once, not once per band of :func:`hamming_pairs`.
    """
    unique, inverse = np.unique(hashes, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    counts = np.bincount(inverse, minlength=len(unique))
    members = np.split(order, np.cumsum(counts)[:-1])  # members[u]: images whose hash is unique[u], ascending
    for m in members:
        if len(m) > 1:
            i, j = np.triu_indices(len(m), 1)
            yield from _blocks(np.stack([m[i], m[j]], axis=1))
    linked = hamming_pairs(unique, HASH_BITS)
    single = (counts[linked[:, 0]] == 1) & (counts[linked[:, 1]] == 1)
    first = order[np.cumsum(counts) - counts]  # the one image of each hash held by one image
    yield from _blocks(np.sort(first[linked[single]], axis=1))
    for u, v in linked[~single].tolist():  # hashes shared by several images: every combination
        grid = np.stack(np.meshgrid(members[u], members[v], indexing="ij"), axis=-1).reshape(-1, 2)
        yield from _blocks(np.sort(grid, axis=1))


def _blocks(pairs: np.ndarray) -> Iterator[np.ndarray]:
    for start in range(0, len(pairs), _CHUNK):
        yield pairs[start : start + _CHUNK]


def hamming_pairs(hashes: np.ndarray, max_distance: int) -> np.ndarray:
    """Pairs of 64-bit hashes that differ in at most ``max_distance`` bits, without comparing all pairs.

    Multi-index hashing: the 64 bits are cut into ``max_distance + 1`` bands; two hashes
    within ``max_distance`` bits agree exactly on at least one band (pigeonhole), so only
    hashes sharing a band value are compared. For photos (about half the bits differ
    between unrelated ones) that is a few hundred comparisons per hash instead of n.

    Args:
        hashes: uint64 array, shape (n,).
        max_distance: largest Hamming distance linked, 0 to 63.

    Returns:
        int64 array, shape (m, 2): index pairs ``i < j``, sorted.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    if not 0 <= max_distance < 64:
        raise ValueError(f"The 'max_distance' parameter must be an int in [0, 63]. Got {max_distance!r} instead.")
    found = [np.empty((0, 2), dtype=np.int64)]
    edges = np.linspace(0, 64, max_distance + 2).astype(int)
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        band = (hashes >> np.uint64(lo)) & np.uint64((1 << (hi - lo)) - 1)
        order = np.argsort(band, kind="stable")
        cuts = np.flatnonzero(np.diff(band[order])) + 1
        for members in np.split(order, cuts):
            if len(members) > 1:
                found.append(_close_pairs(hashes, np.sort(members), max_distance))
    pairs = np.concatenate(found)
    return np.unique(pairs, axis=0) if len(pairs) else pairs


def _close_pairs(hashes: np.ndarray, members: np.ndarray, max_distance: int, chunk: int = 512) -> np.ndarray:
    """Pairs ``i < j`` of ``members`` (sorted) within ``max_distance`` bits; memory bounded by ``chunk`` rows."""
    out = []
    h = hashes[members]
    for start in range(0, len(members), chunk):
        rows = h[start : start + chunk]
        close = _popcount(rows[:, None] ^ h[None, :]) <= max_distance
        i, j = np.nonzero(close)
        i = i + start
        keep = j > i
        out.append(np.stack([members[i[keep]], members[j[keep]]], axis=1))
    return np.concatenate(out)


_BYTE_BITS = np.array([bin(b).count("1") for b in range(256)], dtype=np.uint8)


def _popcount(x: np.ndarray) -> np.ndarray:
    """Set bits of each uint64, same shape (NumPy >= 2.0 has it built in)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    return _BYTE_BITS[x.view(np.uint8)].reshape(*x.shape, 8).sum(axis=-1)
