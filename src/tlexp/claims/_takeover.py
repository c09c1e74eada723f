"""Takeover: when the owner of a running claim counts as dead, so that another worker may
claim the next attempt, and what a worker does whose own claim was taken over.

A running claim belongs to a dead owner when

- the owner ran on this machine (same host name, boot and PID namespace) and its process
  is gone (or the pid now belongs to another process); or
- the owner ran elsewhere and its heartbeat is older than the stale limit
  (``$TLEXP_CLAIM_STALE_S``, default 300 s). This compares the owner's clock with ours,
  so the hosts' clocks must agree to well within the limit (NTP does).

No TensorFlow.
"""

from __future__ import annotations

import logging
import os
import time

from tlexp.claims._claim import RUNNING, Claim, Liveness
from tlexp.claims._owner import Owner, process_alive

log = logging.getLogger("tlexp")

STALE_ENV = "TLEXP_CLAIM_STALE_S"
DEFAULT_STALE_S = 300.0

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


def mark_open(owner: Owner) -> None:
    """``owner`` (of this process) holds claims from now on, until :func:`mark_closed`."""
    _OPEN_TOKENS.add(owner.token)


def mark_closed(owner: Owner) -> None:
    """``owner`` is done: a claim of its still running is left over, not held."""
    _OPEN_TOKENS.discard(owner.token)


def judge(claim: Claim, me: Owner, stale_s: float, interval: float) -> Liveness:
    """Whether the owner of a running claim is alive, as ``me`` sees it (ended claims: ``ended``).

    Args:
        stale_s: the stale limit for an owner on another machine.
        interval: that owner's heartbeat interval; three missed beats make it ``late``.
    """
    if claim.record and claim.state != RUNNING:
        return Liveness("ended")
    owner = claim.owner
    if owner is not None and owner.machine == me.machine and owner.host == me.host:
        if owner.pid == os.getpid() and owner.token not in _OPEN_TOKENS:
            return Liveness("dead", "an earlier sweep in this process left it")
        if process_alive(owner.pid, owner.pid_start):
            return Liveness("alive")
        return Liveness("dead", f"its process {owner.pid} on {owner.host} is gone")
    age = time.time() - claim.heartbeat
    if age > stale_s:
        return Liveness("dead", f"no heartbeat for {age:.0f} s, more than the stale limit of {stale_s:g} s")
    if age > 3 * interval:
        return Liveness("late", f"no heartbeat for {age:.0f} s")
    return Liveness("alive")


def exit_lost(claim: Claim) -> None:
    """End this process at once: another worker took over ``claim``, judging this one dead."""
    log.error(
        "sweep: %s: another worker took over this worker's claim (its heartbeat looked older than the stale "
        "limit); stopping this worker at once, so that two processes never write one cell folder",
        claim.key,
    )
    logging.shutdown()
    os._exit(3)
