"""Claims on a shared folder: exclusive, recorded, refreshed, taken over once when dead. No TensorFlow."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pytest

from tlexp.claims import Claims, Owner
from tlexp.claims._owner import machine_id
from tlexp.errors import UserError


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_claim_is_exclusive_and_says_who_holds_it(tmp_path):
    a, b = Claims(tmp_path), Claims(tmp_path)
    try:
        mine, prev, _ = a.claim("cell")
        assert mine is not None and prev is None
        record = json.loads((tmp_path / "cell.1.json").read_text())
        assert record["state"] == "running" and record["attempt"] == 1
        assert record["owner"]["host"] == socket.gethostname() and record["owner"]["pid"] == os.getpid()
        assert record["started"] and record["heartbeat_unix"] > 0
        theirs, prev, life = b.claim("cell")  # same process, another worker: held by a live one
        assert theirs is None and prev.n == 1 and life.state == "alive"
        a.end(mine, "failed", error="boom")
        again, prev, life = b.claim("cell")  # ended: the next attempt
        assert again is not None and again.n == 2 and life.state == "ended" and prev.record["error"] == "boom"
    finally:
        a.close()
        b.close()


def _take_over(folder: str, at: float) -> int:
    """In a fresh process: wait for the common moment, then try to take the claim over."""
    time.sleep(max(0.0, at - time.time()))
    claims = Claims(Path(folder))
    try:
        mine, _, _ = claims.claim("cell")
        return mine.n if mine else 0
    finally:
        claims.close()


@pytest.mark.slow
def test_a_dead_workers_claim_is_taken_over_by_exactly_one(tmp_path):
    ghost = Owner(socket.gethostname(), dead_pid(), machine_id(), None, "ghost")
    held = Claims(tmp_path, owner=ghost)
    held.create("cell", 1)
    held.close()  # no heartbeat: the process is gone
    life = Claims(tmp_path).liveness(Claims(tmp_path).latest("cell"))
    assert life.state == "dead" and f"its process {ghost.pid}" in life.reason
    at = time.time() + 3  # the processes start first, then all try at once
    with ProcessPoolExecutor(6, mp_context=get_context("spawn")) as pool:
        got = list(pool.map(_take_over, [str(tmp_path)] * 6, [at] * 6))
    assert sorted(got) == [0, 0, 0, 0, 0, 2], got  # one took over attempt 2; none made attempt 3
    assert sorted(p.name for p in tmp_path.glob("cell.*.json")) == ["cell.1.json", "cell.2.json"]


def test_another_hosts_claim_is_stale_only_after_the_stale_limit(tmp_path, monkeypatch):
    monkeypatch.setenv("TLEXP_CLAIM_STALE_S", "2")
    elsewhere = Claims(tmp_path, owner=Owner("elsewhere", os.getpid(), "another machine", None, "x"))
    claim = elsewhere.create("cell", 1)
    elsewhere.close()
    reader = Claims(tmp_path)
    assert reader.stale_s == 2.0 and reader.interval == 0.2

    def beat_age(seconds: float) -> None:
        claim.record["heartbeat_unix"] = time.time() - seconds
        (tmp_path / "cell.1.json").write_text(json.dumps(claim.record))

    beat_age(0.1)  # its pid is ours, but on another host a pid says nothing: the heartbeat counts
    assert reader.claim("cell")[0] is None and reader.liveness(reader.latest("cell")).state == "alive"
    beat_age(1.0)
    assert reader.claim("cell")[0] is None and reader.liveness(reader.latest("cell")).state == "late"
    beat_age(3.0)
    mine, prev, life = reader.claim("cell")
    reader.close()
    assert mine is not None and mine.n == 2
    assert life.state == "dead" and "no heartbeat for 3 s, more than the stale limit of 2 s" in life.reason

    monkeypatch.setenv("TLEXP_CLAIM_STALE_S", "soon")
    with pytest.raises(UserError, match=r"TLEXP_CLAIM_STALE_S must be a number of seconds > 0. Got 'soon'"):
        Claims(tmp_path)


def test_heartbeats_refresh_a_claim_and_a_lost_claim_is_noticed(tmp_path):
    lost = threading.Event()
    claims = Claims(tmp_path, stale_s=0.5, on_lost=lambda c: lost.set())
    try:
        claim = claims.create("cell", 1)
        first = claim.record["heartbeat_unix"]
        time.sleep(0.3)
        assert json.loads((tmp_path / "cell.1.json").read_text())["heartbeat_unix"] > first
        # Another worker judged this one dead and took the cell over: the owner must stop.
        other = Claims(tmp_path)
        other.create("cell", 2)
        other.close()
        assert lost.wait(5)
    finally:
        claims.close()
