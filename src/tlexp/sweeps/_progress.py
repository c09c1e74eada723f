"""The progress of a sweep in one worker: a line per cell started and ended, the time spent
and an estimate of the time left, and the tally of what this worker did (:class:`SweepResult`).

The worker feeds it (this cell started, ended in so many seconds, so many cells are left);
it knows nothing of claims or executors, so every executor shows the same lines.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("tlexp")


@dataclass
class SweepResult:
    """What :func:`run_sweep` did (in this process and, with ``workers``, its workers)."""

    dir: Path
    finished: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # finished before this invocation
    report: dict[str, Path] = field(default_factory=dict)  # empty unless this process wrote the summary
    exit_code: int = 0  # 0 done; 1 a cell failed; with workers: the worst of theirs


class Progress:
    """The progress lines of one worker's cells, and its :class:`SweepResult`.

    Args:
        result: where the cells that finish or fail here are recorded.
        total: the number of cells in the sweep.
    """

    def __init__(self, result: SweepResult, total: int):
        self.result, self.total = result, total
        self.labels: dict[str, str] = {}
        self.t0 = time.perf_counter()
        self.durations: list[float] = []

    def started(self, name: str, begun: int, moved: Path | None = None) -> None:
        """Cell ``name`` started, the ``begun``-th of the sweep's cells to finish, run or fail
        in this round; ``moved``: where its unfinished earlier attempt was moved."""
        label = self.labels[name] = f"[{begun:>{len(str(self.total))}}/{self.total}] {name}"
        if moved is not None:
            log.info("sweep: %s: an unfinished earlier attempt was moved to %s; running it again", label, moved)
        log.info("sweep: %s: started", label)

    def interrupted(self, name: str) -> None:
        log.error("sweep: %s: interrupted; re-run the same command to continue", self.labels[name])

    def finished(self, name: str, seconds: float) -> None:
        self.result.finished.append(name)
        log.info("sweep: %s: finished in %s (%s)", self.labels[name], _hms(seconds), _headline(self.result.dir / name))

    def failed(self, name: str, seconds: float, message: str) -> None:
        self.result.failed.append(name)
        log.error("sweep: %s: FAILED after %s: %s", self.labels[name], _hms(seconds), message.splitlines()[0])

    def ended(self, seconds: float, left: int, other_workers: int) -> None:
        """A cell ended after ``seconds``: log the time so far and, while ``left`` cells are
        still to run here and by ``other_workers``, an estimate of the time left."""
        self.durations.append(seconds)
        eta = ""
        if left:
            mean = sum(self.durations) / len(self.durations)
            eta = f", about {_hms(mean * math.ceil(left / (1 + other_workers)))} left"
        log.info("sweep: elapsed %s%s", _hms(time.perf_counter() - self.t0), eta)


def _headline(cell_dir: Path) -> str:
    from tlexp.results import load_record

    record = load_record(cell_dir)
    return "test accuracy " + ", ".join(f"{k} {v.test.accuracy:.4f}" for k, v in record.classifiers.items())


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
