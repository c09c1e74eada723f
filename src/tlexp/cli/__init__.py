"""The ``tlexp`` command: argument parsing over the library API (:mod:`tlexp.api`).

Each subcommand parses its arguments and calls one API function; user mistakes
(``UserError``) print one clear message and exit with code 2, no traceback.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator, Sequence

from tlexp.cli._parser import build_parser, parse_args
from tlexp.errors import UserError
from tlexp.interrupts import TERMINATED
from tlexp.logs import setup_terminal

__all__ = ["build_parser", "main", "parse_args"]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_terminal(logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO)
    terminated = TERMINATED
    terminated.clear()  # a command run in-process after another (tests, notebooks) starts afresh
    try:
        with _sigterm_interrupts(terminated):
            return args.func(args)
    except UserError as e:
        print(f"tlexp: error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        from tlexp.files import disk_full_message, is_disk_full

        if not is_disk_full(e):
            raise
        print(f"tlexp: error: {disk_full_message(e)}", file=sys.stderr)  # the disk, not a bug: no traceback
        return 2
    except Exception:
        if not terminated.is_set():
            raise
        # A SIGTERM whose interrupt something swallowed (a library's import that catches
        # everything), and the error that followed from it: terminated, as below.
        print("tlexp: terminated (SIGTERM)", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        if terminated.is_set():
            print("tlexp: terminated (SIGTERM)", file=sys.stderr)
            return 128 + signal.SIGTERM
        print("tlexp: interrupted", file=sys.stderr)
        return 130


@contextlib.contextmanager
def _sigterm_interrupts(received: threading.Event) -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C while a command runs, and set ``received``.

    Slurm at a job's time limit, Kubernetes, ``timeout`` and ``kill`` send SIGTERM, which
    by default ends Python on the spot: the run and sweep would not record the
    interruption (run.log, status.json) and a local Ray runtime would not be shut down.
    The event, not the exception's type, tells the two apart: Ray's waits turn any
    exception of a signal handler into a plain KeyboardInterrupt.
    """
    if threading.current_thread() is not threading.main_thread():  # handlers live in the main thread
        yield
        return

    def terminate(signum, frame):
        received.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
