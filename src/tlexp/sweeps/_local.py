"""``tlexp sweep --workers N``: N worker processes on one machine, one GPU each.

The process that was started with ``--workers`` prepares the sweep, then starts ``tlexp
sweep`` processes on it that work as any other workers do, waits for them and passes
Ctrl-C and SIGTERM on to them.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tlexp import files
from tlexp.config import Config
from tlexp.errors import UserError
from tlexp.sweeps._folder import CLAIMS_DIR

log = logging.getLogger("tlexp")


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


def run_workers(cfg: Config, sweep_dir: Path, n: int, devices: list[str]) -> list[int]:
    """Start ``n`` worker processes on the (prepared) sweep in ``sweep_dir``, each on one
    device of ``devices`` (round robin; none without GPUs), and wait for them.

    Returns:
        Their exit codes, a death by signal N as 128 + N (as a shell reports it).
    """
    config = sweep_dir / CLAIMS_DIR / f"workers-{os.getpid()}.yaml"
    raw = cfg.to_dict()
    raw["name"], raw["output"]["dir"] = sweep_dir.name, str(sweep_dir.parent.resolve())
    files.write_yaml(config, raw)
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
        return _wait_forwarding_signals(procs)
    finally:
        for p in procs:  # only if we are left by an error of our own
            if p.poll() is None:
                p.kill()
                p.wait()
        config.unlink(missing_ok=True)


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
