"""One sweep worker: claim cells, run them, record them, write the summary when last.

A worker runs a cell only after claiming it (:mod:`tlexp.claims`), so any number of
workers share one sweep folder; it hands the cells it claimed to an executor
(:class:`tlexp.sweeps._cells.LocalCells`, :class:`tlexp.sweeps._ray.RayCells`), and feeds
its progress lines (:class:`tlexp.sweeps._progress.Progress`) and ``status.json``
(:class:`tlexp.sweeps._status.Status`) as cells start and end.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tlexp import files
from tlexp.claims import Claim, Claims, Liveness, owners
from tlexp.config import Cell, Config
from tlexp.interrupts import stop_if_terminated
from tlexp.sweeps._folder import (
    CLAIMS_DIR,
    START,
    STATUS_FILE,
    SUMMARY,
    SWEEP_FILE,
    is_finished,
    legacy_status,
    open_sweep_dir,
    read_yaml,
    set_aside,
)
from tlexp.sweeps._local import run_workers
from tlexp.sweeps._progress import Progress, SweepResult
from tlexp.sweeps._start import (
    check_weights,
    mlflow_parent,
    prepare_shared_data,
    refuse_changed_cells,
    refuse_other_config,
)
from tlexp.sweeps._status import Status

log = logging.getLogger("tlexp")


class Worker:
    """One ``tlexp sweep`` process's part of a sweep: its claims, the cells it runs, the
    status file and, if it ends last, the summary."""

    def __init__(self, cfg: Config, cells: list[Cell], before_summary: Callable[[Path], None] | None = None):
        self.cfg, self.cells = cfg, cells
        # Called with the sweep folder by the worker that writes the summary, before it (the depth probes).
        self.before_summary = before_summary
        self.names = [c.name for c in cells]
        self.dir: Path = Path()
        self.claims: Claims | None = None
        self.parent: str | None = None
        self.failed_before: dict[str, int] = {}  # cell -> attempt that had failed when this worker started
        self.start_n: dict[str, int] = {}  # key -> latest attempt when this worker started
        self.legacy: dict[str, dict[str, Any]] = {}  # status.json entries of cells never claimed (older tlexp)
        self.status: Status | None = None  # status.json, once the folder is open
        self.running: dict[str, Claim] = {}  # cell -> this worker's claim, while the cell runs

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.claims is not None:
            self.claims.close()

    # ---- start: one worker at a time

    def start(self, name: str, new: bool) -> None:
        """Open the folder; under ``@start``: the checks, the data every cell needs,
        ``sweep.yaml``, the MLflow parent run and ``status.json``. A check that fails
        leaves the folder as it was (at most an empty one with ``.claims``)."""
        self.dir = open_sweep_dir(Path(self.cfg.output.dir), name, new)
        self.claims = Claims(self.dir / CLAIMS_DIR)

        def waiting(claim: Claim, life: Liveness) -> None:
            who = claim.owner.label if claim.owner else "another worker"
            late = f" ({life.reason}; taken over once that exceeds {self.claims.stale_s:g} s)" if life.reason else ""
            log.info("sweep: waiting for %s, which is starting this sweep%s", who, late)

        with self.claims.holding(START, wait=waiting):
            others = self.claims.held_by_others([*self.names, SUMMARY])
            sweep_file = self._sweep_file()
            refuse_other_config(self.dir, sweep_file, others)
            refuse_changed_cells(self.dir, self.cells)
            log.info("sweep: %s: checking the weights and the data, once for all cells", self.dir)
            check_weights(self.cells)
            prepare_shared_data(self.cells)
            # Checks passed: from here on the folder describes this sweep.
            if not others and read_yaml(self.dir / SWEEP_FILE) != sweep_file:
                files.write_yaml(self.dir / SWEEP_FILE, sweep_file)
            self.parent = mlflow_parent(self.cfg, self.dir)
            self.legacy = legacy_status(self.dir / STATUS_FILE)
            self.status = Status(self.dir, self.cells, self.claims, self.legacy)
            for key in [*self.names, SUMMARY]:
                latest = self.claims.latest(key)
                self.start_n[key] = latest.n if latest else 0
                if latest is not None and latest.state == "failed":
                    self.failed_before[key] = latest.n
            self.status.write()

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
        result.skipped = [n for n in self.names if is_finished(self.dir / n)]
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
        progress = Progress(result, len(self.names))
        try:
            while True:
                stop_if_terminated()  # a SIGTERM whose interrupt something swallowed: no next cell
                while runner.has_room() and (got := self._claim_next()):
                    self._started(progress, *got)
                    runner.submit(got[0], self.dir / got[0].name, self.parent)
                if runner.busy():
                    self._ended(progress, *runner.wait_one())
                elif self._idle(result):
                    break
        except KeyboardInterrupt:
            for name in list(self.running):
                self.claims.end(self.running.pop(name), "interrupted")
                self.status.write()
                progress.interrupted(name)
            raise
        result.exit_code = 1 if result.failed else 0
        return result

    def _started(self, progress: Progress, cell: Cell, claim: Claim) -> None:
        self.running[cell.name] = claim
        # Cells finished, running, or failed in this round (this one included): what a
        # single worker counts as done or begun.
        begun = 0
        for n in self.names:
            c = self.claims.latest(n)
            begun += is_finished(self.dir / n) or (
                c is not None and (c.state == "running" or (c.state == "failed" and c.n > self.failed_before.get(n, 0)))
            )
        cell_dir = self.dir / cell.name
        moved = set_aside(self.dir, cell_dir) if cell_dir.exists() else None
        progress.started(cell.name, begun, moved)
        self.status.write()

    def _ended(self, progress: Progress, cell: Cell, seconds: float, error: BaseException | None) -> None:
        if error is not None:
            stop_if_terminated()  # an error after a SIGTERM is the interrupt: the cell stays running, then interrupted
        claim = self.running.pop(cell.name)
        if error is None:
            self.claims.end(claim, "finished", seconds=round(seconds, 3), error=None)
            progress.finished(cell.name, seconds)
        else:
            message = f"{type(error).__name__}: {error}".strip()
            self.claims.end(claim, "failed", seconds=round(seconds, 3), error=message)
            progress.failed(cell.name, seconds, message)
        self.status.write()
        left = sum(e["status"] in ("pending", "interrupted", "running") for e in self.status.entries())
        others = {c.owner for c, _ in self.claims.held_by_others(self.names) if c.owner}
        progress.ended(seconds, left, len(others))

    def _claim_next(self) -> tuple[Cell, Claim] | None:
        """The first cell in grid order this worker may run, claimed; None if none."""
        for cell in self.cells:
            if is_finished(self.dir / cell.name):
                continue
            mine, prev, life = self.claims.claim(cell.name, lambda p, lv, c=cell: self._may_claim(c, p, lv))
            if mine is None:
                continue
            if is_finished(self.dir / cell.name):  # it finished between our look and our claim
                self.claims.end(mine, "finished")
                continue
            if prev is not None and life is not None and life.state == "dead":
                who = prev.owner.label if prev.owner else "a worker that never wrote its claim"
                log.warning("sweep: %s: taking over the claim of %s: %s", cell.name, who, life.reason)
            before = prev.record.get("attempts", prev.n) if prev else self.legacy.get(cell.name, {}).get("attempts", 0)
            self.claims.update(mine, attempts=int(before or 0) + 1)
            return cell, mine
        return None

    def _may_claim(self, cell: Cell, prev: Claim | None, life: Liveness | None) -> bool:
        if prev is None or life.state == "dead":
            return True
        if life.state != "ended":
            return False  # a live worker runs it
        if prev.state == "failed":  # retried only if it failed before this worker started (a re-run)
            return prev.n <= self.failed_before.get(cell.name, 0)
        if prev.state == "finished":  # its folder was removed since, or it finished just now
            return not is_finished(self.dir / cell.name)
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
            self.status.write()
            result.report = self._write_report()
            result.failed = sorted(set(result.failed) | {n for n in self.names if not is_finished(self.dir / n)})
        except BaseException:
            self.claims.end(mine, "failed")
            raise
        self.claims.end(mine, "written", covers=self._state_token())
        return True

    def _claimable_left(self) -> bool:
        for cell in self.cells:
            if is_finished(self.dir / cell.name):
                continue
            prev = self.claims.latest(cell.name)
            if self._may_claim(cell, prev, self.claims.liveness(prev) if prev else None):
                return True
        return False

    def _write_report(self) -> dict[str, Path]:
        from tlexp.results import build_report

        if self.before_summary is not None:
            self.before_summary(self.dir)
        status = {e["name"]: e for e in self.status.entries()}
        done = [self.dir / c.name for c in self.cells if is_finished(self.dir / c.name)]
        failed = [
            {
                "name": c.name,
                "overrides": c.overrides,
                "config": c.config.to_dict(),
                "error": status[c.name].get("error") or "not run yet",
            }
            for c in self.cells
            if not is_finished(self.dir / c.name)
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
            state.append([name, c.n if c else 0, c.state if c else None, is_finished(self.dir / name)])
        return hashlib.sha256(json.dumps(state).encode()).hexdigest()[:16]

    # ---- several workers on this machine

    def run_workers(self, n: int, devices: list[str]) -> SweepResult:
        """Start ``n`` worker processes on this (prepared) sweep, each on one device; wait."""
        self.claims.close()  # holds nothing: its heartbeat thread has no more to do
        codes = run_workers(self.cfg, self.dir, n, devices)
        worst = max(codes)
        log.info("sweep: %d workers ended (exit codes %s)", n, ", ".join(str(c) for c in codes))
        status = {e["name"]: e["status"] for e in self.status.entries()}
        return SweepResult(
            self.dir,
            finished=[n for n, s in status.items() if s == "finished"],
            failed=[n for n, s in status.items() if s == "failed"],
            exit_code=worst,
        )
