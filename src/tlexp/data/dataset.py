"""The images of a dataset and their labels, and the seeded split. No TensorFlow.

The files come from :mod:`tlexp.data.scan`, which explains the two layouts (``folders``:
``root/<class>/*.jpg``; ``flat``: Kaggle's ``root/cat.0.jpg``).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tlexp.data.scan import scan_dataset, warn_unlabelled
from tlexp.errors import DataError

SPLITS = ("train", "val", "test")


@dataclass
class Dataset:
    """The images found under ``root``.

    Attributes:
        root: the dataset folder (absolute).
        layout: ``"folders"`` or ``"flat"``.
        class_names: sorted class names; a label is an index into this list.
        paths: image paths relative to ``root``, shape (n,), sorted.
        labels: int array, shape (n,).
        split: array of ``"train"``/``"val"``/``"test"``, shape (n,) (after :func:`assign_splits`).
    """

    root: Path
    layout: str
    class_names: list[str]
    paths: list[str]
    labels: np.ndarray
    split: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per split and class, e.g. ``{"train": {"cat": 800, "dog": 800}, ...}``."""
        out = {}
        for s in SPLITS:
            c = Counter(self.labels[self.split == s].tolist())
            out[s] = {name: int(c.get(i, 0)) for i, name in enumerate(self.class_names)}
        return out

    def indices(self, split: str) -> np.ndarray:
        """Indices (into ``paths``) of one split, in file order."""
        return np.flatnonzero(self.split == split)


def discover(root: str | os.PathLike, layout: str = "auto") -> Dataset:
    """List the images under ``root`` and their labels. Decodes nothing.

    The files are those the data check lists (:func:`tlexp.data.scan.scan_dataset`); flat-layout
    files without a label (``img001.jpg`` beside ``cat.0.jpg``) are left out with a warning.

    Args:
        root: dataset folder.
        layout: ``"auto"``, ``"folders"`` or ``"flat"``.

    Raises:
        ValueError: a bad ``layout``.
        DataError: no images, none with a label, a single class, or an ambiguous layout.
    """
    found = scan_dataset(root, layout)
    root, layout = found.root, found.layout
    unlabelled = found.unlabelled()
    if len(unlabelled) == len(found.files):
        raise DataError(
            f"None of the {len(unlabelled)} image file(s) in '{root}' has a label (e.g. '{unlabelled[0]}'): the "
            "flat layout needs names like 'cat.0.jpg' (label before the first dot). Rename them or use class "
            "sub-folders (root/cat/*.jpg)."
        )
    warn_unlabelled(root, unlabelled, len(found.files))
    class_names = found.class_names
    if len(class_names) < 2:
        raise DataError(
            f"Found only one class ({class_names[0]!r}) in '{root}' (layout '{layout}'); "
            "a classifier needs at least two. Check data.root."
        )
    index = {c: i for i, c in enumerate(class_names)}
    labelled = [c for c in found.files if c.label is not None]  # sorted by path, as scanned
    return Dataset(
        root=root,
        layout=layout,
        class_names=class_names,
        paths=[c.rel for c in labelled],
        labels=np.array([index[c.label] for c in labelled], dtype=np.int64),
    )


def assign_splits(
    ds: Dataset,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    limit_per_class: int | None = None,
    groups: np.ndarray | None = None,
) -> Dataset:
    """Stratified, seeded, group-aware train/val/test split (optionally of a per-class subset).

    Files of one group (identical or near-identical images, see :func:`connected_groups`)
    always land in the same split, so no image is trained on and tested on. Each class
    is split on its own: its files are shuffled by a generator seeded with (seed, class)
    and walked in that order; each group not yet placed goes to the first of val and
    test that still has room for all of its files in this class (the room is
    ``round(n * fraction)``, at least 1), else to train. Val and test thus never exceed
    their share (a group too big for the room left goes on, and the next files fill
    it); without duplicates this is exactly the plain stratified split. A group with
    files in several classes is placed by the first class that meets it; its files in
    the other classes follow it there.

    The result depends only on the sorted file list, the groups (made from content
    hashes), the fractions and the seed, so two runs with the same data and seed use
    identical images in every split.

    Args:
        ds: the dataset (``paths`` sorted).
        limit_per_class: keep at most this many files per class: whole groups in the
            shuffled order, skipping one that would exceed the limit.
        groups: group id per file, int array of shape (n,) (files with equal ids are one
            group); None = every file is a group of its own.

    Returns:
        A new Dataset holding only the selected images, with ``split`` filled in.

    Raises:
        ValueError: ``groups`` of the wrong shape.
        DataError: a class too small for every split to get at least one image.
    """
    n_files = len(ds.paths)
    groups = np.arange(n_files) if groups is None else np.asarray(groups)
    if groups.shape != (n_files,):
        raise ValueError(
            f"The 'groups' parameter must have one id per file, shape ({n_files},). Got shape {groups.shape} instead."
        )
    split = np.full(n_files, "", dtype=object)  # "" = not selected
    placed: dict[int, str] = {}  # group -> split
    chosen: set[int] = set()  # groups selected under limit_per_class
    for c, name in enumerate(ds.class_names):
        idx = np.flatnonzero(ds.labels == c)
        # One generator per class, seeded by (seed, class): adding a class elsewhere does not
        # reshuffle this one.
        rng = np.random.default_rng([seed, c])
        idx = idx[rng.permutation(len(idx))]
        if limit_per_class is not None:
            idx = _limit(idx, groups, limit_per_class, chosen)
        n = len(idx)
        n_val = max(1, round(n * val_fraction))
        n_test = max(1, round(n * test_fraction))
        if n - n_val - n_test < 1:
            raise DataError(
                f"Class {name!r} has {n} image(s): too few for non-empty train, val and test splits "
                f"(val_fraction={val_fraction}, test_fraction={test_fraction}). Add images or raise "
                "data.limit_per_class."
            )
        in_class = Counter(groups[idx].tolist())
        room = {"val": n_val, "test": n_test}
        for i in idx:  # files of groups another class placed follow them
            if (s := placed.get(int(groups[i]))) is not None:
                split[i] = s
                room[s] = room.get(s, 0) - 1
        for i in idx:
            g = int(groups[i])
            if g not in placed:
                k = in_class[g]
                placed[g] = s = next((s for s in ("val", "test") if room[s] >= k), "train")
                room[s] = room.get(s, 0) - k
            split[i] = placed[g]
        got = Counter(split[idx].tolist())
        if min(got[s] for s in SPLITS) < 1:
            raise DataError(
                f"Class {name!r} has {n} image(s) in {len(in_class)} group(s) of identical or near-identical "
                f"images: too few for non-empty train, val and test splits without splitting a group "
                f"(val_fraction={val_fraction}, test_fraction={test_fraction}; train/val/test would get "
                f"{got['train']}/{got['val']}/{got['test']}). Add images or raise the fractions."
            )
    keep = np.flatnonzero(split != "")  # file order
    return Dataset(
        root=ds.root,
        layout=ds.layout,
        class_names=ds.class_names,
        paths=[ds.paths[i] for i in keep],
        labels=ds.labels[keep],
        split=split[keep],
    )


def _limit(idx: np.ndarray, groups: np.ndarray, limit: int, chosen: set[int]) -> np.ndarray:
    """At most ``limit`` of the shuffled files ``idx``: whole groups in order (those another
    class chose first, then each that still fits); updates ``chosen``."""
    in_class = Counter(groups[idx].tolist())
    taken = {g for g in in_class if g in chosen}
    budget = limit - sum(in_class[g] for g in taken)
    for g in groups[idx].tolist():
        if g not in taken and in_class[g] <= budget:
            taken.add(g)
            budget -= in_class[g]
    chosen |= taken
    return idx[np.isin(groups[idx], list(taken))]


def connected_groups(n: int, pairs: np.ndarray) -> np.ndarray:
    """Group id of each of ``n`` items linked by ``pairs``: the smallest index of its component.

    Args:
        pairs: int array, shape (m, 2): items linked (identical or near-identical images).

    Returns:
        int64 array, shape (n,); items with equal ids are connected, directly or through others.
    """
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]  # path halving keeps the trees flat
            i = parent[i]
        return i

    for a, b in np.asarray(pairs, dtype=np.int64).reshape(-1, 2).tolist():
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([root(i) for i in range(n)], dtype=np.int64)


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
