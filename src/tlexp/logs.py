"""tlexp's log: the terminal handler, each run's ``run.log``, progress bars. No TensorFlow.

Everything is logged through ``logging.getLogger("tlexp")`` with a short phase prefix
(``data:``, ``train:``, ``forest:``). The CLI adds one terminal handler; a run adds a
file handler for its ``run.log`` while it runs and removes it afterwards.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger("tlexp")


class _TerminalHandler(logging.StreamHandler):
    """The CLI's handler; a class of its own so it is found (and replaced) again."""


def setup_terminal(level: int) -> None:
    """Log to standard error at ``level`` (run.log still gets INFO and above).

    Calling it again replaces the handler instead of adding a second one, so a notebook
    or a test that calls ``tlexp.cli.main`` many times never prints a line twice.
    """
    for h in [h for h in log.handlers if isinstance(h, _TerminalHandler)]:
        log.removeHandler(h)
    handler = _TerminalHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.setLevel(level)  # --quiet quiets the terminal; run.log still gets everything
    log.addHandler(handler)
    log.setLevel(min(level, logging.INFO))
    log.propagate = False
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def show_progress() -> bool:
    """Progress bars only for a person watching: a terminal that shows INFO (not --quiet)."""
    return sys.stderr.isatty() and any(
        isinstance(h, _TerminalHandler) and h.level <= logging.INFO for h in log.handlers
    )


class _RunLogFile(logging.FileHandler):
    """run.log; on a full disk it stops writing, says so once, and never interrupts the run.

    (logging's default prints a traceback for every record it fails to write: on a full
    disk, a cascade of them buried the one message that mattered.)
    """

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OSError) and error.errno in (28, 122):  # ENOSPC, EDQUOT
            if self.stream is not None:
                print(f"tlexp: run.log stopped: the disk is full ({self.baseFilename})", file=sys.stderr)
            self.setLevel(logging.CRITICAL + 1)  # write nothing more
            return
        super().handleError(record)


class RunLog:
    """Collects the tlexp log from the start of a run; once the run folder exists, writes
    what was collected, and everything after it, to its run.log."""

    def __init__(self) -> None:
        self.buffer = logging.handlers.BufferingHandler(capacity=1_000_000)
        self.file: logging.Handler | None = None
        self.old_level = log.level

    def __enter__(self) -> RunLog:
        log.addHandler(self.buffer)
        if log.getEffectiveLevel() > logging.INFO:  # a notebook user who set nothing still gets run.log
            log.setLevel(logging.INFO)
        return self

    def write_to(self, path: Path) -> None:
        self.file = _RunLogFile(path, encoding="utf-8")
        self.file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        for record in self.buffer.buffer:
            self.file.handle(record)
        log.removeHandler(self.buffer)
        self.buffer.buffer.clear()
        log.addHandler(self.file)

    def file_only(self, level: int, msg: str, *args: object) -> None:
        """A line for run.log alone (the terminal already shows it another way)."""
        if self.file is not None:
            self.file.emit(log.makeRecord(log.name, level, __file__, 0, msg, args, None))

    def __exit__(self, *exc: object) -> None:
        log.setLevel(self.old_level)
        for h in (self.buffer, self.file):
            if h is not None:
                log.removeHandler(h)
                h.close()


class PhaseClock:
    """Wall time per phase of a run, and the run's start (UTC) and total."""

    def __init__(self) -> None:
        self.started = datetime.now(UTC).isoformat(timespec="seconds")
        self.t0 = time.perf_counter()
        self.phases: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.phases[phase] = self.phases.get(phase, 0.0) + time.perf_counter() - t

    def seconds(self) -> dict[str, float]:
        return {**{k: round(v, 3) for k, v in self.phases.items()}, "total": round(time.perf_counter() - self.t0, 3)}
