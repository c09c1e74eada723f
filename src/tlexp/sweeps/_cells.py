"""Running one cell (an ordinary run, in a fresh Keras session), and the local executor:
one cell at a time, in this process.

An executor is what a worker hands its claimed cells to: ``has_room``, ``submit``,
``busy`` and ``wait_one``; :class:`tlexp.sweeps._ray.RayCells` is the other one.
"""

from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path

from tlexp.config import Cell
from tlexp.errors import UserError

log = logging.getLogger("tlexp")


class LocalCells:
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
            run_cell(cell, cell_dir, parent)
        except Exception as e:
            if not isinstance(e, UserError):
                log.debug("sweep: %s traceback:\n%s", cell.name, traceback.format_exc())
            error = e
        self.job = None
        return cell, time.perf_counter() - t, error


def run_cell(cell: Cell, cell_dir: Path, mlflow_parent: str | None) -> None:
    """Run ``cell`` into ``cell_dir`` (an MLflow child run of ``mlflow_parent``, if set)."""
    from tlexp.experiment import run_experiment

    try:
        run_experiment(cell.config, run_dir=cell_dir, mlflow_parent=mlflow_parent)
    finally:
        # Free the cell's graphs and reset Keras' layer-name counters, so every cell
        # starts as a fresh process would (auto-named layers keep their names).
        import keras

        keras.backend.clear_session()
