"""Walk a dataset folder once: its layout, the candidate image files and their labels. No TensorFlow.

This is the one walk behind both :func:`tlexp.data._dataset.discover` (paths and labels)
and :func:`tlexp.data._check.check_dataset` (which also needs the stat results and the
files that cannot be opened), so the two always agree on what the dataset holds.
No file is opened here.

Two layouts are understood:

* ``folders``: ``root/<class>/*.jpg`` (any number of classes, nested folders allowed).
* ``flat``: the Kaggle dogs-vs-cats ``train`` folder, ``root/cat.0.jpg``; the label is
  the file name before the first dot. A name without one (``img001.jpg``) has no label:
  the file is listed, but no class can use it.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tlexp.data._decode import IMAGE_EXTENSIONS, is_image_name
from tlexp.errors import DataError

log = logging.getLogger("tlexp")

LAYOUTS = ("auto", "flat", "folders")
NO_LABEL = "(no label)"  # the class of flat-layout files named without a 'class.' prefix


@dataclass
class Candidate:
    """A file with an image name.

    Attributes:
        rel: path relative to the dataset root, posix separators.
        label: class name, or None (flat layout, a name without ``class.`` prefix).
        st: ``os.stat`` of the file a symlink points to; None when that fails.
        error: set when the file cannot be opened at all (a broken symlink, a symlink loop,
            a FIFO): the reason, starting with ``"unreadable: "``. Such a file is never opened.
    """

    rel: str
    label: str | None
    st: os.stat_result | None
    error: str = ""


@dataclass
class Scan:
    """What one walk of a dataset folder found.

    Attributes:
        root: the dataset folder (absolute).
        layout: ``"folders"`` or ``"flat"`` (``"auto"`` resolved).
        files: one candidate per image-named file, sorted by ``rel``.
        ignored: per class (or :data:`NO_LABEL`), files skipped as not images (``Thumbs.db``,
            ``.txt``, hidden files).
    """

    root: Path
    layout: str
    files: list[Candidate]
    ignored: dict[str, int] = field(default_factory=dict)

    @property
    def class_names(self) -> list[str]:
        """Sorted labels of the candidates (unlabelled files make no class)."""
        return sorted({c.label for c in self.files if c.label is not None})

    def unlabelled(self) -> list[str]:
        """Paths of the candidates without a label (flat layout only)."""
        return [c.rel for c in self.files if c.label is None]


def require_folder(root: str | os.PathLike) -> Path:
    """``root`` as a Path, if it is a folder.

    Raises:
        DataError: ``root`` does not exist or is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"Dataset folder not found: '{root}' does not exist or is not a folder. Point data.root (or the ROOT "
            "of 'tlexp data check') at the folder that holds the images."
        )
    return root


def scan_dataset(root: str | os.PathLike, layout: str = "auto") -> Scan:
    """List the candidate image files under ``root`` with their labels and stat results.

    Args:
        root: dataset folder.
        layout: ``"auto"`` (flat if ``root`` holds image files directly, else folders),
            ``"folders"`` or ``"flat"``.

    Raises:
        ValueError: a bad ``layout``.
        DataError: ``root`` missing or unlistable, holding no image files, or holding
            images both directly and in sub-folders with ``layout="auto"``.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"The 'layout' parameter must be one of 'auto', 'flat', 'folders'. Got {layout!r} instead.")
    root = require_folder(root).resolve()
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as e:
        raise DataError(f"Cannot list the dataset folder '{root}': {e.strerror}. Check its permissions.") from None
    top, subdirs, others = [], [], []
    for e in entries:
        st, err = _stat(root / e.name)
        if st is not None and stat.S_ISDIR(st.st_mode):
            if not e.name.startswith("."):
                subdirs.append(e.name)
        elif st is not None and stat.S_ISREG(st.st_mode) and is_image_name(e.name):
            top.append(Candidate(e.name, None, st))
        else:
            others.append((e.name, st, err))
    if layout == "auto":
        # Sub-folders are searched only when it matters, and each only up to its first image:
        # walking every class folder twice costs time.
        class_dirs = list(itertools.islice((d for d in subdirs if _has_images(root / d)), 5)) if top else []
        if class_dirs:
            raise DataError(
                f"'{root}' holds images both directly ({len(top)}) and in sub-folders ({', '.join(class_dirs)}); "
                "set the layout to 'flat' or 'folders' (data.layout, or --layout of 'tlexp data check') to say "
                "which to use."
            )
        layout = "flat" if top else "folders"
    files, ignored = _scan_flat(top, others) if layout == "flat" else _scan_folders(root, subdirs)
    if not files:
        raise DataError(
            f"No images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found in '{root}' with layout '{layout}'. "
            "Expected class sub-folders (root/cat/*.jpg) or Kaggle-style files (root/cat.0.jpg)."
        )
    found = Scan(root, layout, sorted(files, key=lambda c: c.rel))
    classes = set(found.class_names)
    # A folder of notes only is no class: its files are not counted anywhere.
    found.ignored = {k: n for k, n in ignored.items() if k in classes or k == NO_LABEL}
    return found


def warn_unlabelled(root: Path, unlabelled: list[str], total: int) -> None:
    """Log, as one warning, how many of ``total`` image files are left out for want of a label, with an example."""
    if unlabelled:
        log.warning(
            "data: left out %d of %d image file(s) in '%s' that have no label, e.g. '%s' (the flat layout "
            "needs names like 'cat.0.jpg'; or use class sub-folders)",
            len(unlabelled),
            total,
            root,
            unlabelled[0],
        )


def _scan_flat(top: list[Candidate], others: list) -> tuple[list[Candidate], Counter]:
    candidates = list(top)
    ignored_names = []
    for name, st, err in others:
        if is_image_name(name):  # a broken link, a loop, a FIFO...: reported, never opened
            candidates.append(Candidate(name, None, st, err or "unreadable: not a regular file"))
        else:
            ignored_names.append(name)
    for c in candidates:
        c.label = _flat_label(c.rel)
    classes = {c.label for c in candidates}
    # Thumbs.db has no class; 'cat.0.txt' counts under cat.
    ignored = Counter(lbl if (lbl := _flat_label(n)) in classes - {None} else NO_LABEL for n in ignored_names)
    return candidates, ignored


def _scan_folders(root: Path, subdirs: list[str]) -> tuple[list[Candidate], Counter]:
    candidates, ignored = [], Counter()
    for d in subdirs:
        # followlinks=False (the default): a symlinked folder (even one pointing to its
        # parent) is listed but never entered, so the walk cannot loop.
        for dirpath, dirnames, filenames in os.walk(root / d, onerror=_warn_unlistable):
            dirnames[:] = sorted(x for x in dirnames if not x.startswith("."))
            rel_dir = Path(dirpath).relative_to(root)
            for f in sorted(filenames):
                if not is_image_name(f):
                    ignored[d] += 1
                    continue
                st, err = _stat(Path(dirpath) / f)
                if st is not None and not stat.S_ISREG(st.st_mode):
                    err = "unreadable: not a regular file"
                candidates.append(Candidate((rel_dir / f).as_posix(), d, st, err))
    return candidates, ignored


def _stat(path: Path) -> tuple[os.stat_result | None, str]:
    try:
        return os.stat(path), ""
    except OSError as e:
        if e.errno == errno.ELOOP:
            return None, "unreadable: symlink loop"
        if e.errno == errno.ENOENT and os.path.islink(path):
            return None, "unreadable: broken symlink (its target does not exist)"
        return None, f"unreadable: {e.strerror or e}"


def _warn_unlistable(e: OSError) -> None:
    log.warning("data: cannot list '%s' (%s); the files in it are left out", e.filename, e.strerror)


def _flat_label(name: str) -> str | None:
    return name.split(".", 1)[0] if "." in Path(name).stem else None


def _has_images(folder: Path) -> bool:
    """Whether any file below ``folder`` is an image by name (layout detection)."""
    return any(any(is_image_name(f) for f in files) for _, _, files in os.walk(folder))
