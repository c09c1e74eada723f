"""One sweep worker: claim cells, run them, record them, write the summary when last."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from tlexp import files
from tlexp.claims import Claim, Claims, Liveness, owners
from tlexp.config import Cell, Config
from tlexp.errors import UserError
from tlexp.sweep._local import _verbosity_flags, _wait_forwarding_signals
from tlexp.sweep._shared import (
    CLAIMS_DIR,
    START,
    STATUS_FILE,
    SUMMARY,
    SWEEP_FILE,
    SweepResult,
    _check_weights,
    _finished,
    _legacy_status,
    _mlflow_parent,
    _now,
    _open_sweep_dir,
    _prepare_shared_data,
    _Progress,
    _read_yaml,
    _refuse_changed_cells,
    _refuse_other_config,
)

log = logging.getLogger("tlexp")


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
        from tlexp.results import build_report

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
