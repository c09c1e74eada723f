"""The report's tables: one row per run, settings over seeds, paired head-vs-classifier tests. No TensorFlow.

Each table is built once and rendered both as Markdown (``summary.md``) and HTML
(``report.html``), so the two never disagree; the same rows go to the CSV files.
Runs are grouped into settings (every config key but the seed and bookkeeping) before
anything is averaged, so the tables, the charts and the answer never pool two settings.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlexp.results._record import RunRecord
from tlexp.results._tables import _fmt, _fmt_freeze, _fmt_mean_std, _pct, _Table

ALPHA = 0.05  # significance level of the paired tests' readings (and 1 - the intervals' level)
LEVEL = 1 - ALPHA
LEVEL_TEXT = f"{round(100 * LEVEL)} %"  # "95 %"
# Config keys (or whole sections) that do not make a setting: seeds vary within one; the
# rest is bookkeeping that cannot change a number: where files go, logging, what a Ray
# cell asks for, the cache folder, whether Keras may download, the forest's job count
# (its result does not depend on it). ``sweep`` is the grid that produced the run.
NOT_SETTING = frozenset(
    {
        "seed",
        "name",
        "sweep",
        "output",
        "tracking",
        "resources",
        "data.split_seed",
        "data.cache_dir",
        "model.download",
        "forest.n_jobs",
    }
)
# What the two train accuracies are, for table intros and the README.
TRAIN_ACC_NOTE = (
    "train acc (last epoch): Keras' running mean over the last training epoch, what its progress bar "
    "and the study report (the weights change during the epoch, and dropout, if any, is active); train "
    "acc (final model): one pass of the finished model over the training images, scored like val and test."
)


@dataclass
class _Run:
    """One row of the report: a run folder, or a sweep entry that failed before making one."""

    name: str
    status: str  # finished | failed | unfinished
    dir: Path | None = None
    config: dict[str, Any] = field(default_factory=dict)  # flattened: "model.freeze" -> 0.3
    config_text: str = ""
    config_source: str = "resolved config.yaml"  # what config_text is, for the HTML page
    record: RunRecord | None = None  # finished runs only
    error: str = ""

    def ran(self, clf: str) -> bool:
        """Whether classifier ``clf`` ran in this (finished) run."""
        return self.record is not None and clf in self.record.classifiers

    def score(self, clf: str, split: str, metric: str) -> Any:
        """One number of the run record (e.g. ``head``, ``test``, ``accuracy``); None if absent."""
        if not self.ran(clf):
            return None
        return getattr(self.record.classifiers[clf].split(split), metric)

    @property
    def frozen_share(self) -> float | None:
        return self.record.freeze.frozen_share if self.record else None

    @property
    def last_epoch_accuracy(self) -> float | None:
        """Keras' running train accuracy of the last epoch (``history.accuracy[-1]``)."""
        return self.record.history.accuracy[-1] if self.record and self.record.history.accuracy else None

    @property
    def train_seconds(self) -> float | None:
        """Seconds of the ``train`` phase (fitting the model), None if not recorded."""
        return self.record.timings_s.get("train") if self.record else None


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class _Estimate:
    """A setting's test accuracy for one classifier, with its interval.

    One seed: the accuracy and its Wilson score interval (``LEVEL``) over the ``n_test``
    test images. Several seeds: the mean, and the lowest and highest seed.
    """

    value: float
    low: float
    high: float
    seeds: int
    n_test: int | None

    def text(self) -> str:
        return f"{self.value:.4f} [{self.low:.4f}, {self.high:.4f}]"

    def describe(self) -> str:
        """What the interval is, e.g. '1 seed, 95 % Wilson interval over 200 test images'."""
        if self.seeds == 1:
            return f"1 seed, {LEVEL_TEXT} Wilson interval over {self.n_test} test images"
        return f"mean of {self.seeds} seeds, lowest to highest seed"


@dataclass
class _Setting:
    """Runs that differ only in their seed (and bookkeeping)."""

    runs: list[_Run]
    # The keys besides backbone and freeze that tell this setting from the report's
    # others, as "key=value, ..."; "" when no other key differs.
    variant: str = ""

    @property
    def first(self) -> _Run:
        return self.runs[0]

    @property
    def backbone(self) -> str:
        return str(self.first.config.get("model.backbone"))

    @property
    def freeze(self) -> Any:
        return self.first.config.get("model.freeze")

    @property
    def share(self) -> float:
        shares = [r.frozen_share for r in self.runs]
        return sum(shares) / len(shares)

    @property
    def seeds(self) -> str:
        return " ".join(str(r.config.get("seed")) for r in self.runs)

    def label(self, *, backbone: bool = True) -> str:
        """'vgg16, 30 % frozen' (plus the variant, if any)."""
        parts = ([self.backbone] if backbone else []) + [f"{_fmt_freeze(self.freeze)} frozen"]
        return ", ".join(parts + ([self.variant] if self.variant else []))

    def accuracy(self, clf: str) -> _Estimate | None:
        """Test accuracy of ``clf`` over the seeds, with its interval; None if it never ran."""
        from tlexp.results._stats import wilson_interval

        runs = [r for r in self.runs if r.ran(clf)]
        if not runs:
            return None
        values = [r.score(clf, "test", "accuracy") for r in runs]
        if len(runs) == 1:
            n = runs[0].score(clf, "test", "n")
            low, high = wilson_interval(round(values[0] * n), n, LEVEL)
            return _Estimate(values[0], low, high, 1, n)
        return _Estimate(sum(values) / len(values), min(values), max(values), len(values), None)

    def mean(self, get: Callable[[_Run], float | None]) -> tuple[float | None, float | None]:
        return _mean_std([get(r) for r in self.runs])

    def spread(self, get: Callable[[_Run], float | None]) -> tuple[float, float | None, float | None] | None:
        """Mean, lowest and highest value over the seeds (no range for one seed); None if absent."""
        v = [x for x in (get(r) for r in self.runs) if x is not None]
        if not v:
            return None
        return sum(v) / len(v), (min(v) if len(v) > 1 else None), (max(v) if len(v) > 1 else None)


def _settings(done: Sequence[_Run]) -> list[_Setting]:
    """Group finished runs into settings, in the order of their first run."""
    groups: dict[str, list[_Run]] = {}
    for r in done:
        groups.setdefault(_setting_key(r), []).append(r)
    configs = [json.loads(k) for k in groups]
    varying = sorted(
        k
        for k in set().union(*configs) - {"model.backbone", "model.freeze"}
        if len({json.dumps(c.get(k), default=str) for c in configs}) > 1
    )
    return [
        _Setting(runs, ", ".join(f"{k}={_plain(runs[0].config.get(k))}" for k in varying)) for runs in groups.values()
    ]


def _setting_key(r: _Run) -> str:
    """The run's config without the keys in ``NOT_SETTING``, as a canonical string.

    Keys set to null are left out, so a run made before a key existed (absent) and one
    made after (null by default) fall in the same setting.
    """
    kept = {
        k: v
        for k, v in r.config.items()
        if v is not None and k.split(".", 1)[0] not in NOT_SETTING and k not in NOT_SETTING
    }
    return json.dumps(kept, sort_keys=True, default=str)


def _plain(value: Any) -> str:
    return "null" if value is None else str(value)


# --------------------------------------------------------------------------- tables


def _summary_rows(items: Sequence[_Run], clfs: list[str], out: Path) -> tuple[list[str], list[list[Any]]]:
    others = clfs[1:]
    header = [
        "name",
        "status",
        "backbone",
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
            "run_dir": _relative(r.dir, out) if r.dir else None,
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


def _relative(path: Path, out: Path) -> str:
    try:
        return os.path.relpath(Path(path).resolve(), out.resolve())
    except ValueError:  # another drive on Windows
        return str(path)


def _mean_columns(clfs: list[str]) -> list[tuple[str, str, Callable[[_Run], Any], int]]:
    """(CSV key, column label, value of a run, digits) of each number averaged over seeds."""

    def score(c: str, split: str, metric: str) -> Callable[[_Run], Any]:
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


def _by_setting(settings: Sequence[_Setting], clfs: list[str]):
    """Mean and std over seeds per setting, or None when no setting was run with several seeds.

    Returns:
        ``((header, rows), table)``: the CSV and the display table.
    """
    if not any(len(s.runs) > 1 for s in settings):
        return None
    varying = any(s.variant for s in settings)
    columns = _mean_columns(clfs)
    header = ["backbone", "freeze_requested", "frozen_share", "setting", "n_runs", "seeds", "runs"]
    header += [f"{key}_{s}" for key, *_ in columns for s in ("mean", "std")]
    csv_rows, shown = [], []
    for s in settings:
        stats = [s.mean(get) for _, _, get, _ in columns]
        csv_rows.append(
            [s.backbone, s.freeze, s.share, s.variant, len(s.runs), s.seeds, " ".join(r.name for r in s.runs)]
            + ["" if v is None else v for ms in stats for v in ms]
        )
        shown.append(
            [s.backbone, _fmt_freeze(s.freeze), _pct(s.share)]
            + ([s.variant] if varying else [])
            + [s.seeds]
            + [_fmt_mean_std(*ms, digits) for ms, (*_, digits) in zip(stats, columns, strict=True)]
        )
    table = _Table(
        ["backbone", "frozen (asked)", "frozen (achieved)"]
        + (["setting"] if varying else [])
        + ["seeds"]
        + [label for _, label, *_ in columns],
        shown,
        "lrr" + ("l" if varying else "") + "l" + "r" * len(columns),
    )
    return (header, csv_rows), table


def _mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof=1: seeds are a sample of possible runs)."""
    v = [x for x in values if x is not None]
    if not v:
        return None, None
    mean = sum(v) / len(v)
    std = math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else None
    return mean, std


def _sections(items, clfs, by_setting, paired_section) -> list[tuple[str, str, _Table | None]]:
    """(heading, intro paragraph, table) of each report section, shared by Markdown and HTML."""
    others = clfs[1:]
    problems = [r for r in items if r.status != "finished"]
    rows = []
    for r in items:
        cells = [
            r.name,
            str(r.config.get("model.backbone", "")),
            _fmt_freeze(r.config.get("model.freeze")),
            _pct(r.frozen_share),
            _fmt(r.config.get("seed"), 0),
            _fmt(r.last_epoch_accuracy),
            _fmt(r.score("head", "train", "accuracy")),
            _fmt(r.score("head", "val", "log_loss")),
            _fmt(r.score("head", "val", "accuracy")),
            _fmt(r.score("head", "test", "accuracy")),
        ]
        cells += [_fmt(r.score(c, "test", "accuracy")) for c in others]
        rows.append(cells + ([r.status] if problems else []))
    results = _Table(
        [
            "run",
            "backbone",
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
        "llrrr" + "r" * (5 + len(others)) + ("l" if problems else ""),
        {i for i, r in enumerate(items) if r.status != "finished"},
    )
    intro = (
        "Train/val/test columns without a classifier name are the dense head's"
        + (f"; {', '.join(others)}: classifiers fitted on the head's penultimate activations" if others else "")
        + ". Frozen: share of backbone parameters, as asked and as achieved by freezing whole layers.\n\n"
        + TRAIN_ACC_NOTE[0].upper()
        + TRAIN_ACC_NOTE[1:]
    )
    sections = [("Results", intro, results)]
    if by_setting:
        sections.append(
            (
                "Mean ± std over seeds",
                "One row per setting (every config key except the seed and bookkeeping such as output "
                "folders); std is the sample standard deviation over the seeds listed.",
                by_setting[1],
            )
        )
    if paired_section:
        sections.append(paired_section)
    if problems:
        sections.append(
            (
                "Failed and unfinished runs",
                "",
                _Table(
                    ["run", "backbone", "frozen (asked)", "seed", "status", "error"],
                    [
                        [
                            r.name,
                            str(r.config.get("model.backbone", "")),
                            _fmt_freeze(r.config.get("model.freeze")),
                            _fmt(r.config.get("seed"), 0),
                            r.status,
                            r.error,
                        ]
                        for r in problems
                    ],
                    "llrrll",
                ),
            )
        )
    return sections


def _count_line(items: Sequence[_Run]) -> str:
    n = {s: sum(r.status == s for r in items) for s in ("finished", "failed", "unfinished")}
    parts = [f"{v} {k}" for k, v in n.items() if v]
    return f"{len(items)} run(s): {', '.join(parts) or 'none'}."
