"""The claims folder of one sweep, as one worker sees it: reading the latest attempt at a
key, claiming the next one with an exclusive create, ending it, and locks built on that.

Exactly one of any number of workers creating ``.claims/<key>.<n>.json`` at the same
moment succeeds (``O_CREAT | O_EXCL``); correctness rests on that alone. No TensorFlow.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tlexp.claims._claim import RUNNING, Claim, Liveness, iso
from tlexp.claims._heartbeat import Heartbeat
from tlexp.claims._owner import Owner
from tlexp.claims._takeover import exit_lost, judge, mark_closed, mark_open, stale_limit

_NAME = re.compile(r"^(?P<key>.+)\.(?P<n>\d+)\.json$")


class Claims:
    """The claims folder of one sweep, seen by one worker (``owner``).

    Args:
        folder: ``<sweep>/.claims``; created if missing.
        owner: this worker.
        stale_s: the stale limit (default: :func:`tlexp.claims.stale_limit`).
        on_lost: called (in the heartbeat thread) when another worker took over a claim
            this worker holds: it was judged dead. The default ends the process at once,
            so that two processes never write one cell folder.
    """

    def __init__(
        self,
        folder: Path,
        owner: Owner | None = None,
        stale_s: float | None = None,
        on_lost: Callable[[Claim], None] | None = None,
    ):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.owner = owner or Owner.me()
        self.stale_s = stale_limit() if stale_s is None else stale_s
        self.interval = self.stale_s / 10
        self._heartbeat = Heartbeat(self.path, self.interval, on_lost or exit_lost)
        self._known: dict[str, int] = {}  # key -> highest attempt seen (attempts are never removed)
        mark_open(self.owner)

    # ---- reading

    def path(self, key: str, n: int) -> Path:
        return self.folder / f"{key}.{n}.json"

    def latest(self, key: str) -> Claim | None:
        """The newest attempt at ``key``, or None if there is none."""
        n = self._known.get(key)
        if n is None:  # a hint from the listing; probing by name below finds any newer one
            n = self._listing().get(key, 0)
        while self.path(key, n + 1).exists():
            n += 1
        self._known[key] = n
        return self.read(key, n) if n else None

    def _listing(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for name in os.listdir(self.folder):
            if m := _NAME.match(name):
                found[m["key"]] = max(found.get(m["key"], 0), int(m["n"]))
        for key, n in found.items():
            self._known.setdefault(key, n)
        return found

    def read(self, key: str, n: int) -> Claim:
        path = self.path(key, n)
        for _ in range(3):
            try:
                mtime = path.stat().st_mtime
                return Claim(key, n, json.loads(path.read_text()), mtime)
            except json.JSONDecodeError:
                time.sleep(0.05)  # its creator is writing it (or died doing so: judged by its age)
            except FileNotFoundError:
                time.sleep(0.05)  # a heartbeat replaced it just now
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            mtime = 0.0
        return Claim(key, n, {}, mtime)

    def liveness(self, claim: Claim) -> Liveness:
        """Whether the owner of a running claim is alive (ended claims: ``ended``)."""
        return judge(claim, self.owner, self.stale_s, self.interval)

    def held_by_others(self, keys: list[str] | None = None) -> list[tuple[Claim, Liveness]]:
        """Running claims of other live (or late) workers, on ``keys`` or on any key."""
        keys = keys if keys is not None else sorted(self._listing())
        out = []
        for key in keys:
            c = self.latest(key)
            if c is None or self.is_mine(c):
                continue
            life = self.liveness(c)
            if life.state in ("alive", "late"):
                out.append((c, life))
        return out

    def is_mine(self, claim: Claim) -> bool:
        return claim.owner == self.owner

    # ---- writing

    def create(self, key: str, n: int, **fields: Any) -> Claim | None:
        """Claim attempt ``n`` at ``key``: None if another worker created it first."""
        now = time.time()
        record = {
            "key": key,
            "attempt": n,
            "state": RUNNING,
            "owner": self.owner.to_dict(),
            "started": iso(now),
            "heartbeat": iso(now),
            "heartbeat_unix": now,
            **fields,
        }
        try:
            fd = os.open(self.path(key, n), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            self._known[key] = max(self._known.get(key, 0), n)
            return None
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(record, indent=2) + "\n")
        self._known[key] = max(self._known.get(key, 0), n)
        claim = Claim(key, n, record, now)
        self._heartbeat.hold(claim)
        return claim

    def claim(self, key: str, claimable: Callable[[Claim | None, Liveness | None], bool] | None = None):
        """Try to claim the next attempt at ``key``.

        Args:
            claimable: decides on the latest attempt (None if none) and, for a running one,
                its liveness; default: claimable when there is none, it ended, or its owner
                is dead.

        Returns:
            ``(claim, previous, liveness)``: ``claim`` is None when the key is not claimable
            or another worker was faster; ``previous`` is the attempt it follows.
        """
        prev = self.latest(key)
        life = self.liveness(prev) if prev is not None else None
        ok = claimable(prev, life) if claimable else prev is None or life.state in ("ended", "dead")
        if not ok:
            return None, prev, life
        return self.create(key, (prev.n if prev else 0) + 1), prev, life

    def update(self, claim: Claim, **fields: Any) -> None:
        """Change a claim this worker holds (its heartbeat keeps the change)."""
        self._heartbeat.write(claim, **fields)

    def end(self, claim: Claim, state: str, **fields: Any) -> None:
        """End a claim: ``state`` is how (``finished``, ``failed``, ...); no more heartbeats."""
        self._heartbeat.release(claim, **{**fields, "state": state, "ended": iso(time.time())})

    @contextlib.contextmanager
    def holding(self, key: str, wait: Callable[[Claim, Liveness], None] | None = None, poll_s: float = 0.5):
        """A lock on ``key`` for the block: wait while a live worker holds it, take it
        over from a dead one. ``wait(claim, liveness)`` is called once per holder waited for.
        """
        seen = None
        while True:
            mine, prev, life = self.claim(key)
            if mine is not None:
                break
            if prev is not None and life is not None and prev.n != seen:
                seen = prev.n
                if wait:
                    wait(prev, life)
            time.sleep(poll_s)
        try:
            yield mine, prev, life
        finally:
            self.end(mine, "released")

    def beat(self) -> None:
        """Refresh the heartbeat of every claim held now (the heartbeat thread does it every
        ``interval`` seconds); report claims another worker took over."""
        self._heartbeat.beat()

    def close(self) -> None:
        """Stop the heartbeat thread (held claims are left as they are)."""
        mark_closed(self.owner)
        self._heartbeat.stop()
