"""Claims: which worker does what, on a file system several processes (and hosts) share.

Several ``tlexp sweep`` processes (a Slurm array, one per GPU, several hosts) work on one
sweep folder. Before a worker runs a cell it *claims* it; a claim is the file
``.claims/<key>.<n>.json``, where ``n`` counts the attempts at ``key``. A worker claims
attempt ``n + 1`` only after reading attempt ``n`` and finding it ended or its owner dead,
and creates the file with ``os.open(O_CREAT | O_EXCL)``: exactly one of any number of
workers trying at the same moment succeeds, the others learn that someone was faster.
So no cell runs twice at the same time, and two workers never both take over one stale
claim: both would have to create the same next attempt. Older attempts are kept, as the
record of what happened (nothing deletes them, so the numbering never restarts).

The record in a claim file says who holds it (host, pid, the process's start time), when
it started, its ``heartbeat`` (refreshed by a thread every tenth of the stale limit) and,
once it ended, how (``finished``, ``failed``, ``interrupted``). A claim whose state is
``running`` belongs to a dead owner when

- the owner ran on this machine (same host name, boot and PID namespace) and its process
  is gone (or the pid now belongs to another process); or
- the owner ran elsewhere and its heartbeat is older than the stale limit
  (``$TLEXP_CLAIM_STALE_S``, default 300 s). This compares the owner's clock with ours,
  so the hosts' clocks must agree to well within the limit (NTP does).

Assumptions about the file system: exclusive create is atomic (local file systems, NFSv3
and later, Lustre, GPFS/Spectrum Scale, CephFS), and a file another host renamed into place
is seen whole, within the client's attribute-cache time (seconds to a minute on NFS), which
is why the stale limit is minutes. Correctness (one owner per attempt) rests on exclusive
create alone; a late view only delays a takeover. No TensorFlow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tlexp import files

log = logging.getLogger("tlexp")

STALE_ENV = "TLEXP_CLAIM_STALE_S"
DEFAULT_STALE_S = 300.0
RUNNING = "running"

_NAME = re.compile(r"^(?P<key>.+)\.(?P<n>\d+)\.json$")
# Tokens of this process's open Claims: a claim of this very process whose token is not
# among them was left by a sweep that ended (a notebook that runs another one).
_OPEN_TOKENS: set[str] = set()


def stale_limit() -> float:
    """Seconds without a heartbeat after which another host's claim counts as dead."""
    raw = os.environ.get(STALE_ENV)
    if not raw:
        return DEFAULT_STALE_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        from tlexp.errors import UserError

        raise UserError(f"${STALE_ENV} must be a number of seconds > 0. Got {raw!r} instead.")
    return value


# --------------------------------------------------------------------------- who


@dataclass(frozen=True)
class Owner:
    """A worker process: where it runs, and which process it is.

    ``machine`` tells whether a pid can be checked from here: the boot id and PID namespace
    (Linux), so that two containers sharing a host name never judge each other's pids.
    ``pid_start`` (the process's start time in clock ticks since boot) tells a reused pid
    from the original process. ``token`` tells apart two owners in one process.
    """

    host: str
    pid: int
    machine: str
    pid_start: int | None
    token: str

    @classmethod
    def me(cls) -> Owner:
        return cls(socket.gethostname(), os.getpid(), _machine(), _pid_start(os.getpid()), uuid.uuid4().hex[:12])

    @property
    def label(self) -> str:
        return f"{self.host}:{self.pid}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Owner:
        return cls(
            str(d["host"]), int(d["pid"]), str(d.get("machine", "")), d.get("pid_start"), str(d.get("token", ""))
        )


def _machine() -> str:
    parts = []
    for path in ("/proc/sys/kernel/random/boot_id",):
        with contextlib.suppress(OSError):
            parts.append(Path(path).read_text().strip())
    with contextlib.suppress(OSError):
        parts.append(os.readlink("/proc/self/ns/pid"))
    return "|".join(parts)


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _pid_start(pid: int) -> int | None:
    fields = _proc_stat(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def process_alive(pid: int, pid_start: int | None = None) -> bool:
    """Whether process ``pid`` of this machine runs (not a zombie, not a reused pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    fields = _proc_stat(pid)
    if fields is None:
        return not Path("/proc/self/stat").exists()  # no /proc: kill(0) is all we know
    if fields[0] in ("Z", "X"):
        return False
    return pid_start is None or _pid_start(pid) == pid_start


# --------------------------------------------------------------------------- claims


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


class Claims:
    """The claims folder of one sweep, seen by one worker (``owner``).

    Args:
        folder: ``<sweep>/.claims``; created if missing.
        owner: this worker.
        stale_s: the stale limit (default: :func:`stale_limit`).
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
        self.on_lost = on_lost or _exit_lost
        self._held: dict[str, Claim] = {}
        self._lock = threading.Lock()  # held claims: the heartbeat thread and the worker both write them
        self._known: dict[str, int] = {}  # key -> highest attempt seen (attempts are never removed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        _OPEN_TOKENS.add(self.owner.token)

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
        if claim.record and claim.state != RUNNING:
            return Liveness("ended")
        owner = claim.owner
        if owner is not None and owner.machine == self.owner.machine and owner.host == self.owner.host:
            if owner.pid == os.getpid() and owner.token not in _OPEN_TOKENS:
                return Liveness("dead", "an earlier sweep in this process left it")
            if process_alive(owner.pid, owner.pid_start):
                return Liveness("alive")
            return Liveness("dead", f"its process {owner.pid} on {owner.host} is gone")
        age = time.time() - claim.heartbeat
        if age > self.stale_s:
            return Liveness("dead", f"no heartbeat for {age:.0f} s, more than the stale limit of {self.stale_s:g} s")
        if age > 3 * self.interval:
            return Liveness("late", f"no heartbeat for {age:.0f} s")
        return Liveness("alive")

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
            "started": _iso(now),
            "heartbeat": _iso(now),
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
        with self._lock:
            self._held[key] = claim
        self._start_heartbeat()
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
        with self._lock:
            claim.record.update(fields)
            files.write_json(self.path(claim.key, claim.n), claim.record)

    def end(self, claim: Claim, state: str, **fields: Any) -> None:
        """End a claim: ``state`` is how (``finished``, ``failed``, ...); no more heartbeats."""
        with self._lock:
            self._held.pop(claim.key, None)
            if self._superseded(claim):
                return  # another worker took it over: its record is not ours to change
            claim.record.update(fields, state=state, ended=_now())
            files.write_json(self.path(claim.key, claim.n), claim.record)

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

    def close(self) -> None:
        """Stop the heartbeat thread (held claims are left as they are)."""
        _OPEN_TOKENS.discard(self.owner.token)
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    # ---- heartbeat

    def _superseded(self, claim: Claim) -> bool:
        return self.path(claim.key, claim.n + 1).exists()

    def _start_heartbeat(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._beat, name="tlexp-claims-heartbeat", daemon=True)
            self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def beat(self) -> None:
        """Refresh the heartbeat of every claim held; report claims another worker took over."""
        lost = []
        with self._lock:
            for key, claim in list(self._held.items()):
                try:
                    if self._superseded(claim):
                        del self._held[key]
                        lost.append(claim)
                        continue
                    now = time.time()
                    claim.record.update(heartbeat=_iso(now), heartbeat_unix=now)
                    files.write_json(self.path(key, claim.n), claim.record)
                except OSError as e:  # the file system hiccuped: try again next time
                    log.warning("sweep: could not refresh the claim on %s (%s)", key, e)
        for claim in lost:
            self.on_lost(claim)


def _exit_lost(claim: Claim) -> None:
    log.error(
        "sweep: %s: another worker took over this worker's claim (its heartbeat looked older than the stale "
        "limit); stopping this worker at once, so that two processes never write one cell folder",
        claim.key,
    )
    logging.shutdown()
    os._exit(3)


def owners(claims: list[tuple[Claim, Liveness]]) -> str:
    """``cell (host:pid), ...`` for a log line."""
    return ", ".join(f"{c.key} ({c.owner.label if c.owner else 'unknown'})" for c, _ in claims)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def _now() -> str:
    return _iso(time.time())
