"""One claim as a reader sees it: an attempt at a key, the record in its file, and what can
be said about its owner. No TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tlexp.claims._owner import Owner

RUNNING = "running"


@dataclass
class Claim:
    """One attempt at ``key``, as read from (or written to) its file."""

    key: str
    n: int
    record: dict[str, Any]  # empty while its creator is still writing it
    mtime: float = 0.0

    @property
    def state(self) -> str:
        return str(self.record.get("state", RUNNING))

    @property
    def owner(self) -> Owner | None:
        return Owner.from_dict(self.record["owner"]) if "owner" in self.record else None

    @property
    def heartbeat(self) -> float:
        return float(self.record.get("heartbeat_unix", self.mtime))


@dataclass
class Liveness:
    """What a reader can say about a running claim: ``alive``, ``late`` (another host's
    heartbeat is overdue but not yet stale) or ``dead``, and why."""

    state: str
    reason: str = ""


def owners(claims: list[tuple[Claim, Liveness]]) -> str:
    """``cell (host:pid), ...`` for a log line."""
    return ", ".join(f"{c.key} ({c.owner.label if c.owner else 'unknown'})" for c, _ in claims)


def iso(t: float) -> str:
    """A Unix time as a claim record writes it (UTC, to the second)."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")
