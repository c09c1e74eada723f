"""``status.json``: one entry per cell, a view of the cells' claims and run folders.

No worker owns the file: whichever changed a claim rebuilds it from the claims and writes
it atomically, so it is never half-written and never the only record of anything.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tlexp import files
from tlexp.claims import Claims
from tlexp.config import Cell
from tlexp.sweeps._folder import STATUS_FILE, is_finished


class Status:
    """The status of a sweep's cells as one worker sees them.

    Args:
        sweep_dir: the sweep folder.
        cells: the sweep's cells, in grid order.
        claims: the claims folder, as this worker sees it.
        legacy: ``status.json`` entries of cells that were never claimed (an older tlexp ran them).
    """

    def __init__(self, sweep_dir: Path, cells: list[Cell], claims: Claims, legacy: dict[str, dict[str, Any]]):
        self.dir, self.cells, self.claims, self.legacy = sweep_dir, cells, claims, legacy

    def entries(self) -> list[dict[str, Any]]:
        """One entry per cell: status, attempts, start and end time, seconds, last error, worker."""
        out = []
        for cell in self.cells:
            entry: dict[str, Any] = {
                "name": cell.name,
                "overrides": cell.overrides,
                "status": "pending",
                "attempts": 0,
                "started": None,
                "finished": None,
                "seconds": None,
                "error": None,
                "worker": None,
            }
            claim = self.claims.latest(cell.name)
            if claim is None:
                old = self.legacy.get(cell.name, {})
                entry.update({k: v for k, v in old.items() if k in entry and k not in ("name", "overrides")})
                if entry["status"] in ("running", "finished"):
                    entry["status"] = "interrupted"
            else:
                r = claim.record
                entry.update(
                    attempts=r.get("attempts", claim.n),
                    started=r.get("started"),
                    finished=r.get("ended"),
                    seconds=r.get("seconds"),
                    error=r.get("error"),
                    worker=claim.owner.label if claim.owner else None,
                )
                if claim.state == "running":
                    dead = r and self.claims.liveness(claim).state == "dead"
                    entry["status"] = "interrupted" if dead else "running"
                else:
                    entry["status"] = claim.state
            # The folder, not a claim, says what is done: a process killed between writing
            # metrics.json and ending its claim must not redo a cell.
            if is_finished(self.dir / cell.name):
                entry.update(status="finished", error=None)
            elif entry["status"] == "finished":
                entry["status"] = "interrupted"
            out.append(entry)
        return out

    def write(self) -> None:
        """Rewrite status.json (atomically) from the claims.

        Workers write it without a lock, each a whole snapshot; one that read the claims
        before another worker's change may replace that worker's newer file. So a writer
        looks again after writing and rewrites until what it wrote is still true: the
        last change is always followed by a write that shows it.
        """
        for _ in range(5):
            entries = self.entries()
            counts: dict[str, int] = {}
            for c in entries:
                counts[c["status"]] = counts.get(c["status"], 0) + 1
            files.write_json(
                self.dir / STATUS_FILE, {"sweep": self.dir.name, "updated": _now(), "counts": counts, "cells": entries}
            )
            if self.entries() == entries:
                return


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
