"""The report's runs: one :class:`ReportRun` per run folder or failed sweep entry. No TensorFlow.

A run is read only from what its folder holds (``config.yaml``, ``metrics.json``), so a
report can be rebuilt at any time without TensorFlow. A folder without ``metrics.json``
is ``unfinished``, never read as a result; a sweep entry that failed before making a
folder is ``failed``, listed with its config but never averaged or plotted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tlexp import runfolder
from tlexp.config import flatten
from tlexp.results._record import RunRecord, load_record


@dataclass
class ReportRun:
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

    def dir_from(self, out: Path) -> str | None:
        """The run folder as a path relative to the report folder ``out``; None without a folder."""
        if not self.dir:
            return None
        try:
            return os.path.relpath(Path(self.dir).resolve(), out.resolve())
        except ValueError:  # another drive on Windows
            return str(self.dir)


def load_run(run_dir: Path) -> ReportRun:
    """The report's row of a run folder: ``finished`` with its record, else ``unfinished``.

    Raises:
        RecordError: The folder's ``metrics.json`` is not a run record tlexp can read.
    """
    config_file = run_dir / runfolder.CONFIG_FILE
    text = config_file.read_text(encoding="utf-8") if config_file.is_file() else ""
    config = flatten(yaml.safe_load(text) or {}) if text else {}
    name = str(config.get("name") or run_dir.name)
    metrics_file = run_dir / runfolder.METRICS_FILE
    if not metrics_file.is_file():
        return ReportRun(
            name,
            "unfinished",
            run_dir,
            config,
            text,
            error=f"no {runfolder.METRICS_FILE}: the run has not finished (still running, or stopped)",
        )
    record = load_record(run_dir)
    return ReportRun(record.run.name, "finished", run_dir, config, text, record=record)


def failed_run(entry: dict[str, Any]) -> ReportRun:
    """The report's row of a sweep entry that failed (the ``failed`` of :func:`~tlexp.results.build_report`)."""
    overrides = dict(entry.get("overrides") or {})
    config = {**flatten(entry.get("config") or {}), **overrides}
    shown = entry.get("config") or overrides
    lines = str(entry.get("error", "")).strip().splitlines()
    run_dir = Path(entry["run_dir"]) if entry.get("run_dir") else None
    text = yaml.safe_dump(shown, sort_keys=False) if shown else ""
    return ReportRun(
        str(entry.get("name", "?")),
        "failed",
        run_dir,
        config,
        text,
        "resolved config" if entry.get("config") else "sweep overrides",
        error=lines[0] if lines else "",
    )
