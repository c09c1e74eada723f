"""The report's per-run table: one row per run, finished, failed or unfinished. No TensorFlow.

The same rows go to ``summary.csv`` (every number, full precision) and to the report's
"Results" section (the numbers a reader compares, rounded); runs that did not finish
get a section of their own with their error. Settings over seeds are the per-setting
table's job (:mod:`tlexp.results._bysetting`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tlexp.results._runs import ReportRun
from tlexp.results._strategy import Strategy
from tlexp.results._tables import Section, Table, fmt_cell, fmt_freeze, fmt_pct

RESULTS_HEADING = "Results"
# What the two train accuracies are, for table intros and the README.
TRAIN_ACC_NOTE = (
    "train acc (last epoch): Keras' running mean over the last training epoch, what its progress bar "
    "and the study report (the weights change during the epoch, and dropout, if any, is active); train "
    "acc (final model): one pass of the finished model over the training images, scored like val and test."
)


def summary_csv(
    items: Sequence[ReportRun], clfs: list[str], out: Path, *, strategy: bool = False
) -> tuple[list[str], list[list[Any]]]:
    """The header and rows of ``summary.csv``, in the report's run order; ``out`` is the report folder;
    ``strategy``: a column with each run's strategy label (where strategies vary)."""
    others = clfs[1:]
    header = [
        "name",
        "status",
        "backbone",
        *(["strategy"] if strategy else []),
        "seed",
        "freeze_requested",
        "frozen_share",
        "last_frozen_layer",
        "trainable_params",
        "head_train_accuracy_last_epoch",
        "head_train_accuracy_final_model",
        "head_val_loss",
        "head_val_accuracy",
        "head_test_loss",
        "head_test_accuracy",
    ]
    header += [f"{c}_{s}_accuracy" for c in others for s in ("val", "test")]
    header += [f"{c}_test_{k}" for c in clfs for k in ("f1", "roc_auc")]
    header += ["epochs", "train_time_s", "wall_time_s", "cached_prefix", "device", "run_dir", "error"]
    rows = []
    for r in items:
        rec = r.record
        row: dict[str, Any] = {
            "name": r.name,
            "status": r.status,
            "backbone": r.config.get("model.backbone"),
            "strategy": Strategy.of(r.config).label(),
            "seed": r.config.get("seed"),
            "freeze_requested": r.config.get("model.freeze"),
            "frozen_share": r.frozen_share,
            "last_frozen_layer": rec.freeze.last_frozen_layer if rec else None,
            "trainable_params": rec.params.trainable if rec else None,
            "head_train_accuracy_last_epoch": r.last_epoch_accuracy,
            "head_train_accuracy_final_model": r.score("head", "train", "accuracy"),
            "epochs": rec.history.epochs if rec else None,  # epochs actually run
            "train_time_s": r.train_seconds,
            "wall_time_s": rec.timings_s.get("total") if rec else None,
            "cached_prefix": rec.prefix_cache.describe() if rec else None,
            "device": rec.environment.device if rec else None,
            "run_dir": r.dir_from(out),
            "error": r.error,
        }
        for c in clfs:
            for split in ("val", "test"):  # more than the header asks for; the header picks
                row[f"{c}_{split}_accuracy"] = r.score(c, split, "accuracy")
                row[f"{c}_{split}_loss"] = r.score(c, split, "log_loss")
            row[f"{c}_test_f1"] = r.score(c, "test", "f1")
            row[f"{c}_test_roc_auc"] = r.score(c, "test", "roc_auc")
        rows.append(["" if row[k] is None else row[k] for k in header])
    return header, rows


def results_section(items: Sequence[ReportRun], clfs: list[str], *, strategy: bool = False) -> Section:
    """The "Results" section: one row per run, unfinished and failed runs marked; ``strategy``: a
    column with each run's strategy label (where strategies vary)."""
    others = clfs[1:]
    problems = any(r.status != "finished" for r in items)
    rows = []
    for r in items:
        cells = [
            r.name,
            str(r.config.get("model.backbone", "")),
            *([Strategy.of(r.config).label()] if strategy else []),
            fmt_freeze(r.config.get("model.freeze")),
            fmt_pct(r.frozen_share),
            fmt_cell(r.config.get("seed"), 0),
            fmt_cell(r.last_epoch_accuracy),
            fmt_cell(r.score("head", "train", "accuracy")),
            fmt_cell(r.score("head", "val", "log_loss")),
            fmt_cell(r.score("head", "val", "accuracy")),
            fmt_cell(r.score("head", "test", "accuracy")),
        ]
        cells += [fmt_cell(r.score(c, "test", "accuracy")) for c in others]
        rows.append(cells + ([r.status] if problems else []))
    table = Table(
        [
            "run",
            "backbone",
            *(["strategy"] if strategy else []),
            "frozen (asked)",
            "frozen (achieved)",
            "seed",
            "train acc (last epoch)",
            "train acc (final model)",
            "val loss",
            "val acc",
            "test acc",
        ]
        + [f"{c} test acc" for c in others]
        + (["status"] if problems else []),
        rows,
        "ll" + ("l" if strategy else "") + "rrr" + "r" * (5 + len(others)) + ("l" if problems else ""),
        {i for i, r in enumerate(items) if r.status != "finished"},
    )
    intro = (
        "Train/val/test columns without a classifier name are the dense head's"
        + (f"; {', '.join(others)}: classifiers fitted on the head's penultimate activations" if others else "")
        + ". Frozen: share of backbone parameters, as asked and as achieved by freezing whole layers.\n\n"
        + TRAIN_ACC_NOTE[0].upper()
        + TRAIN_ACC_NOTE[1:]
    )
    return Section(RESULTS_HEADING, intro, table)


def failures_section(items: Sequence[ReportRun]) -> Section | None:
    """The runs that did not finish, with their error; None when every run finished."""
    problems = [r for r in items if r.status != "finished"]
    if not problems:
        return None
    rows = [
        [
            r.name,
            str(r.config.get("model.backbone", "")),
            fmt_freeze(r.config.get("model.freeze")),
            fmt_cell(r.config.get("seed"), 0),
            r.status,
            r.error,
        ]
        for r in problems
    ]
    table = Table(["run", "backbone", "frozen (asked)", "seed", "status", "error"], rows, "llrrll")
    return Section("Failed and unfinished runs", "", table)


def count_line(items: Sequence[ReportRun]) -> str:
    """'12 run(s): 10 finished, 1 failed, 1 unfinished.'"""
    n = {s: sum(r.status == s for r in items) for s in ("finished", "failed", "unfinished")}
    parts = [f"{v} {k}" for k, v in n.items() if v]
    return f"{len(items)} run(s): {', '.join(parts) or 'none'}."
