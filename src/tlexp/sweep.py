"""Many runs from one config: expand the grid, run the cells, resume, record failures.

A sweep folder holds ``sweep.yaml`` (the base config and the grid), ``status.json`` (one
entry per cell), one ordinary run folder per cell, the claims of its workers
(``.claims/``) and the summary written by :func:`tlexp.results.report.build_report`. A
cell is finished exactly when its run folder holds ``metrics.json`` (written last and
atomically), so a killed sweep never leaves a half-written result that a re-run would
trust: re-running the same command skips finished cells, moves unfinished attempts to
``.attempts/`` and redoes them, and retries failed ones.

Any number of ``tlexp sweep`` processes (workers) can share one folder, on one machine
or on several that see the same file system. A worker runs a cell only after claiming it
(:mod:`tlexp.claims`: an exclusively created file per attempt, with a heartbeat), so the
workers split the cells between them, and one takes over the cell of a worker that died.
The start of a worker (checks, shared data, ``sweep.yaml``) happens under the claim
``@start``, one worker at a time; the summary is written under the claim ``@summary`` by
the worker that ends last. ``status.json`` is a view of the claims, rebuilt atomically by
whichever worker changed one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from tlexp import files
from tlexp.claims import Claim, Claims, Liveness, owners
from tlexp.config import Cell, Config, expand_sweep, flatten
from tlexp.errors import UserError
from tlexp.results import runfolder

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


def run_sweep(
    cfg: Config,
    *,
    new: bool = False,
    default_name: str = "sweep",
    executor: str = "local",
    address: str | None = None,
    workers: int | str = 1,
) -> SweepResult:
    """Run every cell of ``cfg.sweep`` that has not finished yet, then write the summary.

    Other ``tlexp sweep`` processes may work on the same sweep folder at the same time
    (started by hand, as a Slurm array, or with ``workers``): the cells are split between
    them, and the summary is written once, by the one that ends last.

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
        workers: number of worker processes to start on this machine, each pinned to one
            GPU (``CUDA_VISIBLE_DEVICES``), or ``"auto"``: one per visible GPU (1 without
            GPUs, then in this process). This process prepares the sweep, waits for them,
            and forwards Ctrl-C and SIGTERM to them.

    Returns:
        The sweep folder and which cells finished, failed or were already done.

    Raises:
        UserError: no grid; the folder is not a sweep folder; finished cells were run
            with a config that differs from the current one (use ``new=True``); another
            worker runs this folder with another config; Ray cannot meet ``resources``.
        KeyboardInterrupt: after recording the interrupted cell.
    """
    if executor not in ("local", "ray"):
        raise UserError(f"--executor must be 'local' or 'ray'. Got {executor!r} instead.")
    n_workers, devices = resolve_workers(workers)
    if executor == "ray" and (workers == "auto" or n_workers != 1):
        raise UserError(
            "--workers starts worker processes on this machine; with --executor ray, Ray places the cells "
            "instead (resources.gpus=1 runs one cell per GPU). Use one or the other."
        )
    if not cfg.sweep:
        raise UserError(
            "This config has no sweep: section, so there is no grid to run. Add e.g. "
            "sweep: {model.freeze: [0.1, 0.3]}, or use 'tlexp run' for a single run."
        )
    cells = expand_sweep(cfg)
    if executor == "ray":
        from tlexp.sweep_ray import ray_cells

        runner_cm = ray_cells(cfg, address)  # Ray missing, or unable to meet resources: before any file
    else:
        runner_cm = nullcontext(_LocalCells())
    with runner_cm as runner, _Worker(cfg, cells) as worker:
        worker.start(cfg.name or default_name, new)
        if n_workers > 1:
            return worker.run_workers(n_workers, devices)
        return worker.run(runner)


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


# --------------------------------------------------------------------------- one worker


class _Worker:
    """One ``tlexp sweep`` process's part of a sweep: its claims, the cells it runs, the
    status file and, if it ends last, the summary."""

    def __init__(self, cfg: Config, cells: list[Cell]):
        self.cfg, self.cells = cfg, cells
        self.names = [c.name for c in cells]
        self.dir: Path = Path()
        self.claims: Claims | None = None
        self.parent: str | None = None
        self.failed_before: dict[str, int] = {}  # cell -> attempt that had failed when this worker started
        self.start_n: dict[str, int] = {}  # key -> latest attempt when this worker started
        self.legacy: dict[str, dict[str, Any]] = {}  # status.json entries of cells never claimed (older tlexp)

    def __enter__(self) -> _Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.claims is not None:
            self.claims.close()

    # ---- start: one worker at a time

    def start(self, name: str, new: bool) -> None:
        """Open the folder; under ``@start``: the checks, the data every cell needs,
        ``sweep.yaml``, the MLflow parent run and ``status.json``. A check that fails
        leaves the folder as it was (at most an empty one with ``.claims``)."""
        self.dir = _open_sweep_dir(Path(self.cfg.output.dir), name, new)
        self.claims = Claims(self.dir / CLAIMS_DIR)

        def waiting(claim: Claim, life: Liveness) -> None:
            who = claim.owner.label if claim.owner else "another worker"
            late = f" ({life.reason}; taken over once that exceeds {self.claims.stale_s:g} s)" if life.reason else ""
            log.info("sweep: waiting for %s, which is starting this sweep%s", who, late)

        with self.claims.holding(START, wait=waiting):
            others = self.claims.held_by_others([*self.names, SUMMARY])
            sweep_file = self._sweep_file()
            _refuse_other_config(self.dir, sweep_file, others)
            _refuse_changed_cells(self.dir, self.cells)
            log.info("sweep: %s: checking the weights and the data, once for all cells", self.dir)
            _check_weights(self.cells)
            _prepare_shared_data(self.cells)
            # Checks passed: from here on the folder describes this sweep.
            if not others and _read_yaml(self.dir / SWEEP_FILE) != sweep_file:
                files.write_yaml(self.dir / SWEEP_FILE, sweep_file)
            self.parent = _mlflow_parent(self.cfg, self.dir)
            self.legacy = _legacy_status(self.dir / STATUS_FILE)
            for key in [*self.names, SUMMARY]:
                latest = self.claims.latest(key)
                self.start_n[key] = latest.n if latest else 0
                if latest is not None and latest.state == "failed":
                    self.failed_before[key] = latest.n
            self.write_status()

    def _sweep_file(self) -> dict[str, Any]:
        base = self.cfg.to_dict()
        grid = base.pop("sweep")
        base["name"] = self.dir.name
        base["output"]["dir"] = str(self.dir.parent.resolve())
        return {"grid": grid, "base": base}

    # ---- the cells

    def run(self, runner: Any) -> SweepResult:
        """Claim and run cells until none is left to claim; write the summary if last."""
        result = SweepResult(self.dir)
        result.skipped = [n for n in self.names if _finished(self.dir / n)]
        held = self.claims.held_by_others(self.names)
        todo = len(self.cells) - len(result.skipped)
        log.info(
            "sweep: %s: %d cells, %d finished before, %d to run%s",
            self.dir,
            len(self.cells),
            len(result.skipped),
            todo,
            f" ({len(held)} held by other workers)" if held else "",
        )
        progress = _Progress(self, result)
        try:
            while True:
                while runner.has_room() and (got := self._claim_next()):
                    progress.start(*got)
                    runner.submit(got[0], self.dir / got[0].name, self.parent)
                if runner.busy():
                    cell, seconds, error = runner.wait_one()
                    progress.done(cell, seconds, error)
                elif self._idle(result):
                    break
        except KeyboardInterrupt:
            for name in list(progress.claims):
                progress.interrupted(name)
            raise
        result.exit_code = 1 if result.failed else 0
        return result

    def _claim_next(self) -> tuple[Cell, Claim, Claim | None] | None:
        """The first cell in grid order this worker may run, claimed; None if none."""
        for cell in self.cells:
            if _finished(self.dir / cell.name):
                continue
            mine, prev, life = self.claims.claim(cell.name, lambda p, lv, c=cell: self._may_claim(c, p, lv))
            if mine is None:
                continue
            if _finished(self.dir / cell.name):  # it finished between our look and our claim
                self.claims.end(mine, "finished")
                continue
            if prev is not None and life is not None and life.state == "dead":
                who = prev.owner.label if prev.owner else "a worker that never wrote its claim"
                log.warning("sweep: %s: taking over the claim of %s: %s", cell.name, who, life.reason)
            before = prev.record.get("attempts", prev.n) if prev else self.legacy.get(cell.name, {}).get("attempts", 0)
            self.claims.update(mine, attempts=int(before or 0) + 1)
            return cell, mine, prev
        return None

    def _may_claim(self, cell: Cell, prev: Claim | None, life: Liveness | None) -> bool:
        if prev is None or life.state == "dead":
            return True
        if life.state != "ended":
            return False  # a live worker runs it
        if prev.state == "failed":  # retried only if it failed before this worker started (a re-run)
            return prev.n <= self.failed_before.get(cell.name, 0)
        if prev.state == "finished":  # its folder was removed since, or it finished just now
            return not _finished(self.dir / cell.name)
        return True  # interrupted: another worker was stopped (Ctrl-C, SIGTERM)

    def _idle(self, result: SweepResult) -> bool:
        """Nothing was claimable: wait for overdue workers, else stop (writing the summary
        if last). False: look for cells again."""
        if self._claimable_left():  # e.g. a worker died since
            return False
        held = self.claims.held_by_others([*self.names, START])
        late = [(c, lv) for c, lv in held if lv.state == "late"]
        if late:
            # Dead (then taken over here) or slow to write: wait until we know.
            log.info(
                "sweep: waiting for overdue heartbeats: %s (%s)",
                owners(late),
                "; ".join(lv.reason for _, lv in late),
            )
            time.sleep(self.claims.interval)
            return False
        running = [(c, lv) for c, lv in held if c.key != START]
        if held:
            log.info(
                "sweep: nothing left for this worker to claim; %s; the last of them writes the summary",
                f"other workers hold {owners(running)}" if running else "another worker is starting",
            )
            return True
        return self._summary(result)

    # ---- summary: by the worker that ends last

    def _summary(self, result: SweepResult) -> bool:
        """Write the summary if no other worker does or did for this state; False if a
        cell turned out to be left to run after all."""
        token = self._state_token()

        def claimable(prev: Claim | None, life: Liveness | None) -> bool:
            if prev is None or life.state == "dead":
                return True
            if life.state != "ended":
                return False  # another worker writes it now
            return prev.n <= self.start_n.get(SUMMARY, 0) or prev.record.get("covers") != token

        mine, prev, life = self.claims.claim(SUMMARY, claimable)
        if mine is None:
            who = prev.owner.label if prev is not None and prev.owner else "another worker"
            verb = "writes" if life is not None and life.state != "ended" else "wrote"
            log.info("sweep: %s %s the summary of this sweep", who, verb)
            return True
        try:
            # Under the claim, look again: a cell claimed (or become claimable) meanwhile ends later.
            if self.claims.held_by_others(self.names) or self._claimable_left():
                self.claims.end(mine, "skipped")
                return False
            self.write_status()
            result.report = self._write_report()
            result.failed = sorted(set(result.failed) | {n for n in self.names if not _finished(self.dir / n)})
        except BaseException:
            self.claims.end(mine, "failed")
            raise
        self.claims.end(mine, "written", covers=self._state_token())
        return True

    def _claimable_left(self) -> bool:
        for cell in self.cells:
            if _finished(self.dir / cell.name):
                continue
            prev = self.claims.latest(cell.name)
            if self._may_claim(cell, prev, self.claims.liveness(prev) if prev else None):
                return True
        return False

    def _write_report(self) -> dict[str, Path]:
        from tlexp.results.report import build_report

        status = {e["name"]: e for e in self.status_entries()}
        done = [self.dir / c.name for c in self.cells if _finished(self.dir / c.name)]
        failed = [
            {
                "name": c.name,
                "overrides": c.overrides,
                "config": c.config.to_dict(),
                "error": status[c.name].get("error") or "not run yet",
            }
            for c in self.cells
            if not _finished(self.dir / c.name)
        ]
        report = build_report(done, self.dir, failed=failed, title=f"tlexp sweep {self.dir.name}")
        log.info("sweep: summary in %s (%d finished, %d failed)", self.dir, len(done), len(failed))
        if failed:
            log.warning(
                "sweep: failed cells: %s; re-run the same command to retry them", ", ".join(f["name"] for f in failed)
            )
        return report

    def _state_token(self) -> str:
        """Identifies what the cells' claims and folders say now (the summary covers one)."""
        state = []
        for name in self.names:
            c = self.claims.latest(name)
            state.append([name, c.n if c else 0, c.state if c else None, _finished(self.dir / name)])
        return hashlib.sha256(json.dumps(state).encode()).hexdigest()[:16]

    # ---- status.json: a view of the claims

    def status_entries(self) -> list[dict[str, Any]]:
        out = []
        for cell in self.cells:
            entry: dict[str, Any] = {
                "name": cell.name,
                "overrides": cell.overrides,
                "status": "pending",
                "attempts": 0,
                "started": None,
                "finished": None,
                "seconds": None,
                "error": None,
                "worker": None,
            }
            claim = self.claims.latest(cell.name)
            if claim is None:
                old = self.legacy.get(cell.name, {})
                entry.update({k: v for k, v in old.items() if k in entry and k not in ("name", "overrides")})
                if entry["status"] in ("running", "finished"):
                    entry["status"] = "interrupted"
            else:
                r = claim.record
                entry.update(
                    attempts=r.get("attempts", claim.n),
                    started=r.get("started"),
                    finished=r.get("ended"),
                    seconds=r.get("seconds"),
                    error=r.get("error"),
                    worker=claim.owner.label if claim.owner else None,
                )
                if claim.state == "running":
                    dead = r and self.claims.liveness(claim).state == "dead"
                    entry["status"] = "interrupted" if dead else "running"
                else:
                    entry["status"] = claim.state
            # The folder, not a claim, says what is done: a process killed between writing
            # metrics.json and ending its claim must not redo a cell.
            if _finished(self.dir / cell.name):
                entry.update(status="finished", error=None)
            elif entry["status"] == "finished":
                entry["status"] = "interrupted"
            out.append(entry)
        return out

    def write_status(self) -> None:
        """Rewrite status.json (atomically) from the claims.

        Workers write it without a lock, each a whole snapshot; one that read the claims
        before another worker's change may replace that worker's newer file. So a writer
        looks again after writing and rewrites until what it wrote is still true: the
        last change is always followed by a write that shows it.
        """
        for _ in range(5):
            entries = self.status_entries()
            counts: dict[str, int] = {}
            for c in entries:
                counts[c["status"]] = counts.get(c["status"], 0) + 1
            files.write_json(
                self.dir / STATUS_FILE, {"sweep": self.dir.name, "updated": _now(), "counts": counts, "cells": entries}
            )
            if self.status_entries() == entries:
                return

    # ---- several workers on this machine

    def run_workers(self, n: int, devices: list[str]) -> SweepResult:
        """Start ``n`` worker processes on this (prepared) sweep, each on one device; wait."""
        config = self.dir / CLAIMS_DIR / f"workers-{os.getpid()}.yaml"
        raw = self.cfg.to_dict()
        raw["name"], raw["output"]["dir"] = self.dir.name, str(self.dir.parent.resolve())
        files.write_yaml(config, raw)
        self.claims.close()  # holds nothing: its heartbeat thread has no more to do
        command = [sys.executable, "-m", "tlexp", *_verbosity_flags(), "sweep", str(config)]
        if devices and n > len(devices):
            log.warning("sweep: %d workers share %d GPU(s): worker i uses GPU i mod %d", n, len(devices), len(devices))
        procs = []
        try:
            for i in range(n):
                env = dict(os.environ)
                if devices:  # on a machine without GPUs there is nothing to pin
                    env["CUDA_VISIBLE_DEVICES"] = devices[i % len(devices)]
                # A process group of its own: a Ctrl-C in the terminal reaches the workers once, through us.
                procs.append(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, process_group=0))
            log.info(
                "sweep: started %d workers: %s",
                n,
                ", ".join(
                    f"pid {p.pid}" + (f" (CUDA_VISIBLE_DEVICES={devices[i % len(devices)]})" if devices else "")
                    for i, p in enumerate(procs)
                ),
            )
            codes = _wait_forwarding_signals(procs)
        finally:
            for p in procs:  # only if we are left by an error of our own
                if p.poll() is None:
                    p.kill()
                    p.wait()
            config.unlink(missing_ok=True)
        worst = max(codes)
        log.info("sweep: %d workers ended (exit codes %s)", n, ", ".join(str(c) for c in codes))
        status = {e["name"]: e["status"] for e in self.status_entries()}
        return SweepResult(
            self.dir,
            finished=[n for n, s in status.items() if s == "finished"],
            failed=[n for n, s in status.items() if s == "failed"],
            exit_code=worst,
        )


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


class _LocalCells:
    """The local executor: one cell at a time, in this process."""

    def __init__(self) -> None:
        self.job: tuple[Cell, Path, str | None] | None = None

    def has_room(self) -> bool:
        return self.job is None

    def busy(self) -> bool:
        return self.job is not None

    def submit(self, cell: Cell, cell_dir: Path, parent: str | None) -> None:
        self.job = (cell, cell_dir, parent)

    def wait_one(self) -> tuple[Cell, float, BaseException | None]:
        cell, cell_dir, parent = self.job
        t = time.perf_counter()
        error: BaseException | None = None
        try:
            _run_cell(cell, cell_dir, parent)
        except Exception as e:
            if not isinstance(e, UserError):
                log.debug("sweep: %s traceback:\n%s", cell.name, traceback.format_exc())
            error = e
        self.job = None
        return cell, time.perf_counter() - t, error


def _run_cell(cell: Cell, cell_dir: Path, mlflow_parent: str | None) -> None:
    from tlexp.experiment import run_experiment

    try:
        run_experiment(cell.config, run_dir=cell_dir, mlflow_parent=mlflow_parent)
    finally:
        # Free the cell's graphs and reset Keras' layer-name counters, so every cell
        # starts as a fresh process would (auto-named layers keep their names).
        import keras

        keras.backend.clear_session()


# --------------------------------------------------------------------------- checks and shared work


def _check_weights(cells: list[Cell]) -> None:
    """Fail the whole sweep at once, before any cell, when a weights file is missing or
    corrupt, rather than let every cell of that backbone fail one after another. (Under
    ``@start``: a download happens once, not once per worker into the same file.)"""
    from tlexp.model.weights import resolve_weights

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
    from tlexp.data.prepare import make_decoder, prepare_data

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
    from tlexp.results.tracking import require_mlflow, sweep_parent

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
    from tlexp.results.record import load_record

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


# --------------------------------------------------------------------------- --workers


def resolve_workers(workers: int | str) -> tuple[int, list[str]]:
    """``--workers`` -> (number of worker processes, GPUs to pin them to).

    ``"auto"``: one per visible GPU (``$CUDA_VISIBLE_DEVICES``, else ``nvidia-smi``), 1
    without GPUs. A number: that many workers; with GPUs, worker ``i`` gets GPU ``i mod G``.
    """
    if workers == "auto":
        devices = visible_gpus()
        return max(1, len(devices)), devices
    n = workers if isinstance(workers, int) else int(workers) if str(workers).isdigit() else 0
    if n < 1:
        raise UserError(f"--workers must be a whole number >= 1 or 'auto'. Got {workers!r} instead.")
    return n, visible_gpus() if n > 1 else []


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries (no TensorFlow)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        found = []
        for item in env.split(","):
            if not item.strip() or item.strip().startswith("-"):  # CUDA stops at the first invalid entry
                break
            found.append(item.strip())
        return found
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def _verbosity_flags() -> list[str]:
    """The CLI flags that give a worker the terminal verbosity this process has."""
    levels = [h.level for h in log.handlers if type(h).__name__ == "_TerminalHandler"]
    if not levels:
        return []
    return ["-v"] if levels[0] <= logging.DEBUG else ["-q"] if levels[0] > logging.INFO else []


def _wait_forwarding_signals(procs: list[subprocess.Popen]) -> list[int]:
    """Wait for every worker, passing SIGINT and SIGTERM on to the ones still running.

    Returns:
        Their exit codes, a death by signal N as 128 + N (as a shell reports it).
    """

    def forward(signum: int, frame: object) -> None:
        for p in procs:
            if p.poll() is None:
                try:
                    os.kill(p.pid, signum)
                except ProcessLookupError:
                    pass

    with _signal_handlers(forward):
        for p in procs:
            p.wait()
    return [128 - p.returncode if p.returncode < 0 else p.returncode for p in procs]


@contextmanager
def _signal_handlers(handler: Any) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
