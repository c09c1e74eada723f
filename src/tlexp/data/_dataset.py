"""The images of a dataset and their labels, and the seeded split. No TensorFlow.

The files come from :mod:`tlexp.data._scan`, which explains the two layouts (``folders``:
``root/<class>/*.jpg``; ``flat``: Kaggle's ``root/cat.0.jpg``).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tlexp.data._scan import scan_dataset, warn_unlabelled
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

    The files are those the data check lists (:func:`tlexp.data._scan.scan_dataset`); flat-layout
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

    Files of one group (identical or near-identical images) always land in the same
    split, so no picture is trained on and tested on. Each class is split on its own:
    its groups, not its files, are shuffled by a generator seeded with (seed, class), so
    a group of s files is no likelier to land in val or test than s single files. The
    shuffled groups fill val up to ``round(n * val_fraction)`` files (at least 1), then
    test up to ``round(n * test_fraction)``, and the rest is train. The group that would
    cross a split's size goes in when that leaves the split nearer its size than without
    it (else the split is full), so each split is within half a group of its size.
    Without duplicates this is exactly the plain stratified split. A group with files in
    several classes is placed by the first class that meets it; its files in the other
    classes count towards the split it went to there.

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
        ids, sizes = _shuffled_groups(groups[idx], seed, c)
        if limit_per_class is not None:
            ids = _limit(ids, sizes, limit_per_class, chosen)
        n = sum(sizes[g] for g in ids)
        _fill(ids, sizes, _targets(name, n, val_fraction, test_fraction), placed)
        member = np.isin(groups[idx], ids)
        split[idx[member]] = [placed[int(g)] for g in groups[idx[member]]]
        got = Counter(split[idx[member]].tolist())
        if min(got[s] for s in SPLITS) < 1:
            raise DataError(
                f"Class {name!r} has {n} image(s) in {len(ids)} group(s) of identical or near-identical "
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


def split_size(n: int, fraction: float) -> int:
    """The files a split asks of a class of ``n`` files: ``round(n * fraction)``, at least 1."""
    return max(1, round(n * fraction))


def _targets(name: str, n: int, val_fraction: float, test_fraction: float) -> dict[str, int]:
    """The val and test sizes of a class of ``n`` files (:func:`split_size`)."""
    target = {"val": split_size(n, val_fraction), "test": split_size(n, test_fraction)}
    if n - target["val"] - target["test"] < 1:
        raise DataError(
            f"Class {name!r} has {n} image(s): too few for non-empty train, val and test splits "
            f"(val_fraction={val_fraction}, test_fraction={test_fraction}). Add images or raise "
            "data.limit_per_class."
        )
    return target


def _shuffled_groups(groups: np.ndarray, seed: int, c: int) -> tuple[list[int], dict[int, int]]:
    """One class's groups (``groups``: the group of each of its files, in file order):
    their ids in the order of their first file, shuffled as units, and their sizes.

    One generator per class, seeded by (seed, class): adding a class elsewhere does not
    reshuffle this one. Without duplicates this is the plain shuffle of the class's files.
    """
    ids, first, sizes = np.unique(groups, return_index=True, return_counts=True)
    order = np.argsort(first)[np.random.default_rng([seed, c]).permutation(len(ids))]
    return ids[order].tolist(), dict(zip(ids.tolist(), sizes.tolist(), strict=True))


def _fill(ids: list[int], sizes: dict[int, int], target: dict[str, int], placed: dict[int, str]) -> None:
    """Place one class's groups (``ids`` in shuffled order, ``sizes`` their files in this class):
    val, then test, up to their ``target`` sizes; the rest to train. Updates ``placed``."""
    have = dict.fromkeys(target, 0)
    for g in ids:  # groups another class placed count where they went
        if (s := placed.get(g)) in have:
            have[s] += sizes[g]
    full = {s: have[s] >= target[s] for s in target}
    for g in ids:
        if g in placed:
            continue
        k = sizes[g]
        placed[g] = "train"
        for s in ("val", "test"):
            if full[s]:
                continue
            short = target[s] - have[s]
            if k <= short or (k - short <= short):  # fits, or overshoots by less than it would leave short
                placed[g] = s
                have[s] += k
                full[s] = have[s] >= target[s]
                break
            if have[s]:  # it would overshoot by more: the split is as near its size as it gets
                full[s] = True
            # an empty split stays open for a smaller group: every split needs a file


def _limit(ids: list[int], sizes: dict[int, int], limit: int, chosen: set[int]) -> list[int]:
    """At most ``limit`` files of one class: whole groups in the shuffled order ``ids`` (those
    another class chose first, then each that still fits); updates ``chosen``."""
    taken = {g for g in ids if g in chosen}
    budget = limit - sum(sizes[g] for g in taken)
    for g in ids:
        if g not in taken and sizes[g] <= budget:
            taken.add(g)
            budget -= sizes[g]
    chosen |= taken
    return [g for g in ids if g in taken]
