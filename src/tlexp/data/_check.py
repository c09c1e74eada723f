"""Check every file of a dataset once: good, converted or rejected, and why. No TensorFlow.

The check reads each candidate file, hashes its bytes, fully decodes it with Pillow and
then runs :func:`tlexp.data._decode.load_image` on the same bytes, so a file the check passes
is one that training can load. Verdicts:

* ``good``: decodes as-is to RGB.
* ``converted``: usable, but something is changed on the way to RGB (``detail`` says
  what, e.g. ``"CMYK->RGB"``, ``"PNG named .jpg"``, ``"EXIF-rotated"``).
* ``rejected``: ``detail`` starts with one of :data:`REJECT_REASONS`.

Usable files also get a perceptual hash and a small thumbnail;
:meth:`CheckResult.near_duplicates` groups resized, recompressed or recoloured copies of
one picture by them (:mod:`tlexp.data._neardup`).

The user's files are only ever opened for reading. With ``cache_dir`` the verdicts (and
hashes) are kept in ``cache_dir/checks/<sha256 of root>.json``; a later check re-reads
only files whose (size, mtime, inode) changed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tlexp.data._inspect import FileVerdict, check_file
from tlexp.data._neardup import THUMB_SIDE, near_duplicate_groups
from tlexp.data._scan import NO_LABEL, Candidate, scan_dataset
from tlexp.files import write_text

log = logging.getLogger("tlexp")

# Bump whenever a rule below changes: older caches are then ignored (2: perceptual hash, 3: thumbnail).
CACHE_VERSION = 3
STATUSES = ("good", "converted", "rejected")
REJECT_REASONS = ("empty", "truncated", "not an image", "unsupported", "too small", "unreadable")
KAGGLE, PETIMAGES, CUSTOM = "kaggle-dogs-vs-cats-train", "microsoft-petimages", "custom"
MANIFEST_FILE = "manifest.csv"  # in the check's report folder: every file with its status, reason, size, hashes
REJECTED_FILE = "rejected.csv"  # files the check rejected: path, label, reason
DUPLICATES_FILE = "duplicates.csv"  # groups of byte-identical usable images
NEAR_DUPLICATES_FILE = "near_duplicates.csv"  # in the check's report folder and in each run folder
# The default largest pixel difference (tlexp.data._neardup.pixel_difference) between a near-duplicate and
# its group's representative: calibrated with scripts/bench_neardup.py (docs/guide/data.md).
NEAR_DUPLICATE_THRESHOLD = 0.1
THUMB_BYTES = THUMB_SIDE * THUMB_SIDE
LARGE_GROUP = 5  # near-duplicate groups with more files than this get a warning: worth a look
SUMMARY_COLUMNS = ("good", "converted", "rejected", "ignored")


@dataclass(frozen=True)
class NearMatch:
    """A usable file's place among near-duplicates (:meth:`CheckResult.near_components`).

    Attributes:
        representative: path of its group's representative (its own path where alone).
        bits: perceptual-hash bits between the file and the representative.
        difference: pixel difference (:func:`tlexp.data._neardup.pixel_difference`) to it.
    """

    representative: str
    bits: int
    difference: float


@dataclass
class CheckResult:
    """All verdicts of one check.

    Attributes:
        root: dataset folder (absolute).
        layout: ``"folders"`` or ``"flat"``.
        class_names: sorted class names (as :func:`tlexp.data._dataset.discover` finds them).
        files: one verdict per candidate file, sorted by path.
        variant: :data:`KAGGLE`, :data:`PETIMAGES` or :data:`CUSTOM` (see :func:`detect_variant`).
        seconds: wall time of the check.
        reused: files whose verdict came from the cache.
        ignored: per class (or :data:`NO_LABEL`), files skipped as not images (``Thumbs.db``,
            ``.txt``, hidden files).
    """

    root: Path
    layout: str
    class_names: list[str]
    files: list[FileVerdict]
    variant: str
    seconds: float
    reused: int
    ignored: dict[str, int] = field(default_factory=dict)
    _components: dict[float, dict[str, NearMatch]] = field(default_factory=dict, repr=False, compare=False)

    def usable(self) -> list[FileVerdict]:
        """Good and converted files that have a label: what training may use."""
        return [f for f in self.files if f.status != "rejected" and f.label is not None]

    def rejected(self) -> list[FileVerdict]:
        """Rejected files, labelled or not."""
        return [f for f in self.files if f.status == "rejected"]

    def duplicates(self) -> list[list[FileVerdict]]:
        """Groups (two or more files) of usable files with identical bytes, sorted by path."""
        groups: dict[str, list[FileVerdict]] = defaultdict(list)
        for f in self.usable():
            groups[f.sha256].append(f)
        return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0].path)

    def conflicting_duplicates(self) -> list[list[FileVerdict]]:
        """Duplicate groups whose files carry different labels (the same image in two classes)."""
        return [g for g in self.duplicates() if len({f.label for f in g}) > 1]

    def near_components(self, threshold: float = NEAR_DUPLICATE_THRESHOLD) -> dict[str, NearMatch]:
        """Usable file path -> its near-duplicate group (computed once per threshold).

        Files with identical bytes share a group. Distinct images share one when their
        perceptual hashes and thumbnails are close to the group's representative
        (:func:`tlexp.data._neardup.near_duplicate_groups`); groups do not chain.
        """
        if threshold not in self._components:
            usable = [f for f in self.usable() if f.phash]
            by_bytes: dict[str, FileVerdict] = {}
            for f in usable:  # sorted by path: the first file of each content stands for it
                by_bytes.setdefault(f.sha256, f)
            distinct = list(by_bytes.values())
            hashes = np.array([int(f.phash, 16) for f in distinct], dtype=np.uint64)
            thumbs = np.frombuffer(b"".join(f.thumb for f in distinct), dtype=np.uint8).reshape(len(distinct), -1)
            found = near_duplicate_groups(hashes, thumbs, threshold)
            match = {
                f.sha256: NearMatch(distinct[int(r)].path, int(b), float(d))
                for f, r, b, d in zip(distinct, found.representative, found.bits, found.difference, strict=True)
            }
            self._components[threshold] = {f.path: match[f.sha256] for f in usable}
        return self._components[threshold]

    def near_duplicates(self, threshold: float = NEAR_DUPLICATE_THRESHOLD) -> list[list[FileVerdict]]:
        """Groups of usable files that show the same picture but are not all byte-identical
        (resized, recompressed, recoloured copies): the representative first, then the
        rest by path; the groups sorted by representative.

        See :meth:`near_components`; groups whose files all have the same bytes are
        :meth:`duplicates` only.
        """
        component = self.near_components(threshold)
        groups: dict[str, list[FileVerdict]] = defaultdict(list)
        for f in self.usable():
            if f.path in component:
                groups[component[f.path].representative].append(f)
        near = [g for g in groups.values() if len({f.sha256 for f in g}) > 1]
        ordered = [sorted(g, key=lambda f: (f.path != component[f.path].representative, f.path)) for g in near]
        return sorted(ordered, key=lambda g: g[0].path)

    def summary(self) -> dict[str, dict[str, int]]:
        """Per class (plus :data:`NO_LABEL` if any, and ``"total"``): good, converted, rejected, ignored."""
        keys = list(self.class_names)
        if any(f.label is None for f in self.files) or self.ignored.get(NO_LABEL):
            keys.append(NO_LABEL)
        rows = {k: {"good": 0, "converted": 0, "rejected": 0, "ignored": self.ignored.get(k, 0)} for k in keys}
        for f in self.files:
            rows[f.label if f.label is not None else NO_LABEL][f.status] += 1
        rows["total"] = {col: sum(r[col] for r in rows.values()) for col in SUMMARY_COLUMNS}
        return rows


def detect_variant(layout: str, counts_by_class: Mapping[str, int]) -> str:
    """Name the well-known dataset a layout and its per-class file counts match.

    The rule looks only at counts of candidate image files (any verdict), not at their
    contents, so a copy with a few broken files is still recognised:

    * :data:`KAGGLE`: flat layout, classes exactly ``cat`` and ``dog``, 12,500 files each.
    * :data:`PETIMAGES`: folders layout, classes exactly ``Cat`` and ``Dog``, 12,499 to
      12,501 files each (copies in circulation differ by a file).
    * :data:`CUSTOM`: anything else.
    """
    counts = dict(counts_by_class)
    if layout == "flat" and counts == {"cat": 12_500, "dog": 12_500}:
        return KAGGLE
    if layout == "folders" and set(counts) == {"Cat", "Dog"} and all(12_499 <= n <= 12_501 for n in counts.values()):
        return PETIMAGES
    return CUSTOM


def check_dataset(
    root: str | os.PathLike,
    layout: str = "auto",
    *,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    progress: bool = False,
    min_side: int = 16,
) -> CheckResult:
    """Classify every candidate file under ``root``. Never modifies, moves or deletes a file.

    Candidates are the image-named files of :func:`tlexp.data._scan.scan_dataset`, the walk
    :func:`tlexp.data._dataset.discover` uses too: the same files and labels, plus flat-layout
    files without a label (summed up under :data:`NO_LABEL`, never usable). Broken symlinks,
    symlink loops and FIFOs are rejected without being opened.

    Args:
        root: dataset folder.
        layout: ``"auto"``, ``"folders"`` or ``"flat"``.
        cache_dir: tlexp's cache folder; verdicts of unchanged files are reused from it.
        workers: decoding threads; None means ``os.cpu_count()``.
        progress: show a progress bar.
        min_side: images whose shorter side is below this are rejected as too small.

    Raises:
        ValueError: a bad parameter.
        DataError: ``root`` missing, unlistable, holding no image files, or ambiguous.
    """
    _check_params(workers, min_side)
    t0 = time.perf_counter()
    found = scan_dataset(root, layout)
    root, layout, candidates = found.root, found.layout, found.files

    cache_path = None
    if cache_dir is not None:
        cache_path = Path(cache_dir) / "checks" / f"{hashlib.sha256(str(root).encode()).hexdigest()}.json"
    header = _cache_header(root, min_side)
    cached = _load_cache(cache_path, header) if cache_path else {}
    verdicts: dict[str, FileVerdict] = {}
    todo, reused = [], 0
    for c in candidates:
        if c.error:  # known from stat alone; never cached, so fixing the file is noticed at once
            verdicts[c.rel] = FileVerdict(c.rel, c.label, "rejected", c.error, -1, "")
        elif hit := _from_cache(cached.get(c.rel), c):
            verdicts[c.rel] = hit
            reused += 1
        else:
            todo.append(c)
    try:
        _check_all(root, todo, verdicts, workers or os.cpu_count() or 1, min_side, progress, len(candidates))
    finally:
        # Also after Ctrl-C: the next check then resumes instead of starting over.
        if cache_path:
            _save_cache(cache_path, header, verdicts.values())
    files = [verdicts[c.rel] for c in candidates]
    counts = Counter(f.label for f in files if f.label is not None)
    result = CheckResult(
        root,
        layout,
        found.class_names,
        files,
        detect_variant(layout, counts),
        time.perf_counter() - t0,
        reused,
        found.ignored,
    )
    # The one log line of a check, for 'tlexp data check' and every run alike.
    rejected, unlabelled = len(result.rejected()), sum(f.label is None and f.status != "rejected" for f in files)
    log.info(
        "data: checked %d files in %.1fs (%d unchanged since the last check): %d usable, %d rejected%s%s",
        len(files),
        result.seconds,
        reused,
        len(result.usable()),
        rejected,
        f", {unlabelled} without a label" if unlabelled else "",
        f"; see {REJECTED_FILE}" if rejected else "",
    )
    return result


def reject_reason(detail: str) -> str:
    """The reason category (one of :data:`REJECT_REASONS`) of a rejected file's detail."""
    return next((r for r in REJECT_REASONS if detail.startswith(r)), detail)


def _check_params(workers: int | None, min_side: int) -> None:
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ValueError(f"The 'workers' parameter must be an int >= 1 or None (all cores). Got {workers!r} instead.")
    if not isinstance(min_side, int) or min_side < 1:
        raise ValueError(f"The 'min_side' parameter must be an int >= 1. Got {min_side!r} instead.")


# --- checking one file ---------------------------------------------------------------


def _check_all(
    root: Path,
    todo: list[Candidate],
    verdicts: dict[str, FileVerdict],
    workers: int,
    min_side: int,
    progress: bool,
    total: int,
) -> None:
    """Check ``todo`` in threads (Pillow releases the GIL while decoding), filling ``verdicts``."""
    if not todo:
        return
    from PIL import Image

    Image.init()  # register all plugins once, before threads race to do it
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=total - len(todo), desc="data check", unit="file", leave=False)
    pool = ThreadPoolExecutor(max_workers=min(workers, len(todo)))
    try:
        futures = [pool.submit(check_file, root, c.rel, c.label, min_side) for c in todo]
        for fut in as_completed(futures):
            v = fut.result()
            verdicts[v.path] = v
            if bar is not None:
                bar.update()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # Ctrl-C: don't wait for the queued thousands
        if bar is not None:
            bar.close()


# --- the incremental cache -----------------------------------------------------------


def _cache_header(root: Path, min_side: int) -> dict:
    import PIL

    # A newer Pillow may decode files an older one rejected, and min_side changes verdicts. The
    # perceptual hash is NumPy arithmetic on Pillow's pixels: another NumPy may round a DCT
    # coefficient across the median and flip a bit.
    return {
        "version": CACHE_VERSION,
        "root": str(root),
        "pillow": PIL.__version__,
        "numpy": np.__version__,
        "min_side": min_side,
    }


def _load_cache(path: Path, header: dict) -> dict:
    """Cached entries by path; {} when the file is missing, unreadable, corrupt or stale."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data["header"] == header and isinstance(data["files"], dict):
            return data["files"]
    except (OSError, ValueError, TypeError, KeyError):
        pass
    return {}


def _from_cache(entry: object, c: Candidate) -> FileVerdict | None:
    """The cached verdict if ``entry`` matches the file's (size, mtime, inode), else None."""
    try:
        size, mtime_ns, inode, status, detail, sha, width, height, phash, thumb = entry  # type: ignore[misc]
        if (size, mtime_ns, inode) != (c.st.st_size, c.st.st_mtime_ns, c.st.st_ino) or status not in STATUSES:
            return None
        pixels = base64.b64decode(thumb, validate=True)
        if status != "rejected" and (len(phash) != 16 or len(pixels) != THUMB_BYTES):
            return None  # a damaged hash or thumbnail: check the file again
        int(phash or "0", 16)
        return FileVerdict(
            c.rel, c.label, status, str(detail), size, str(sha), int(width), int(height), mtime_ns, inode, phash, pixels
        )
    except (TypeError, ValueError):  # a hand-edited or damaged entry (binascii.Error is one): check the file again
        return None


def _save_cache(path: Path, header: dict, verdicts: Iterable[FileVerdict]) -> None:
    files = {
        v.path: [
            *(v.size, v.mtime_ns, v.inode, v.status, v.detail, v.sha256, v.width, v.height, v.phash),
            base64.b64encode(v.thumb).decode("ascii"),
        ]
        for v in verdicts
        if v.size >= 0
    }  # unreadable files are re-tried each time: stat is cheap
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps({"header": header, "files": files}, separators=(",", ":")))
    except OSError as e:  # the check itself succeeded; only the next one will be slower
        log.warning("data: could not write the check cache '%s' (%s)", path, e)
