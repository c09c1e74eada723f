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
once it ended, how (``finished``, ``failed``, ``interrupted``). When a running claim's
owner counts as dead is the takeover rule (:mod:`tlexp.claims._takeover`).

Assumptions about the file system: exclusive create is atomic (local file systems, NFSv3
and later, Lustre, GPFS/Spectrum Scale, CephFS), and a file another host renamed into place
is seen whole, within the client's attribute-cache time (seconds to a minute on NFS), which
is why the stale limit is minutes. Correctness (one owner per attempt) rests on exclusive
create alone; a late view only delays a takeover. No TensorFlow.

- :mod:`tlexp.claims._owner`: who holds a claim, and whether that process still runs.
- :mod:`tlexp.claims._claim`: one claim as read from its file.
- :mod:`tlexp.claims._takeover`: when an owner counts as dead; the stale limit.
- :mod:`tlexp.claims._heartbeat`: the thread that keeps held claims fresh.
- :mod:`tlexp.claims._folder`: :class:`Claims`, the claims folder as one worker sees it.
"""

from __future__ import annotations

from tlexp.claims._claim import RUNNING, Claim, Liveness, owners
from tlexp.claims._folder import Claims
from tlexp.claims._owner import Owner, process_alive
from tlexp.claims._takeover import DEFAULT_STALE_S, STALE_ENV, stale_limit

__all__ = [
    "DEFAULT_STALE_S",
    "RUNNING",
    "STALE_ENV",
    "Claim",
    "Claims",
    "Liveness",
    "Owner",
    "owners",
    "process_alive",
    "stale_limit",
]
