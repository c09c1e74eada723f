"""The sweep folder: its fixed file names, opening (or creating) it so that concurrent workers
agree on it, and the files in it that say what is done.

A cell is finished exactly when its run folder holds ``metrics.json`` (written last and
atomically); an unfinished attempt is moved to ``.attempts/``, never deleted.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from tlexp import runfolder
from tlexp.errors import UserError

SWEEP_FILE = "sweep.yaml"  # base config + grid of the sweep that runs (or ran last) in the folder
STATUS_FILE = "status.json"  # one entry per cell: status, attempts, timings, last error, worker
ATTEMPTS_DIR = ".attempts"  # unfinished earlier attempts of cells, kept for their logs
CLAIMS_DIR = ".claims"  # one file per attempt at a cell (and at @start, @summary): who, heartbeat, outcome
START, SUMMARY = "@start", "@summary"  # claims that are locks: no cell name holds an '@'


def open_sweep_dir(parent: Path, name: str, new: bool) -> Path:
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


def is_finished(cell_dir: Path) -> bool:
    """Whether a cell's run folder holds its result (``metrics.json``, written last)."""
    return (cell_dir / runfolder.METRICS_FILE).is_file()


def set_aside(sweep_dir: Path, cell_dir: Path) -> Path:
    """Move an unfinished attempt out of the way (kept, never deleted: its log explains it)."""
    attempts = sweep_dir / ATTEMPTS_DIR
    attempts.mkdir(exist_ok=True)
    target = runfolder.new_run_dir(attempts, f"{cell_dir.name}.attempt")
    target.rmdir()  # new_run_dir reserved a free name; os.replace needs it absent
    os.replace(cell_dir, target)
    return target


def read_yaml(path: Path) -> Any:
    """A YAML file's content, or None if there is no such file."""
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def legacy_status(path: Path) -> dict[str, dict[str, Any]]:
    """status.json's entries by cell (for cells an older tlexp ran, which have no claims)."""
    try:
        return {c["name"]: c for c in json.loads(path.read_text()).get("cells", [])}
    except (OSError, ValueError):
        return {}
