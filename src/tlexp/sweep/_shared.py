"""What every worker of a sweep needs: the checks before it starts, the data prepared once,
the sweep folder, the progress lines."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tlexp import runfolder
from tlexp.claims import Claim, Liveness
from tlexp.config import Cell, Config, flatten
from tlexp.errors import UserError

if TYPE_CHECKING:
    from tlexp.sweep._worker import _Worker

log = logging.getLogger("tlexp")

SWEEP_FILE = "sweep.yaml"  # base config + grid of the sweep that runs (or ran last) in the folder
STATUS_FILE = "status.json"  # one entry per cell: status, attempts, timings, last error, worker
ATTEMPTS_DIR = ".attempts"  # unfinished earlier attempts of cells, kept for their logs
CLAIMS_DIR = ".claims"  # one file per attempt at a cell (and at @start, @summary): who, heartbeat, outcome
START, SUMMARY = "@start", "@summary"  # claims that are locks: no cell name holds an '@'

# Compared between a finished cell and the config that would run it now. output.dir is
# not: moving a results folder does not change what a cell means.
_IGNORED_KEYS = ("output.dir",)
# Also not compared between workers: the folder's name and place (a shared file system
# may be mounted at different paths on different hosts).
_SAME_SWEEP_IGNORED = ("name", "output.dir")


@dataclass
class SweepResult:
    """What :func:`run_sweep` did (in this process and, with ``workers``, its workers)."""

    dir: Path
    finished: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # finished before this invocation
    report: dict[str, Path] = field(default_factory=dict)  # empty unless this process wrote the summary
    exit_code: int = 0  # 0 done; 1 a cell failed; with workers: the worst of theirs


class _Progress:
    """Claims, status updates and the one-line-per-cell progress display, for any executor."""

    def __init__(self, worker: _Worker, result: SweepResult):
        self.w, self.result = worker, result
        self.claims: dict[str, Claim] = {}
        self.labels: dict[str, str] = {}
        self.t0 = time.perf_counter()
        self.durations: list[float] = []

    def start(self, cell: Cell, claim: Claim, prev: Claim | None) -> None:
        w = self.w
        self.claims[cell.name] = claim
        # Cells finished, running, or failed in this round (this one included): what a
        # single worker counts as done or begun.
        begun = 0
        for n in w.names:
            c = w.claims.latest(n)
            begun += _finished(w.dir / n) or (
                c is not None and (c.state == "running" or (c.state == "failed" and c.n > w.failed_before.get(n, 0)))
            )
        total = len(w.names)
        label = self.labels[cell.name] = f"[{begun:>{len(str(total))}}/{total}] {cell.name}"
        cell_dir = w.dir / cell.name
        if cell_dir.exists():
            moved = _set_aside(w.dir, cell_dir)
            log.info("sweep: %s: an unfinished earlier attempt was moved to %s; running it again", label, moved)
        log.info("sweep: %s: started", label)
        w.write_status()

    def interrupted(self, name: str) -> None:
        self.w.claims.end(self.claims.pop(name), "interrupted")
        self.w.write_status()
        log.error("sweep: %s: interrupted; re-run the same command to continue", self.labels[name])

    def done(self, cell: Cell, seconds: float, error: BaseException | None) -> None:
        w, label = self.w, self.labels[cell.name]
        claim = self.claims.pop(cell.name)
        if error is None:
            w.claims.end(claim, "finished", seconds=round(seconds, 3), error=None)
            self.result.finished.append(cell.name)
            log.info("sweep: %s: finished in %s (%s)", label, _hms(seconds), _headline(w.dir / cell.name))
        else:
            message = f"{type(error).__name__}: {error}".strip()
            w.claims.end(claim, "failed", seconds=round(seconds, 3), error=message)
            self.result.failed.append(cell.name)
            log.error("sweep: %s: FAILED after %s: %s", label, _hms(seconds), message.splitlines()[0])
        w.write_status()
        self.durations.append(seconds)
        left = sum(e["status"] in ("pending", "interrupted", "running") for e in w.status_entries())
        others = {c.owner for c, _ in w.claims.held_by_others(w.names) if c.owner}
        eta = ""
        if left:
            mean = sum(self.durations) / len(self.durations)
            eta = f", about {_hms(mean * math.ceil(left / (1 + len(others))))} left"
        log.info("sweep: elapsed %s%s", _hms(time.perf_counter() - self.t0), eta)


# --------------------------------------------------------------------------- checks and shared work


def _check_weights(cells: list[Cell]) -> None:
    """Fail the whole sweep at once, before any cell, when a weights file is missing or
    corrupt, rather than let every cell of that backbone fail one after another. (Under
    ``@start``: a download happens once, not once per worker into the same file.) A Keras
    backend that is not installed fails here too."""
    from tlexp.model import check_backend, resolve_weights

    check_backend()
    seen = set()
    for c in cells:
        key = (c.config.model.backbone, c.config.model.weights, c.config.model.download)
        if key not in seen:
            seen.add(key)
            resolve_weights(*key)


def _prepare_shared_data(cells: list[Cell]) -> None:
    """What every cell needs and would otherwise build at once: the demo data, the data
    check (cached) and the decoded-image cache, once per distinct ``data`` section.

    Runs in the worker before any cell, so Ray tasks and other workers find them ready (the
    caches are also safe to build concurrently: each is built in a temporary folder and
    renamed; this only saves the duplicate work). A dataset problem fails the sweep here.
    """
    from tlexp.data import make_decoder, prepare_data

    seen = set()
    for c in cells:
        key = json.dumps(c.config.data.model_dump(mode="json"), sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        ds, check = prepare_data(c.config)
        make_decoder(c.config, ds, check)


def _refuse_other_config(sweep_dir: Path, sweep_file: dict[str, Any], others: list[tuple[Claim, Liveness]]) -> None:
    """While other workers run this folder, only the same sweep may join them."""
    if not others:
        return
    stored = _read_yaml(sweep_dir / SWEEP_FILE)
    if stored is None:
        return
    old = flatten({"grid": stored.get("grid", {}), **stored.get("base", {})})
    now = flatten({"grid": sweep_file["grid"], **sweep_file["base"]})
    diff = sorted(k for k in old.keys() | now.keys() if k not in _SAME_SWEEP_IGNORED and old.get(k) != now.get(k))
    if diff:
        shown = "; ".join(f"{k}: {old.get(k)!r} -> {now.get(k)!r}" for k in diff[:8])
        raise UserError(
            f"Other workers ({', '.join(sorted({c.owner.label for c, _ in others if c.owner}))}) are running "
            f"{sweep_dir} with another config ({shown}). Start every worker of a sweep with the same config and "
            "overrides, or pass --new to start a new sweep folder."
        )


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


def _mlflow_parent(cfg: Config, sweep_dir: Path) -> str | None:
    """The sweep's parent MLflow run (reused on re-runs), or None without MLflow."""
    if not cfg.tracking.mlflow.uri:
        return None
    from tlexp.results import require_mlflow, sweep_parent

    require_mlflow(cfg.tracking.mlflow.uri)
    return sweep_parent(cfg.tracking.mlflow.uri, cfg.tracking.mlflow.experiment, sweep_dir, sweep_dir.name)


# --------------------------------------------------------------------------- folder


def _open_sweep_dir(parent: Path, name: str, new: bool) -> Path:
    """The sweep folder to use: ``<output.dir>/<name>`` (resumed or joined), or a fresh one.

    A new folder appears whole, with its ``.claims`` folder in it, so that a worker that
    comes a moment later never takes it for someone else's folder.
    """
    if new:
        sweep_dir = runfolder.new_run_dir(parent, name)
        (sweep_dir / CLAIMS_DIR).mkdir()
        return sweep_dir
    target = parent / runfolder.safe_name(name)
    if not target.exists():
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".new-{target.name}-", dir=parent))
        try:
            (tmp / CLAIMS_DIR).mkdir()
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700 would shut out the other users of a shared folder
            os.rename(tmp, target)
        except OSError:
            if not (target / CLAIMS_DIR).is_dir():  # not another worker's new sweep folder
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target
    if not (target / SWEEP_FILE).is_file() and not (target / CLAIMS_DIR).is_dir():
        raise UserError(
            f"'{target}' exists and is not a sweep folder (no {SWEEP_FILE}); it is left alone. "
            "Set name=<another name> or pass --new."
        )
    (target / CLAIMS_DIR).mkdir(exist_ok=True)  # a sweep folder of an older tlexp
    return target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
    from tlexp.results import load_record

    record = load_record(cell_dir)
    return "test accuracy " + ", ".join(f"{k} {v.test.accuracy:.4f}" for k, v in record.classifiers.items())


def _read_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def _legacy_status(path: Path) -> dict[str, dict[str, Any]]:
    """status.json's entries by cell (for cells an older tlexp ran, which have no claims)."""
    try:
        return {c["name"]: c for c in json.loads(path.read_text()).get("cells", [])}
    except (OSError, ValueError):
        return {}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
