"""The entry points of sweeps: :func:`run_sweep` (run the cells, here or on Ray, in one
worker or several) and :func:`plan_sweep` (the cells and their freeze plans, without
training). What they call is one worker's loop (:mod:`tlexp.sweeps._worker`) and an executor.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from tlexp.config import Cell, Config, expand_sweep
from tlexp.errors import UserError
from tlexp.runfolder import PROBES_DIR
from tlexp.sweeps._cells import LocalCells
from tlexp.sweeps._local import resolve_workers
from tlexp.sweeps._progress import SweepResult
from tlexp.sweeps._worker import Worker

log = logging.getLogger("tlexp")


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
    if not cfg.grids():
        raise UserError(
            "This config has no sweep: section, so there is no grid to run. Add e.g. "
            "sweep: {model.freeze: [0.1, 0.3]}, or use 'tlexp run' for a single run."
        )
    cells = expand_sweep(cfg)
    if executor == "ray":
        from tlexp.sweeps._ray import ray_cells

        runner_cm = ray_cells(cfg, address)  # Ray missing, or unable to meet resources: before any file
    else:
        runner_cm = nullcontext(LocalCells())
    probes = (lambda sweep_dir: _run_probes(sweep_dir, cells)) if cfg.probe.enabled else None
    with runner_cm as runner, Worker(cfg, cells, before_summary=probes) as worker:
        worker.start(cfg.name or default_name, new)
        if n_workers > 1:
            return worker.run_workers(n_workers, devices)
        return worker.run(runner)


def _run_probes(sweep_dir: Path, cells: list[Cell]) -> None:
    """The depth probe of each backbone of the cells (with its first cell's config) into
    ``<sweep_dir>/probes/<backbone>/``, after the cells and before the summary, in the worker
    that writes it. A backbone whose ``probe.json`` exists is done (a resumed sweep); a probe
    that fails is logged and retried by the next run of the sweep, and fails no cell."""
    from tlexp.probes import PROBE_FILE, run_probe

    first: dict[str, Cell] = {}
    for cell in cells:
        first.setdefault(cell.config.model.backbone, cell)
    for backbone, cell in first.items():
        out = sweep_dir / PROBES_DIR / backbone
        if (out / PROBE_FILE).is_file():
            log.info("sweep: depth probe of %s: done before (%s)", backbone, out)
            continue
        log.info("sweep: depth probe of %s, with the config of %s", backbone, cell.name)
        try:
            run_probe(cell.config, out)
        except Exception as e:  # the cells' results stand; the next run of the sweep tries again
            log.warning(
                "sweep: the depth probe of %s failed: %s: %s; re-run the sweep to retry it",
                backbone,
                type(e).__name__,
                e,
            )
        finally:
            import keras

            keras.backend.clear_session()  # as after a cell: free its graph, reset the layer names


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
