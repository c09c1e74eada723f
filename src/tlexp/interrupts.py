"""Whether this process was told to stop (SIGTERM), for where an interrupt can be lost.

The command line turns SIGTERM into a ``KeyboardInterrupt`` raised wherever the main
thread is (:mod:`tlexp.cli`). Code that catches everything can swallow it: a SIGTERM that
landed while matplotlib was being imported left a half-imported module behind and no
exception, so the worker carried on and its cell failed a moment later with "module
'matplotlib' has no attribute 'artist'" instead of being recorded as interrupted. So
the handler also sets :data:`TERMINATED`, and the run and the sweep look at it where they
decide what ended a cell: an error after a SIGTERM is the interrupt.
"""

from __future__ import annotations

import threading

TERMINATED = threading.Event()  # set by the SIGTERM handler; cleared when a command starts


def stop_if_terminated() -> None:
    """Raise ``KeyboardInterrupt`` where a SIGTERM was received (and its interrupt perhaps lost)."""
    if TERMINATED.is_set():
        raise KeyboardInterrupt
