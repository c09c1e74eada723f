"""Who holds a claim: a worker process, named so that a reader can tell whether it still runs.

A pid means something only on the machine it came from, and only as long as it is not
reused; an :class:`Owner` carries what tells both apart. No TensorFlow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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
        return cls(socket.gethostname(), os.getpid(), machine_id(), _pid_start(os.getpid()), uuid.uuid4().hex[:12])

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


def machine_id() -> str:
    """This machine's boot id and PID namespace (Linux): where a pid means the same process."""
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
