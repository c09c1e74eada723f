"""The heartbeat: a thread that keeps the claims one worker holds fresh, and notices when
another worker took one over.

The worker's own writes to a held claim go through here too, under the same lock, so a
heartbeat never writes back a record older than the worker's last change. No TensorFlow.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tlexp import files
from tlexp.claims._claim import Claim, iso

log = logging.getLogger("tlexp")


class Heartbeat:
    """The claims one worker holds, their heartbeats refreshed every ``interval`` seconds.

    Args:
        path: the file of attempt ``n`` at ``key``.
        interval: seconds between heartbeats.
        on_lost: called (in the heartbeat thread) with a held claim another worker took over.
    """

    def __init__(self, path: Callable[[str, int], Path], interval: float, on_lost: Callable[[Claim], None]):
        self.path, self.interval, self.on_lost = path, interval, on_lost
        self._held: dict[str, Claim] = {}
        self._lock = threading.Lock()  # held claims: the heartbeat thread and the worker both write them
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self, claim: Claim) -> None:
        """Keep ``claim``'s heartbeat from now on (starting the thread if it does not run)."""
        with self._lock:
            self._held[claim.key] = claim
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._beat, name="tlexp-claims-heartbeat", daemon=True)
            self._thread.start()

    def write(self, claim: Claim, **fields: Any) -> None:
        """Change a held claim's record and write it."""
        with self._lock:
            claim.record.update(fields)
            files.write_json(self.path(claim.key, claim.n), claim.record)

    def release(self, claim: Claim, **fields: Any) -> None:
        """Stop the heartbeat of ``claim`` and write its last record, unless another worker
        took it over (its record is not ours to change then)."""
        with self._lock:
            self._held.pop(claim.key, None)
            if self.superseded(claim):
                return
            claim.record.update(fields)
            files.write_json(self.path(claim.key, claim.n), claim.record)

    def superseded(self, claim: Claim) -> bool:
        """Whether a later attempt at the key exists: another worker took it over."""
        return self.path(claim.key, claim.n + 1).exists()

    def stop(self) -> None:
        """Stop the thread (held claims are left as they are)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def beat(self) -> None:
        """Refresh the heartbeat of every claim held; report claims another worker took over."""
        lost = []
        with self._lock:
            for key, claim in list(self._held.items()):
                try:
                    if self.superseded(claim):
                        del self._held[key]
                        lost.append(claim)
                        continue
                    now = time.time()
                    claim.record.update(heartbeat=iso(now), heartbeat_unix=now)
                    files.write_json(self.path(key, claim.n), claim.record)
                except OSError as e:  # the file system hiccuped: try again next time
                    log.warning("sweep: could not refresh the claim on %s (%s)", key, e)
        for claim in lost:
            self.on_lost(claim)
