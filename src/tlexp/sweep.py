"""Many runs from one config: expand the grid, run the cells, resume, record failures.

A sweep folder holds ``sweep.yaml`` (the base config and the grid), ``status.json`` (one
entry per cell), one ordinary run folder per cell, and the summary written by
:func:`tlexp.results.report.build_report`. A cell is finished exactly when its run folder holds
``metrics.json`` (written last and atomically), so a killed sweep never leaves a
half-written result that a re-run would trust: re-running the same command skips
finished cells, moves unfinished attempts to ``.attempts/`` and redoes them, and retries
failed ones.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from tlexp import files
from tlexp.config import Cell, Config, expand_sweep, flatten
from tlexp.errors import UserError
from tlexp.results import runfolder

log = logging.getLogger("tlexp")

SWEEP_FILE = "sweep.yaml"  # base config + grid; written when the sweep folder is created
STATUS_FILE = "status.json"  # one entry per cell: status, attempts, timings, last error
ATTEMPTS_DIR = ".attempts"  # unfinished earlier attempts of cells, kept for their logs

# Compared between a finished cell and the config that would run it now. output.dir is
# not: moving a results folder does not change what a cell means.
_IGNORED_KEYS = ("output.dir",)


@dataclass
class SweepResult:
    """What :func:`run_sweep` did."""

    dir: Path
    finished: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # finished before this invocation
    report: dict[str, Path] = field(default_factory=dict)


def run_sweep(
    cfg: Config, *, new: bool = False, default_name: str = "sweep", executor: str = "local", address: str | None = None
) -> SweepResult:
    """Run every cell of ``cfg.sweep`` that has not finished yet, then write the summary.

    Args:
        cfg: validated config with a non-empty ``sweep`` section.
        new: start a new sweep folder (``name2``, ...) instead of resuming ``name``.
        default_name: sweep folder name when ``cfg.name`` is not set (the CLI passes the
            config file's stem, so ``configs/study.yaml`` sweeps into ``results/study``).
        executor: ``local`` (cells one after another in this process) or ``ray`` (each
            cell a Ray task asking ``cfg.resources`` CPUs/GPUs; the sweep folder must be
            on a filesystem every Ray node sees).
        address: Ray cluster address (``ray://host:10001``, ``auto``); None starts a
            local Ray runtime.

    Returns:
        The sweep folder and which cells finished, failed or were already done.

    Raises:
        UserError: no grid; the folder is not a sweep folder; finished cells were run
            with a config that differs from the current one (use ``new=True``).
        KeyboardInterrupt: after recording the interrupted cell.
    """
    if executor not in ("local", "ray"):
        raise UserError(f"--executor must be 'local' or 'ray'. Got {executor!r} instead.")
    if executor == "ray":
        from tlexp.sweep_ray import import_ray

        import_ray()  # a missing extra fails before anything is written
    if not cfg.sweep:
        raise UserError(
            "This config has no sweep: section, so there is no grid to run. Add e.g. "
            "sweep: {model.freeze: [0.1, 0.3]}, or use 'tlexp run' for a single run."
        )
    cells = expand_sweep(cfg)
    sweep_dir = _open_sweep_dir(cfg, cfg.name or default_name, new)
    _refuse_changed_cells(sweep_dir, cells)
    _check_weights(cells)
    status = _Status(sweep_dir, cells)
    result = SweepResult(sweep_dir)
    parent = _mlflow_parent(cfg, sweep_dir)
    todo = [c for c in cells if not _finished(sweep_dir / c.name)]
    result.skipped = [c.name for c in cells if c not in todo]
    log.info(
        "sweep: %s: %d cells, %d finished before, %d to run", sweep_dir, len(cells), len(result.skipped), len(todo)
    )

    progress = _Progress(sweep_dir, cells, status, result, len(todo))
    if executor == "ray":
        from tlexp.sweep_ray import run_with_ray

        run_with_ray(todo, progress, parent, cfg, address)
    else:
        for cell in todo:
            progress.start(cell)
            t_cell = time.perf_counter()
            try:
                _run_cell(cell, sweep_dir / cell.name, parent)
            except KeyboardInterrupt:
                progress.interrupted(cell)
                raise
            except Exception as e:
                if not isinstance(e, UserError):
                    log.debug("sweep: %s traceback:\n%s", cell.name, traceback.format_exc())
                progress.done(cell, time.perf_counter() - t_cell, e)
            else:
                progress.done(cell, time.perf_counter() - t_cell, None)

    from tlexp.results.report import build_report

    done = [sweep_dir / c.name for c in cells if _finished(sweep_dir / c.name)]
    failed = [
        {
            "name": c.name,
            "overrides": c.overrides,
            "config": c.config.to_dict(),
            "error": status.cells[c.name].get("error") or "not run yet",
        }
        for c in cells
        if not _finished(sweep_dir / c.name)
    ]
    result.report = build_report(done, sweep_dir, failed=failed, title=f"tlexp sweep {sweep_dir.name}")
    log.info("sweep: summary in %s (%d finished, %d failed)", sweep_dir, len(done), len(failed))
    if failed:
        log.warning(
            "sweep: failed cells: %s; re-run the same command to retry them", ", ".join(f["name"] for f in failed)
        )
    return result


def plan_sweep(cfg: Config) -> dict[str, Any]:
    """The cells of a sweep with their freeze plans, without training.

    Returns:
        ``{"cells": [{"name", "overrides", "plan"}], "data": ...}`` where ``plan`` is
        :func:`tlexp.experiment.plan_experiment`'s result for the cell.
    """
    from tlexp.experiment import plan_experiment

    cache: dict[Any, Any] = {}
    cells = [
        {"name": c.name, "overrides": c.overrides, "plan": plan_experiment(c.config, cache)} for c in expand_sweep(cfg)
    ]
    return {"cells": cells, "data": cells[0]["plan"]["data"] if cells else None}


# --------------------------------------------------------------------------- cells


class _Progress:
    """Status updates and the one-line-per-cell progress display, for any executor."""

    def __init__(self, sweep_dir: Path, cells: list[Cell], status: _Status, result: SweepResult, todo: int):
        self.sweep_dir, self.status, self.result = sweep_dir, status, result
        self.total, self.todo, self.index = len(cells), todo, 0
        self.labels: dict[str, str] = {}
        self.t0 = time.perf_counter()
        self.durations: list[float] = []

    def start(self, cell: Cell) -> None:
        self.index += 1
        label = self.labels[cell.name] = (
            f"[{len(self.result.skipped) + self.index:>{len(str(self.total))}}/{self.total}] {cell.name}"
        )
        cell_dir = self.sweep_dir / cell.name
        if cell_dir.exists():
            moved = _set_aside(self.sweep_dir, cell_dir)
            log.info("sweep: %s: an unfinished earlier attempt was moved to %s; running it again", label, moved)
        log.info("sweep: %s: started", label)
        self.status.update(
            cell.name,
            status="running",
            started=_now(),
            finished=None,
            seconds=None,
            attempts=self.status.attempts(cell.name) + 1,
        )

    def interrupted(self, cell: Cell) -> None:
        self.status.update(cell.name, status="interrupted", finished=_now())
        log.error("sweep: %s: interrupted; re-run the same command to continue", self.labels[cell.name])

    def done(self, cell: Cell, seconds: float, error: BaseException | None) -> None:
        label = self.labels[cell.name]
        if error is None:
            self.status.update(cell.name, status="finished", finished=_now(), seconds=round(seconds, 3), error=None)
            self.result.finished.append(cell.name)
            log.info("sweep: %s: finished in %s (%s)", label, _hms(seconds), _headline(self.sweep_dir / cell.name))
        else:
            message = f"{type(error).__name__}: {error}".strip()
            self.status.update(cell.name, status="failed", finished=_now(), seconds=round(seconds, 3), error=message)
            self.result.failed.append(cell.name)
            log.error("sweep: %s: FAILED after %s: %s", label, _hms(seconds), message.splitlines()[0])
        self.durations.append(seconds)
        left = self.todo - len(self.durations)
        eta = f", about {_hms(left * sum(self.durations) / len(self.durations))} left" if left else ""
        log.info("sweep: elapsed %s%s", _hms(time.perf_counter() - self.t0), eta)


def _run_cell(cell: Cell, cell_dir: Path, mlflow_parent: str | None) -> None:
    from tlexp.experiment import run_experiment

    try:
        run_experiment(cell.config, run_dir=cell_dir, mlflow_parent=mlflow_parent)
    finally:
        # Free the cell's graphs and reset Keras' layer-name counters, so every cell
        # starts as a fresh process would (auto-named layers keep their names).
        import keras

        keras.backend.clear_session()


def _check_weights(cells: list[Cell]) -> None:
    """Fail the whole sweep at once, before any cell, when a weights file is missing or
    corrupt, rather than let every cell of that backbone fail one after another."""
    from tlexp.model.weights import resolve_weights

    seen = set()
    for c in cells:
        key = (c.config.model.backbone, c.config.model.weights, c.config.model.download)
        if key not in seen:
            seen.add(key)
            resolve_weights(*key)


def _mlflow_parent(cfg: Config, sweep_dir: Path) -> str | None:
    """The sweep's parent MLflow run (reused on re-runs), or None without MLflow."""
    if not cfg.tracking.mlflow.uri:
        return None
    from tlexp.results.tracking import require_mlflow, sweep_parent

    require_mlflow(cfg.tracking.mlflow.uri)
    return sweep_parent(cfg.tracking.mlflow.uri, cfg.tracking.mlflow.experiment, sweep_dir, sweep_dir.name)


def _finished(cell_dir: Path) -> bool:
    return (cell_dir / runfolder.METRICS_FILE).is_file()


def _set_aside(sweep_dir: Path, cell_dir: Path) -> Path:
    """Move an unfinished attempt out of the way (kept, never deleted: its log explains it)."""
    attempts = sweep_dir / ATTEMPTS_DIR
    attempts.mkdir(exist_ok=True)
    target = runfolder.new_run_dir(attempts, f"{cell_dir.name}.attempt")
    target.rmdir()  # new_run_dir reserved a free name; os.replace needs it absent
    os.replace(cell_dir, target)
    return target


def _headline(cell_dir: Path) -> str:
    from tlexp.results.record import load_record

    record = load_record(cell_dir)
    return "test accuracy " + ", ".join(f"{k} {v.test.accuracy:.4f}" for k, v in record.classifiers.items())


# --------------------------------------------------------------------------- folder and status


def _open_sweep_dir(cfg: Config, name: str, new: bool) -> Path:
    """The sweep folder to use: ``<output.dir>/<name>`` (resumed), or a fresh one."""
    parent = Path(cfg.output.dir)
    target = parent / runfolder.safe_name(name)
    if new or not target.exists():
        sweep_dir = runfolder.new_run_dir(parent, name) if new else _mkdir(target)
        base = cfg.to_dict()
        grid = base.pop("sweep")
        files.write_yaml(sweep_dir / SWEEP_FILE, {"grid": grid, "base": base})
        return sweep_dir
    if not (target / SWEEP_FILE).is_file():
        raise UserError(
            f"'{target}' exists and is not a sweep folder (no {SWEEP_FILE}); it is left alone. "
            "Set name=<another name> or pass --new."
        )
    return target


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def _refuse_changed_cells(sweep_dir: Path, cells: list[Cell]) -> None:
    """Refuse to mix results: a finished cell whose config differs from what would run now."""
    changes: dict[str, tuple[Any, Any]] = {}
    affected = []
    for cell in cells:
        stored_file = sweep_dir / cell.name / runfolder.CONFIG_FILE
        if not _finished(sweep_dir / cell.name):
            continue
        stored = flatten(yaml.safe_load(stored_file.read_text()))
        now = flatten(cell.config.to_dict())
        diff = {
            k: (stored.get(k), now.get(k))
            for k in stored.keys() | now.keys()
            if k not in _IGNORED_KEYS and stored.get(k) != now.get(k)
        }
        if diff:
            affected.append(cell.name)
            changes.update(diff)
    if affected:
        shown = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(changes.items())[:8])
        raise UserError(
            f"The config changed since {len(affected)} cell(s) of {sweep_dir} finished ({shown}), so their results "
            "would not mean what the rest of the sweep means. Pass --new to start a new sweep folder, or undo the "
            "change to continue this one. (Adding values to the grid only adds cells; that needs neither.)"
        )


class _Status:
    """``status.json``: one entry per cell of the current grid, rewritten atomically on
    every change, so it can be watched while the sweep runs."""

    def __init__(self, sweep_dir: Path, cells: list[Cell]):
        self.path = sweep_dir / STATUS_FILE
        old = {}
        if self.path.is_file():
            import json

            old = {c["name"]: c for c in json.loads(self.path.read_text()).get("cells", [])}
        self.sweep = sweep_dir.name
        self.cells: dict[str, dict[str, Any]] = {}
        for c in cells:
            entry = {
                "name": c.name,
                "overrides": c.overrides,
                "status": "pending",
                "attempts": 0,
                "started": None,
                "finished": None,
                "seconds": None,
                "error": None,
            }
            entry.update({k: v for k, v in old.get(c.name, {}).items() if k in entry and k != "overrides"})
            # The folder, not the old status file, says what is done: a process killed
            # between writing metrics.json and status.json must not redo a cell.
            if _finished(sweep_dir / c.name):
                entry.update(status="finished", error=None)
            elif entry["status"] in ("running", "finished"):
                entry["status"] = "interrupted"
            self.cells[c.name] = entry
        self._write()

    def attempts(self, name: str) -> int:
        return int(self.cells[name]["attempts"])

    def update(self, name: str, **values: Any) -> None:
        self.cells[name].update(values)
        self._write()

    def _write(self) -> None:
        counts: dict[str, int] = {}
        for c in self.cells.values():
            counts[c["status"]] = counts.get(c["status"], 0) + 1
        files.write_json(
            self.path, {"sweep": self.sweep, "updated": _now(), "counts": counts, "cells": list(self.cells.values())}
        )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
