"""What a data check found, for people and files: the terminal summary and the CSV files. No TensorFlow."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from tlexp.data._check import (
    DUPLICATES_FILE,
    LARGE_GROUP,
    MANIFEST_FILE,
    NEAR_DUPLICATE_THRESHOLD,
    NEAR_DUPLICATES_FILE,
    NO_LABEL,
    REJECT_REASONS,
    REJECTED_FILE,
    SUMMARY_COLUMNS,
    CheckResult,
    reject_reason,
)
from tlexp.files import write_csv


def write_check(
    result: CheckResult, out_dir: str | os.PathLike, threshold: float = NEAR_DUPLICATE_THRESHOLD
) -> dict[str, Path]:
    """Write manifest.csv, rejected.csv, duplicates.csv and near_duplicates.csv (each atomically) into ``out_dir``.

    ``threshold``: the near-duplicate threshold (:meth:`CheckResult.near_components`).

    Returns:
        ``{"manifest": path, "rejected": path, "duplicates": path, "near_duplicates": path}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "manifest": out / MANIFEST_FILE,
        "rejected": out / REJECTED_FILE,
        "duplicates": out / DUPLICATES_FILE,
        "near_duplicates": out / NEAR_DUPLICATES_FILE,
    }
    write_csv(
        paths["manifest"],
        ["path", "label", "size", "sha256", "status", "detail", "width", "height", "phash"],
        [
            (f.path, f.label or "", f.size, f.sha256, f.status, f.detail, f.width, f.height, f.phash)
            for f in result.files
        ],
    )
    write_rejected(result, paths["rejected"])
    write_csv(
        paths["duplicates"],
        ["group", "path", "label", "sha256"],
        [(i, f.path, f.label or "", f.sha256) for i, g in enumerate(result.duplicates(), 1) for f in g],
    )
    write_near_duplicates(result, paths["near_duplicates"], threshold=threshold)
    return paths


def write_near_duplicates(
    result: CheckResult,
    path: str | os.PathLike,
    split_of: Mapping[str, str] | None = None,
    threshold: float = NEAR_DUPLICATE_THRESHOLD,
) -> Path:
    """near_duplicates.csv (atomic): one row per file of each :meth:`CheckResult.near_duplicates` group.

    Columns ``group,path,label,sha256,phash,hash_bits,difference`` (with ``split_of``, the
    run folder's file: ``split`` after ``label``, ``""`` for a file the run does not use).
    The first row of a group is its representative; ``hash_bits`` and ``difference`` are
    each file's distance to it (perceptual-hash bits, pixel difference).
    """
    header = ["group", "path", "label", "sha256", "phash", "hash_bits", "difference"]
    if split_of is not None:
        header.insert(3, "split")
    rows = []
    component = result.near_components(threshold)
    for i, group in enumerate(result.near_duplicates(threshold), 1):
        for f in group:
            match = component[f.path]
            row = [i, f.path, f.label or "", f.sha256, f.phash, match.bits, f"{match.difference:.4f}"]
            if split_of is not None:
                row.insert(3, split_of.get(f.path, ""))
            rows.append(row)
    write_csv(path, header, rows)
    return Path(path)


def large_groups_note(near: list[list], threshold: float) -> str:
    """A warning about near-duplicate groups of more than :data:`LARGE_GROUP` files, or ``""``.

    Copies of one picture rarely come in such numbers; a large group is more often many
    similar pictures, which the split then keeps together. The note says how to look and
    what to change.
    """
    large = [g for g in near if len(g) > LARGE_GROUP]
    if not large:
        return ""
    biggest = max(large, key=len)
    return (
        f"{len(large)} near-duplicate group(s) hold more than {LARGE_GROUP} files (largest: {len(biggest)} files "
        f"around '{biggest[0].path}'); if they are different pictures, look at {NEAR_DUPLICATES_FILE} and lower "
        f"data.near_duplicate_threshold (now {threshold:g}), or set data.group_near_duplicates=false"
    )


def write_rejected(result: CheckResult, path: str | os.PathLike) -> Path:
    """rejected.csv: ``path,label,reason`` of every rejected file (atomic)."""
    write_csv(path, ["path", "label", "reason"], [(f.path, f.label or "", f.detail) for f in result.rejected()])
    return Path(path)


def format_summary(result: CheckResult, threshold: float = NEAR_DUPLICATE_THRESHOLD) -> str:
    """A terminal report: per-class table, variant, rejections by reason, duplicates and near-duplicates."""
    rows = result.summary()
    cols = SUMMARY_COLUMNS
    w = max(len("class"), *(len(k) for k in rows))
    lines = [
        f"data check: {result.root} ({result.layout} layout, variant {result.variant}): {len(result.files)} "
        f"files in {result.seconds:.1f}s, {result.reused} unchanged since the last check",
        f"{'class':<{w}}  " + "  ".join(f"{c:>9}" for c in cols),
    ]
    lines += [f"{k:<{w}}  " + "  ".join(f"{r[c]:>9,}" for c in cols) for k, r in rows.items()]
    lines.append(f"usable: {len(result.usable()):,}")
    converted = Counter(
        part.split(" (")[0] for f in result.files if f.status == "converted" for part in f.detail.split("; ")
    )
    if converted:
        lines.append("converted: " + ", ".join(f"{k} {n:,}" for k, n in converted.most_common()))
    reasons = Counter(reject_reason(f.detail) for f in result.rejected())
    if reasons:
        lines.append("rejected: " + ", ".join(f"{k} {reasons[k]:,}" for k in REJECT_REASONS if reasons[k]))
    if rows.get(NO_LABEL) and any(f.label is None for f in result.files):
        lines.append(f"{NO_LABEL}: flat-layout files need names like 'cat.0.jpg'; these are not used")
    dups = result.duplicates()
    if dups:
        conflicts = result.conflicting_duplicates()
        lines.append(
            f"duplicates: {len(dups):,} group(s) of identical files ({sum(map(len, dups)):,} files), "
            f"{len(conflicts):,} with different labels"
        )
        for g in conflicts[:5]:
            lines.append("  different labels: " + " = ".join(f"{f.path} ({f.label})" for f in g))
    near = result.near_duplicates(threshold)
    if near:
        mixed = [g for g in near if len({f.label for f in g}) > 1]
        lines.append(
            f"near-duplicates: {len(near):,} group(s) of near-identical images ({sum(map(len, near)):,} files; "
            f"pixel difference to the group's first file at most {threshold:g}), {len(mixed):,} with different "
            f"labels; see {NEAR_DUPLICATES_FILE}"
        )
        if note := large_groups_note(near, threshold):
            lines.append(f"  warning: {note}")
        for g in (mixed + [g for g in near if len({f.label for f in g}) == 1])[:5]:
            more = f" ~ ... ({len(g)} files)" if len(g) > 4 else ""
            kind = "different labels" if len({f.label for f in g}) > 1 else "e.g."
            lines.append(f"  {kind}: " + " ~ ".join(f"{f.path} ({f.label})" for f in g[:4]) + more)
    return "\n".join(lines)
