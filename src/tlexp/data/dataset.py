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
    ds: Dataset, val_fraction: float, test_fraction: float, seed: int, limit_per_class: int | None = None
) -> Dataset:
    """Stratified, seeded train/val/test split (optionally of a per-class subset).

    The result depends only on the sorted file list, the fractions and the seed, so two
    runs with the same data and seed use identical images in every split.

    Returns:
        A new Dataset holding only the selected images, with ``split`` filled in.

    Raises:
        DataError: a class too small for every split to get at least one image.
    """
    keep, split = [], []
    for c, name in enumerate(ds.class_names):
        idx = np.flatnonzero(ds.labels == c)
        # One generator per class, seeded by (seed, class): adding a class elsewhere does not
        # reshuffle this one.
        rng = np.random.default_rng([seed, c])
        idx = idx[rng.permutation(len(idx))]
        if limit_per_class is not None:
            idx = idx[:limit_per_class]
        n = len(idx)
        n_val = max(1, round(n * val_fraction))
        n_test = max(1, round(n * test_fraction))
        if n - n_val - n_test < 1:
            raise DataError(
                f"Class {name!r} has {n} image(s): too few for non-empty train, val and test splits "
                f"(val_fraction={val_fraction}, test_fraction={test_fraction}). Add images or raise "
                "data.limit_per_class."
            )
        keep.append(idx)
        split += ["val"] * n_val + ["test"] * n_test + ["train"] * (n - n_val - n_test)
    keep_all = np.concatenate(keep)
    order = np.argsort(keep_all, kind="stable")  # back to file order
    keep_all = keep_all[order]
    return Dataset(
        root=ds.root,
        layout=ds.layout,
        class_names=ds.class_names,
        paths=[ds.paths[i] for i in keep_all],
        labels=ds.labels[keep_all],
        split=np.array(split, dtype=object)[order],
    )
