"""The report's tables: one row per run, means over seeds, paired head-vs-classifier tests. No TensorFlow.

Each table is built once and rendered both as Markdown (``summary.md``) and HTML
(``report.html``), so the two never disagree; the same rows go to the CSV files.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlexp import files
from tlexp.results import runfolder
from tlexp.results.record import RunRecord
from tlexp.results.tables import _fmt, _fmt_freeze, _fmt_mean_std, _fmt_p, _pct, _Table

ALPHA = 0.05  # significance level of the paired tests' one-line readings
# Config keys that do not make a setting: seeds vary within one, the rest is bookkeeping
# (``sweep`` is the grid that produced the run, not a property of the run).
NOT_SETTING = frozenset({"seed", "name", "output.dir", "data.split_seed", "sweep"})


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
        "head_train_accuracy",
        "head_val_loss",
        "head_val_accuracy",
        "head_test_loss",
        "head_test_accuracy",
    ]
    header += [f"{c}_{s}_accuracy" for c in others for s in ("val", "test")]
    header += [f"{c}_test_{k}" for c in clfs for k in ("f1", "roc_auc")]
    header += ["epochs", "wall_time_s", "cached_prefix", "device", "run_dir", "error"]
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
            "epochs": rec.history.epochs if rec else None,  # epochs actually run
            "wall_time_s": rec.timings_s.get("total") if rec else None,
            "cached_prefix": rec.prefix_cache.describe() if rec else None,
            "device": rec.environment.device if rec else None,
            "run_dir": _relative(r.dir, out) if r.dir else None,
            "error": r.error,
        }
        for c in clfs:
            for split in ("train", "val", "test"):  # more than the header asks for; the header picks
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


# (classifier, split, metrics.json key, column label) averaged over seeds, besides each
# other classifier's test accuracy and the wall time.
_MEAN_METRICS = [
    ("head", "train", "accuracy", "train acc"),
    ("head", "val", "log_loss", "val loss"),
    ("head", "val", "accuracy", "val acc"),
    ("head", "test", "accuracy", "test acc"),
]


def _by_setting(done: Sequence[_Run], clfs: list[str]):
    """Mean and std over seeds per setting, or None when no setting was run with several seeds.

    Returns:
        ``((header, rows), table)``: the CSV and the display table.
    """
    groups: dict[str, list[_Run]] = {}
    for r in done:
        groups.setdefault(_setting_key(r), []).append(r)
    if not any(len(g) > 1 for g in groups.values()):
        return None
    # Keys (besides backbone and freeze) that differ between settings: shown so that two
    # rows with the same backbone and freeze can be told apart.
    settings = [json.loads(k) for k in groups]
    varying = sorted(
        k
        for k in set().union(*settings) - {"model.backbone", "model.freeze"}
        if len({json.dumps(s.get(k), default=str) for s in settings}) > 1
    )
    metrics = _MEAN_METRICS + [(c, "test", "accuracy", f"{c} test acc") for c in clfs[1:]]
    keys = [f"{c}_{s}_{'loss' if k == 'log_loss' else k}" for c, s, k, _ in metrics] + ["wall_time_s"]
    labels = [label for *_, label in metrics] + ["time (s)"]
    header = ["backbone", "freeze_requested", "frozen_share", "setting", "n_runs", "seeds", "runs"]
    header += [f"{k}_{s}" for k in keys for s in ("mean", "std")]
    csv_rows, shown = [], []
    for g in groups.values():
        first = g[0]
        setting = ", ".join(f"{k}={first.config.get(k)}" for k in varying)
        stats = [_mean_std([r.score(c, s, k) for r in g]) for c, s, k, _ in metrics]
        stats.append(_mean_std([r.record.timings_s.get("total") for r in g]))
        shares = [r.frozen_share for r in g]
        seeds = " ".join(str(r.config.get("seed")) for r in g)
        csv_rows.append(
            [
                first.config.get("model.backbone"),
                first.config.get("model.freeze"),
                sum(shares) / len(shares),
                setting,
                len(g),
                seeds,
                " ".join(r.name for r in g),
            ]
            + ["" if v is None else v for ms in stats for v in ms]
        )
        digits = [4] * len(metrics) + [1]
        shown.append(
            [
                str(first.config.get("model.backbone")),
                _fmt_freeze(first.config.get("model.freeze")),
                _pct(sum(shares) / len(shares)),
            ]
            + ([setting] if varying else [])
            + [seeds]
            + [_fmt_mean_std(*ms, d) for ms, d in zip(stats, digits, strict=True)]
        )
    table = _Table(
        ["backbone", "frozen (asked)", "frozen (achieved)"] + (["setting"] if varying else []) + ["seeds"] + labels,
        shown,
        "lrr" + ("l" if varying else "") + "l" + "r" * len(labels),
    )
    return (header, csv_rows), table


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


def _mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof=1: seeds are a sample of possible runs)."""
    v = [x for x in values if x is not None]
    if not v:
        return None, None
    mean = sum(v) / len(v)
    std = math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else None
    return mean, std


_PAIRED_HEADER = [
    "run",
    "backbone",
    "freeze_requested",
    "frozen_share",
    "seed",
    "classifier_a",
    "classifier_b",
    "split",
    "n",
    "accuracy_a",
    "accuracy_b",
    "b",
    "c",
    "p_value",
    "diff",
    "diff_low",
    "diff_high",
    "reading",
]


def _paired(done: Sequence[_Run], clfs: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """Head vs each other classifier on each run's test split, from ``predictions.csv``.

    Returns:
        ``(rows, notes)``: one dict per comparison (keys ``_PAIRED_HEADER``), and notes
        about runs that could not be compared.
    """
    import numpy as np

    from tlexp.results.stats import bootstrap_ci, mcnemar

    rows, notes = [], []
    for r in done:
        path = r.dir / runfolder.PREDICTIONS_FILE
        others = [c for c in clfs[1:] if r.ran(c)]
        if not others:
            continue
        if not path.is_file():
            notes.append(f"{r.name}: no {runfolder.PREDICTIONS_FILE}, so its classifiers were not compared.")
            continue
        test = [p for p in files.read_csv(path) if p.get("split") == "test"]
        if not test:
            notes.append(f"{r.name}: {runfolder.PREDICTIONS_FILE} holds no test-split rows; not compared.")
            continue
        label = np.array([p["label"] for p in test])
        right_a = np.array([p.get("head") for p in test]) == label
        for c in others:
            if c not in test[0]:
                notes.append(f"{r.name}: {runfolder.PREDICTIONS_FILE} has no column {c!r}; head vs {c} not compared.")
                continue
            right_b = np.array([p[c] for p in test]) == label
            t, ci = mcnemar(right_a, right_b), bootstrap_ci(right_a, right_b)
            p = _fmt_p(t["p_value"])
            p = p if p.startswith("<") else f"={p}"
            if t["p_value"] < ALPHA:
                reading = f"{c if t['c'] > t['b'] else 'head'} better, p{p}"
            else:
                reading = f"no significant difference (p{p})"
            rows.append(
                {
                    "run": r.name,
                    "backbone": r.config.get("model.backbone"),
                    "freeze_requested": r.config.get("model.freeze"),
                    "frozen_share": r.frozen_share,
                    "seed": r.config.get("seed"),
                    "classifier_a": "head",
                    "classifier_b": c,
                    "split": "test",
                    "n": t["n"],
                    "accuracy_a": t["accuracy_a"],
                    "accuracy_b": t["accuracy_b"],
                    "b": t["b"],
                    "c": t["c"],
                    "p_value": t["p_value"],
                    "diff": ci["diff"]["estimate"],
                    "diff_low": ci["diff"]["low"],
                    "diff_high": ci["diff"]["high"],
                    "reading": reading,
                }
            )
    return rows, notes


def _sections(items, clfs, by_setting, paired, notes) -> list[tuple[str, str, _Table | None]]:
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
            "train acc",
            "val loss",
            "val acc",
            "test acc",
        ]
        + [f"{c} test acc" for c in others]
        + (["status"] if problems else []),
        rows,
        "llrrr" + "r" * (4 + len(others)) + ("l" if problems else ""),
        {i for i, r in enumerate(items) if r.status != "finished"},
    )
    intro = (
        "Train/val/test columns without a classifier name are the dense head's"
        + (f"; {', '.join(others)}: classifiers fitted on the head's penultimate activations" if others else "")
        + ". Frozen: share of backbone parameters, as asked and as achieved by freezing whole layers."
    )
    sections = [("Results", intro, results)]
    if by_setting:
        sections.append(
            (
                "Mean ± std over seeds",
                "One row per setting (every config key except the seed); "
                "std is the sample standard deviation over seeds.",
                by_setting[1],
            )
        )
    if paired or notes:
        k = len(paired)
        intro = (
            f"Test split, same images for both. b = head right and the other wrong, c = the reverse; "
            f"p = exact McNemar test; Δ = other − head accuracy with a paired bootstrap 95 % CI. "
            f"Reading at α = {ALPHA}"
        )
        intro += f"; with {k} tests, about {k * ALPHA:.1f} would read as significant by chance alone." if k > 1 else "."
        intro += "".join(f"\n\n{n}" for n in notes)
        table = (
            _Table(
                ["run", "head vs", "n", "b", "c", "p", "Δ accuracy [95 % CI]", "reading"],
                [
                    [
                        p["run"],
                        p["classifier_b"],
                        str(p["n"]),
                        str(p["b"]),
                        str(p["c"]),
                        _fmt_p(p["p_value"]),
                        f"{p['diff']:+.4f} [{p['diff_low']:+.4f}, {p['diff_high']:+.4f}]",
                        p["reading"],
                    ]
                    for p in paired
                ],
                "llrrrrrl",
            )
            if paired
            else None
        )
        sections.append(("Head vs other classifiers", intro, table))
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
