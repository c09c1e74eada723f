"""The report's per-setting table: mean and standard deviation over each setting's seeds. No TensorFlow.

Written only when some setting ran with several seeds (one seed has no spread to show):
``summary_by_setting.csv`` holds every mean and std at full precision, the report's
"Mean ± std over seeds" section the rounded ones. A setting is what
:func:`tlexp.results._settings.group_settings` makes of the runs, so two settings are
never averaged together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from tlexp.results._runs import ReportRun
from tlexp.results._settings import Setting
from tlexp.results._tables import Section, Table, fmt_freeze, fmt_mean_std, fmt_pct

BY_SETTING_HEADING = "Mean ± std over seeds"
_INTRO = (
    "One row per setting (every config key except the seed and bookkeeping such as output "
    "folders); std is the sample standard deviation over the seeds listed."
)


def by_setting_csv(settings: Sequence[Setting], clfs: list[str]) -> tuple[list[str], list[list[Any]]] | None:
    """The header and rows of ``summary_by_setting.csv``; None when no setting ran with several seeds."""
    if not _repeated(settings):
        return None
    columns = _mean_columns(clfs)
    header = ["backbone", "freeze_requested", "frozen_share", "setting", "n_runs", "seeds", "runs"]
    header += [f"{key}_{s}" for key, *_ in columns for s in ("mean", "std")]
    rows = []
    for s in settings:
        stats = [s.mean(get) for _, _, get, _ in columns]
        rows.append(
            [s.backbone, s.freeze, s.share, s.variant, len(s.runs), s.seeds, " ".join(r.name for r in s.runs)]
            + ["" if v is None else v for ms in stats for v in ms]
        )
    return header, rows


def by_setting_section(settings: Sequence[Setting], clfs: list[str]) -> Section | None:
    """The "Mean ± std over seeds" section; None when no setting ran with several seeds."""
    if not _repeated(settings):
        return None
    varying = any(s.variant for s in settings)
    columns = _mean_columns(clfs)
    rows = []
    for s in settings:
        stats = [s.mean(get) for _, _, get, _ in columns]
        rows.append(
            [s.backbone, fmt_freeze(s.freeze), fmt_pct(s.share)]
            + ([s.variant] if varying else [])
            + [s.seeds]
            + [fmt_mean_std(*ms, digits) for ms, (*_, digits) in zip(stats, columns, strict=True)]
        )
    table = Table(
        ["backbone", "frozen (asked)", "frozen (achieved)"]
        + (["setting"] if varying else [])
        + ["seeds"]
        + [label for _, label, *_ in columns],
        rows,
        "lrr" + ("l" if varying else "") + "l" + "r" * len(columns),
    )
    return Section(BY_SETTING_HEADING, _INTRO, table)


def _repeated(settings: Sequence[Setting]) -> bool:
    return any(len(s.runs) > 1 for s in settings)


def _mean_columns(clfs: list[str]) -> list[tuple[str, str, Callable[[ReportRun], Any], int]]:
    """(CSV key, column label, value of a run, digits) of each number averaged over seeds."""

    def score(c: str, split: str, metric: str) -> Callable[[ReportRun], Any]:
        return lambda r: r.score(c, split, metric)

    return [
        ("head_train_accuracy_last_epoch", "train acc (last epoch)", lambda r: r.last_epoch_accuracy, 4),
        ("head_train_accuracy_final_model", "train acc (final model)", score("head", "train", "accuracy"), 4),
        ("head_val_loss", "val loss", score("head", "val", "log_loss"), 4),
        ("head_val_accuracy", "val acc", score("head", "val", "accuracy"), 4),
        ("head_test_accuracy", "test acc", score("head", "test", "accuracy"), 4),
        *[(f"{c}_test_accuracy", f"{c} test acc", score(c, "test", "accuracy"), 4) for c in clfs[1:]],
        ("wall_time_s", "time (s)", lambda r: r.record.timings_s.get("total"), 1),
    ]
