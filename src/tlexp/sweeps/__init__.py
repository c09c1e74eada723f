"""Many runs from one config: expand the grid, run the cells, resume, record failures.

A sweep folder holds ``sweep.yaml`` (the base config and the grid), ``status.json`` (one
entry per cell), one ordinary run folder per cell, the claims of its workers
(``.claims/``) and the summary written by :func:`tlexp.results.build_report`. A
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

The modules, each importing only those listed before it:

- :mod:`tlexp.sweeps._folder`: the sweep folder, its file names, what says a cell is done.
- :mod:`tlexp.sweeps._start`: what a worker checks and prepares under ``@start``.
- :mod:`tlexp.sweeps._status`: ``status.json``, a view of the claims.
- :mod:`tlexp.sweeps._progress`: the progress lines and :class:`SweepResult`, fed by a worker.
- :mod:`tlexp.sweeps._cells`: running one cell; the local executor.
- :mod:`tlexp.sweeps._local`: ``--workers N``, worker processes on this machine.
- :mod:`tlexp.sweeps._worker`: one worker's loop: claim, run, record, summary.
- :mod:`tlexp.sweeps._ray`: the Ray executor.
- :mod:`tlexp.sweeps._run`: :func:`run_sweep` and :func:`plan_sweep`.
"""

from __future__ import annotations

from tlexp.sweeps._folder import ATTEMPTS_DIR, CLAIMS_DIR, STATUS_FILE, SWEEP_FILE
from tlexp.sweeps._local import resolve_workers
from tlexp.sweeps._progress import SweepResult
from tlexp.sweeps._run import plan_sweep, run_sweep

__all__ = [
    "ATTEMPTS_DIR",
    "CLAIMS_DIR",
    "STATUS_FILE",
    "SWEEP_FILE",
    "SweepResult",
    "plan_sweep",
    "resolve_workers",
    "run_sweep",
]
