"""The Ray executor of sweeps: every cell a Ray task, on one machine or a cluster.

The driver (the ``tlexp sweep`` process) claims the cells, keeps ``status.json`` and the
progress lines, as the local executor does; a cell runs :func:`tlexp.sweeps._cells.run_cell`
in a Ray worker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tlexp.config import Cell, Config
from tlexp.errors import UserError
from tlexp.sweeps._cells import run_cell

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


@contextlib.contextmanager
def ray_cells(cfg: Config, address: str | None) -> Iterator[RayCells]:
    """A Ray runtime (joined, or started here and shut down at the end) that can run the
    sweep's cells: checked before anything is written, so a request no node can meet is an
    error (``UserError``) instead of a task that waits forever.
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
            # recording of interrupted cells. A handler of the caller's own (the CLI's
            # raises KeyboardInterrupt) shuts down just as well; without one, Ray's stays.
            signal.signal(signal.SIGTERM, on_sigterm)
    try:
        check_resources(ray, cfg.resources.cpus, cfg.resources.gpus)
        yield RayCells(ray, cfg)
    finally:
        if started_here:
            ray.shutdown()


def check_resources(ray, cpus: float, gpus: float) -> None:
    """Raise ``UserError`` unless some node of the cluster has ``cpus`` CPUs and ``gpus`` GPUs.

    Ray would queue a task no node can run and wait, silently, for a node that never comes.
    (On an autoscaling cluster, start a node of the kind first.)
    """
    need = {"CPU": cpus, "GPU": gpus}
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive", True)]
    if any(all(node.get(k, 0.0) >= v for k, v in need.items() if v > 0) for node in nodes):
        return
    total = ray.cluster_resources()
    missing = [k for k, v in need.items() if v > 0 and not any(node.get(k, 0.0) >= v for node in nodes)]
    largest = ", ".join(f"{k} {max((node.get(k, 0.0) for node in nodes), default=0.0):g}" for k in need)
    what = " and ".join(f"{need[k]:g} {k}(s)" for k in missing) or "that combination"
    raise UserError(
        f"Each sweep cell asks Ray for resources.cpus={cpus:g} and resources.gpus={gpus:g}, but no node of the Ray "
        f"cluster has {what}: it has {total.get('CPU', 0.0):g} CPU(s) and {total.get('GPU', 0.0):g} GPU(s) in all, "
        f"on {len(nodes)} node(s) (the most on one node: {largest}). Lower resources.gpus / resources.cpus, or "
        "join a cluster that has such a node (--address)."
    )


class RayCells:
    """The Ray executor: every cell a task; the driver (this process) holds the claims,
    keeps status.json and the progress lines, as the local executor does.

    Ray assigns CPUs/GPUs per task (``resources``), so on one multi-GPU machine
    ``resources.gpus: 1`` runs one cell per GPU. A killed driver takes the local Ray
    runtime and its tasks with it (see exit_with_raylet), and a re-run resumes.
    """

    def __init__(self, ray, cfg: Config):
        self.ray = ray
        self.task = ray.remote(_ray_cell).options(
            num_cpus=cfg.resources.cpus, num_gpus=cfg.resources.gpus, max_retries=0
        )
        self.pending: dict[Any, tuple[Cell, float]] = {}

    def has_room(self) -> bool:
        return True  # Ray queues what cannot run yet

    def busy(self) -> bool:
        return bool(self.pending)

    def submit(self, cell: Cell, cell_dir: Path, parent: str | None) -> None:
        ref = self.task.remote(cell.config.to_dict(), str(cell_dir), parent)
        self.pending[ref] = (cell, time.perf_counter())

    def wait_one(self) -> tuple[Cell, float, BaseException | None]:
        ray = self.ray
        ready, _ = ray.wait(list(self.pending), num_returns=1)
        ref = ready[0]
        cell, t_cell = self.pending.pop(ref)
        error: BaseException | None = None
        try:
            ray.get(ref)
        except ray.exceptions.RayTaskError as e:
            error = e.cause if isinstance(getattr(e, "cause", None), BaseException) else e
        except ray.exceptions.RayError as e:  # a worker died (OOM killer, segfault)
            error = e
        return cell, time.perf_counter() - t_cell, error


def _ray_cell(config: dict[str, Any], cell_dir: str, parent: str | None) -> None:
    """A sweep cell on a Ray worker (a fresh process: log to the cell's run.log only)."""
    exit_with_raylet()
    logging.getLogger("tlexp").setLevel(logging.INFO)
    cell_cfg = Config.model_validate(config)
    run_cell(Cell(cell_cfg.name or Path(cell_dir).name, {}, cell_cfg), Path(cell_dir), parent)


_WATCHING_RAYLET = False


def exit_with_raylet() -> None:
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
