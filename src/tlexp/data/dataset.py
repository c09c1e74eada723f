"""Find images and labels on disk and split them. No TensorFlow.

Two layouts are understood:

* ``folders``: ``root/<class>/*.jpg`` (any number of classes; e.g. ``PetImages/Cat``).
* ``flat``: the Kaggle dogs-vs-cats ``train`` folder, ``root/cat.0.jpg``; the label is
  the file name before the first dot.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tlexp.data.decode import IMAGE_EXTENSIONS, is_image_name
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

    Args:
        root: dataset folder.
        layout: ``"auto"``, ``"folders"`` or ``"flat"``.

    Raises:
        DataError: no images, a single class, or an ambiguous layout.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"Dataset folder not found: '{root}'. Set data.root to the folder holding the images.")
    entries = list(os.scandir(root))
    top_images = sorted(e.name for e in entries if _is_file(e) and is_image_name(e.name))
    subdirs = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    if layout == "auto":
        class_dirs = [d for d in subdirs if has_images(root / d)]
        if top_images and class_dirs:
            raise DataError(
                f"'{root}' holds images both directly ({len(top_images)}) and in sub-folders "
                f"({', '.join(class_dirs[:5])}); set data.layout to 'flat' or 'folders' to say which to use."
            )
        layout = "flat" if top_images else "folders"

    if layout == "flat":
        paths = top_images
        names = [p.split(".", 1)[0] for p in paths]
        undotted = [p for p in paths if "." not in Path(p).stem]
        if undotted:
            raise DataError(
                f"Flat layout needs file names like 'cat.0.jpg' (label before the first dot), but "
                f"{len(undotted)} file(s) have none, e.g. '{undotted[0]}'. Use class sub-folders instead."
            )
    else:
        paths, names = [], []
        for d in subdirs:
            for dirpath, dirnames, filenames in os.walk(root / d):  # followlinks=False: no symlink loops
                dirnames[:] = sorted(x for x in dirnames if not x.startswith("."))
                rel = Path(dirpath).relative_to(root)
                for f in sorted(filenames):
                    if is_image_name(f):
                        paths.append((rel / f).as_posix())
                        names.append(d)
    if not paths:
        raise DataError(
            f"No images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found in '{root}' with layout '{layout}'. "
            "Expected class sub-folders (root/cat/*.jpg) or Kaggle-style files (root/cat.0.jpg)."
        )
    class_names = sorted(set(names))
    if len(class_names) < 2:
        raise DataError(
            f"Found only one class ({class_names[0]!r}) in '{root}' (layout '{layout}'); "
            "a classifier needs at least two. Check data.root."
        )
    index = {c: i for i, c in enumerate(class_names)}
    order = np.argsort(paths, kind="stable")
    paths = [paths[i] for i in order]
    labels = np.array([index[names[i]] for i in order], dtype=np.int64)
    return Dataset(root=root.resolve(), layout=layout, class_names=class_names, paths=paths, labels=labels)


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


def _is_file(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()
    except OSError:  # a symlink loop: not a usable file (the data check reports it)
        return False


def has_images(folder: Path) -> bool:
    """Whether any file below ``folder`` is an image by name (layout detection)."""
    return any(any(is_image_name(f) for f in files) for _, _, files in os.walk(folder))
