"""Data for a run: generate the demo data, check every file, split, and feed images.

Everything between "a folder on disk" and "a decoder the tf.data pipeline reads": the
data check (cached), the usable files, the seeded split that keeps identical and
near-identical images together, the decoded-image cache, and what of it goes into the
run folder and metrics.json. No TensorFlow.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from tlexp import files, runfolder
from tlexp.config import Config
from tlexp.data._dataset import SPLITS, Dataset, assign_splits, discover, split_size
from tlexp.data._scan import warn_unlabelled
from tlexp.errors import DataError
from tlexp.logs import show_progress

log = logging.getLogger("tlexp")


def prepare_data(cfg: Config, check: bool = True) -> tuple[Dataset, Any]:
    """Generate the demo data if asked, check every file, and split the usable ones.

    Files with identical bytes (and, with ``data.group_near_duplicates``, near-identical
    images) are one group, and a group never spans two splits. Identical files with
    different labels are left out (see :func:`usable_dataset`).

    Args:
        check: run the data check (decodes every new or changed file once; cached and
            incremental). ``False`` (``tlexp plan``) only lists files and decodes nothing;
            without content hashes, that split groups nothing.

    Returns:
        ``(dataset, check_result)``; the dataset holds only files the check passed
        (``check_result`` is None without a check).
    """
    if cfg.data.synthetic.enabled:
        from tlexp.data._demo import ensure_demo_dataset

        ensure_demo_dataset(cfg.data.root, cfg.data.synthetic.per_class)
    result, groups = None, None
    if check:
        from tlexp.data._check import check_dataset

        result = check_dataset(cfg.data.root, cfg.data.layout, cache_dir=cache_dir(cfg), progress=show_progress())
        found = usable_dataset(result)
        threshold = cfg.data.near_duplicate_threshold if cfg.data.group_near_duplicates else None
        groups = split_groups(result, found.paths, threshold)
    else:
        found = discover(cfg.data.root, cfg.data.layout)
    split_seed = cfg.seed if cfg.data.split_seed is None else cfg.data.split_seed
    ds = assign_splits(
        found, cfg.data.val_fraction, cfg.data.test_fraction, split_seed, cfg.data.limit_per_class, groups
    )
    counts = ds.counts()
    log.info(
        "data: %s layout, %d classes (%s), %d images found; using train %d / val %d / test %d",
        ds.layout,
        len(ds.class_names),
        ", ".join(ds.class_names),
        len(found.paths),
        *(sum(counts[s].values()) for s in SPLITS),
    )
    if off := split_shortfall(ds, cfg.data.val_fraction, cfg.data.test_fraction):
        log.info("data: keeping groups of identical or near-identical images whole, the split got %s", off)
    return ds, result


def split_shortfall(ds: Dataset, val_fraction: float, test_fraction: float) -> str:
    """How the split's val and test sizes differ from those asked, or ``""`` where they don't.

    Asked: per class :func:`tlexp.data._dataset.split_size` files (what a split without
    groups gives); a group kept whole moves a split by up to half its size.
    """
    counts = ds.counts()
    per_class = {c: sum(counts[s][c] for s in SPLITS) for c in ds.class_names}
    parts, n = [], sum(per_class.values())
    for split, fraction in (("val", val_fraction), ("test", test_fraction)):
        asked = sum(split_size(k, fraction) for k in per_class.values())
        got = sum(counts[split].values())
        if got != asked:
            parts.append(f"{split} {got} ({got / n:.1%}) instead of {asked} ({fraction:.1%})")
    return ", ".join(parts)


def cache_dir(cfg: Config) -> Path:
    """The folder of data checks and decoded-image caches for this config."""
    from tlexp.files import cache_root

    return Path(cfg.data.cache_dir) if cfg.data.cache_dir else cache_root()


def usable_dataset(result) -> Dataset:
    """A Dataset of the files a data check passed (good or converted, with a label).

    Files without a label are left out with a warning, as :func:`tlexp.data._dataset.discover`
    does. So are byte-identical files that carry different labels (every file of such a
    group, with one warning): the same picture cannot be both a cat and a dog, so it has
    no label to learn or to score, and keeping one copy would be a guess.
    """
    warn_unlabelled(result.root, [f.path for f in result.files if f.label is None], len(result.files))
    conflicts = result.conflicting_duplicates()
    excluded = {f.path for g in conflicts for f in g}
    if conflicts:
        log.warning(
            "data: left out %d file(s) in %d group(s) of identical images with different labels, e.g. %s; see %s",
            len(excluded),
            len(conflicts),
            " = ".join(f"'{f.path}' ({f.label})" for f in conflicts[0]),
            runfolder.DUPLICATES_FILE,
        )
    usable = sorted((f for f in result.usable() if f.path not in excluded), key=lambda f: f.path)
    class_names = sorted({f.label for f in usable})
    if len(class_names) < 2:
        raise DataError(
            f"After the data check, '{result.root}' has usable images of {len(class_names)} class(es) "
            f"({', '.join(class_names) or 'none'}); a classifier needs two. Run 'tlexp data check "
            f"{result.root}' to see what was rejected and why."
        )
    index = {c: i for i, c in enumerate(class_names)}
    return Dataset(
        root=Path(result.root).resolve(),
        layout=result.layout,
        class_names=class_names,
        paths=[f.path for f in usable],
        labels=np.array([index[f.label] for f in usable], dtype=np.int64),
    )


def split_groups(result, paths: list[str], threshold: float | None) -> np.ndarray:
    """Group ids for :func:`tlexp.data._dataset.assign_splits`: files with the same bytes
    (sha256) are one group; with a ``threshold``, so are near-identical images
    (:meth:`tlexp.data._check.CheckResult.near_components`; None = identical bytes only).

    Args:
        paths: the dataset's files (usable ones of ``result``), shape (n,).

    Returns:
        int64 array, shape (n,).
    """
    sha = {f.path: f.sha256 for f in result.usable()}
    if threshold is None:
        keys = [sha[p] for p in paths]
    else:  # a near-duplicate group holds every copy of each of its files' bytes
        component = result.near_components(threshold)
        keys = [component[p].representative for p in paths]
    return np.unique(keys, return_inverse=True)[1].astype(np.int64)


def write_run_check(run_dir: Path, check, ds: Dataset, threshold: float) -> dict[str, Any]:
    """rejected.csv, duplicates.csv and near_duplicates.csv of the data check in the run
    folder; returns what the check found, for metrics.json, and warns about groups that
    sit in more than one split (a leak: only near-duplicates with
    ``data.group_near_duplicates: false``) and about large near-duplicate groups.

    ``threshold``: ``data.near_duplicate_threshold``, what near_duplicates.csv lists either way.
    """
    from tlexp.data._check import NEAR_DUPLICATES_FILE, reject_reason
    from tlexp.data._checkreport import large_groups_note, write_near_duplicates, write_rejected
    from tlexp.data._neardup import HASH_BITS

    write_rejected(check, run_dir / runfolder.REJECTED_FILE)
    split_of = dict(zip(ds.paths, ds.split, strict=True))
    groups = check.duplicates()
    conflicts = check.conflicting_duplicates()
    excluded = {f.path for g in conflicts for f in g}  # left out by usable_dataset
    files.write_csv(
        run_dir / runfolder.DUPLICATES_FILE,
        ["group", "path", "label", "split", "sha256"],
        (
            (g, f.path, f.label or "", "excluded" if f.path in excluded else split_of.get(f.path, ""), f.sha256)
            for g, group in enumerate(groups, start=1)
            for f in group
        ),
    )
    near = check.near_duplicates(threshold)
    write_near_duplicates(check, run_dir / NEAR_DUPLICATES_FILE, split_of, threshold)
    if note := large_groups_note(near, threshold):
        log.warning("data: %s", note)

    def spans_splits(group) -> bool:
        return len({split_of[f.path] for f in group if f.path in split_of}) > 1

    across = [g for g in groups if spans_splits(g)]
    near_across = [g for g in near if spans_splits(g)]
    for found, kind, name in (
        (across, "identical", runfolder.DUPLICATES_FILE),
        (near_across, "near-identical", NEAR_DUPLICATES_FILE),
    ):
        if found:
            log.warning(
                "data: %d group(s) of %s images sit in more than one split (a train/test leak); see %s",
                len(found),
                kind,
                name,
            )
    rejected = check.rejected()
    reasons = dict(Counter(reject_reason(f.detail) for f in rejected))
    usable = check.usable()
    return {
        "variant": check.variant,
        "files": len(check.files),
        "usable": len(usable),
        "converted": sum(f.status == "converted" for f in check.files),
        "rejected": len(rejected),
        "rejected_by_reason": reasons,
        "duplicate_groups": len(groups),
        "duplicate_groups_across_splits": len(across),
        "duplicate_groups_with_different_labels": len(conflicts),
        "duplicate_files_excluded": len(excluded),
        "near_duplicate_groups": len(near),
        "near_duplicate_files": sum(map(len, near)),
        "near_duplicate_groups_across_splits": len(near_across),
        "near_duplicate_groups_with_different_labels": sum(len({f.label for f in g}) > 1 for g in near),
        "near_duplicate_max_distance": HASH_BITS,
        "near_duplicate_threshold": threshold,
        "seconds": round(check.seconds, 3),
    }


def make_decoder(cfg: Config, ds: Dataset, check):
    """Images for the pipeline: rows of the decoded-image cache, or files decoded on the fly."""
    from tlexp.data._decode import Decoder

    if not cfg.data.decoded_cache:
        return Decoder(ds.root, ds.paths, cfg.data.image_size)
    from tlexp.data._imagecache import CachedDecoder, ensure_image_cache

    sha = {f.path: f.sha256 for f in check.usable()}
    cache = ensure_image_cache(
        ds.root, [(p, sha[p]) for p in ds.paths], cfg.data.image_size, cache_dir(cfg), progress=show_progress()
    )
    return CachedDecoder(cache, ds.paths)


def data_summary(ds: Dataset) -> dict[str, Any]:
    return {"root": str(ds.root), "layout": ds.layout, "class_names": ds.class_names, "counts": ds.counts()}
