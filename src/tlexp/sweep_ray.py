"""The Ray executor of sweeps: every cell a Ray task, on one machine or a cluster.

The driver (the ``tlexp sweep`` process) keeps ``status.json`` and the progress lines, as
the local executor does; a cell runs :func:`tlexp.sweep._run_cell` in a Ray worker.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from tlexp.config import Cell, Config
from tlexp.errors import UserError

log = logging.getLogger("tlexp")


def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError(
            "--executor ray needs Ray, which is not installed. Install it with: "
            "pip install 'tlexp[ray]' (or use the default --executor local)."
        ) from None
    return ray


def run_with_ray(todo: list[Cell], progress, parent: str | None, cfg: Config, address: str | None) -> None:
    """Every cell a Ray task; results land in the same folder layout and status file.

    Ray assigns CPUs/GPUs per task (``resources``), so on one multi-GPU machine
    ``resources.gpus: 1`` runs one cell per GPU. The driver keeps status.json; a killed
    driver takes the local Ray runtime and its tasks with it (see _exit_with_raylet), and
    a re-run resumes.
    """
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        # TLEXP_RAY_NUM_CPUS caps a local runtime (tests, shared machines); ignored when joining a cluster.
        num_cpus = (
            int(os.environ["TLEXP_RAY_NUM_CPUS"]) if os.environ.get("TLEXP_RAY_NUM_CPUS") and not address else None
        )
        on_sigterm = signal.getsignal(signal.SIGTERM)
        ray.init(
            address=address,
            num_cpus=num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}},
        )
        if callable(on_sigterm) and threading.current_thread() is threading.main_thread():
            # ray.init installs a SIGTERM handler that calls sys.exit, which would skip the
            # recording of interrupted cells below. A handler of the caller's own (the CLI's
            # raises KeyboardInterrupt) shuts down just as well; without one, Ray's stays.
            signal.signal(signal.SIGTERM, on_sigterm)
    try:
        task = ray.remote(_ray_cell).options(num_cpus=cfg.resources.cpus, num_gpus=cfg.resources.gpus, max_retries=0)
        pending = {}
        for cell in todo:
            progress.start(cell)
            ref = task.remote(cell.config.to_dict(), str(progress.sweep_dir / cell.name), parent)
            pending[ref] = (cell, time.perf_counter())
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                cell, t_cell = pending.pop(ref)
                try:
                    ray.get(ref)
                except ray.exceptions.RayTaskError as e:
                    cause = e.cause if isinstance(getattr(e, "cause", None), BaseException) else e
                    progress.done(cell, time.perf_counter() - t_cell, cause)
                except ray.exceptions.RayError as e:  # a worker died (OOM killer, segfault)
                    progress.done(cell, time.perf_counter() - t_cell, e)
                else:
                    progress.done(cell, time.perf_counter() - t_cell, None)
    except KeyboardInterrupt:
        for cell, _ in pending.values():
            progress.interrupted(cell)
        raise
    finally:
        if started_here:
            ray.shutdown()


def _ray_cell(config: dict[str, Any], cell_dir: str, parent: str | None) -> None:
    """A sweep cell on a Ray worker (a fresh process: log to the cell's run.log only)."""
    _exit_with_raylet()
    logging.getLogger("tlexp").setLevel(logging.INFO)
    from tlexp.sweep import _run_cell

    cell_cfg = Config.model_validate(config)
    _run_cell(Cell(cell_cfg.name or Path(cell_dir).name, {}, cell_cfg), Path(cell_dir), parent)


_WATCHING_RAYLET = False


def _exit_with_raylet() -> None:
    """End this Ray worker as soon as the raylet that started it is gone.

    A killed driver takes its local Ray runtime with it at once, but the workers notice
    only seconds later, and meanwhile they go on computing: small cells were seen to
    finish and write their results after the driver had died, racing the re-run that
    resumes them. A worker is the raylet's child, so a changed parent pid means the raylet
    died; exiting then (within 0.2 s) leaves an unfinished cell folder, which a re-run moves
    to .attempts/ and redoes, as after a killed local sweep.
    """
    global _WATCHING_RAYLET
    if _WATCHING_RAYLET:  # Ray reuses a worker process for further tasks
        return
    _WATCHING_RAYLET = True
    raylet = os.getppid()

    def watch() -> None:
        while os.getppid() == raylet:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, name="tlexp-raylet-watch", daemon=True).start()
