"""Many workers, one sweep: shared work done once, a worker killed mid-cell, the last worker's summary, --workers."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pytest
import yaml

from tlexp.errors import UserError

from conftest import COLORS, end_session, own_tmpdir, sweep_config, write_image

# --------------------------------------------------------------------------- shared work, --workers (no TensorFlow)


def _build_shared_data(root: str, cache: str, at: float) -> str:
    """What every cell of a sweep needs, built by several processes at once."""
    from tlexp.data import check_dataset, ensure_demo_dataset, ensure_image_cache

    time.sleep(max(0.0, at - time.time()))
    ensure_demo_dataset(root, 12)
    check = check_dataset(root, cache_dir=cache)
    cache_ = ensure_image_cache(Path(root), [(f.path, f.sha256) for f in check.usable()], 32, Path(cache))
    return f"{len(check.usable())} {cache_.folder} {cache_.images.sum()}"


@pytest.mark.slow
def test_shared_data_built_by_several_processes_at_once(tmp_path):
    # The demo data, the data check's cache and the decoded-image cache: all build in a
    # temporary place and rename; every builder succeeds and all get the same result.
    at = time.time() + 3
    args = [str(tmp_path / "demo")] * 3, [str(tmp_path / "cache")] * 3, [at] * 3
    with ProcessPoolExecutor(3, mp_context=get_context("spawn")) as pool:
        got = list(pool.map(_build_shared_data, *args))
    assert len(set(got)) == 1 and got[0].startswith("24 "), got
    assert not list(tmp_path.glob(".build-*")) and not list((tmp_path / "cache" / "images").glob(".build-*"))


def test_workers_auto_counts_visible_gpus(monkeypatch):
    from tlexp.sweeps import resolve_workers

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert resolve_workers("auto") == (2, ["2", "3"])
    assert resolve_workers(3) == (3, ["2", "3"])  # three workers on two GPUs: 2, 3, 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU visible: auto means one worker, nothing to pin
    assert resolve_workers("auto") == (1, [])
    assert resolve_workers(2) == (2, [])
    with pytest.raises(UserError, match=r"--workers must be a whole number >= 1 or 'auto'. Got 0 instead"):
        resolve_workers(0)


@pytest.mark.slow
def test_a_sweep_that_fails_its_checks_writes_no_sweep_files(tmp_path, flat_dataset):
    # Missing weights: refused before anything describes the sweep, so a later sweep in this
    # folder is not mistaken for (or described as) this one.
    cfg = sweep_config(tmp_path, flat_dataset, {"seed": [0, 1]}, name="nothing", model={"weights": "imagenet"})
    proc = tlexp(
        "sweep", str(cfg), "model.download=false", cwd=tmp_path, env={**os.environ, "KERAS_HOME": str(tmp_path / "kh")}
    )
    assert proc.returncode == 2 and "are not cached" in proc.stderr and "Traceback" not in proc.stderr
    sweep_dir = tmp_path / "results" / "nothing"
    assert [p.name for p in sweep_dir.iterdir()] == [".claims"]  # at most an empty sweep folder
    assert [p.name for p in (sweep_dir / ".claims").iterdir()] == ["@start.1.json"]


# --------------------------------------------------------------------------- workers on a real sweep

GRID = {"model.freeze": [0.3, 0.7], "seed": [0, 1]}
CELLS = ["vgg16_f30_s0", "vgg16_f30_s1", "vgg16_f70_s0", "vgg16_f70_s1"]
NUMBERS = ("head_test_accuracy", "head_val_loss", "forest_test_accuracy", "logreg_test_accuracy", "frozen_share")


def tlexp(*args: str, cwd: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tlexp", *args], cwd=cwd, capture_output=True, text=True, timeout=280, **kw
    )


def summary(sweep_dir: Path) -> dict[str, dict[str, str]]:
    with open(sweep_dir / "summary.csv", newline="") as f:
        return {r["name"]: r for r in csv.DictReader(f)}


def status(sweep_dir: Path) -> dict[str, dict]:
    return {c["name"]: c for c in json.loads((sweep_dir / "status.json").read_text())["cells"]}


def claim_files(sweep_dir: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted((sweep_dir / ".claims").glob("*.json"))}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict[str, dict[str, str]]]:
    """A dataset, and the 4-cell sweep on it run by one process, this one (a process of its
    own would only import TensorFlow again): what every test matches."""
    from tlexp.cli import main

    base = tmp_path_factory.mktemp("workers")
    root = base / "train"
    for cls in ("cat", "dog"):
        for i in range(12):
            write_image(root / f"{cls}.{i}.jpg", COLORS[cls], seed=i)
    with contextlib.chdir(base):
        assert main(["sweep", str(sweep_config(base, root, GRID, name="one"))]) == 0
    return root, summary(base / "results" / "one")


def same_results(sweep_dir: Path, want: dict[str, dict[str, str]]) -> None:
    got = summary(sweep_dir)
    assert sorted(got) == sorted(want) == CELLS
    for cell in CELLS:
        assert got[cell]["status"] == "finished"
        for col in NUMBERS:
            assert float(got[cell][col]) == pytest.approx(float(want[cell][col]), abs=1e-9), (cell, col)
    assert {c["status"] for c in status(sweep_dir).values()} == {"finished"}
    assert (sweep_dir / "report.html").is_file()


def start_worker(cfg: Path, *extra: str, cwd: Path, log: Path) -> subprocess.Popen:
    with open(log, "w") as err:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "tlexp", "sweep", str(cfg), *extra],
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
            env=own_tmpdir(cwd),  # one of them may be killed
        )


def finish(procs: list[subprocess.Popen], timeout: float = 270) -> list[int]:
    """Wait for the workers; end whatever they (or a failed wait) left, each by pid."""
    deadline = time.time() + timeout
    try:
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.time()))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            end_session(p)
    return [p.returncode for p in procs]


def wait_for(condition, what: str, procs: list[subprocess.Popen], timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline or all(p.poll() is not None for p in procs):
            finish(procs, 10)
            pytest.fail(f"{what} did not happen")
        time.sleep(0.05)


@pytest.mark.slow
def test_two_workers_started_at_once_split_the_cells(tmp_path, reference):
    root, want = reference
    cfg = sweep_config(tmp_path, root, GRID, name="two")
    sweep_dir = tmp_path / "results" / "two"
    procs = [start_worker(cfg, cwd=tmp_path, log=tmp_path / f"w{i}.log") for i in range(2)]
    try:
        wait_for(lambda: list(sweep_dir.glob("*/config.yaml")), "a first cell", procs)
        # A worker with another config is refused while these run, and changes nothing.
        other = tlexp("sweep", str(cfg), "train.learning_rate=0.01", cwd=tmp_path)
        assert other.returncode == 2, other.stderr
        assert "Other workers (" in other.stderr and "train.learning_rate: 0.001 -> 0.01" in other.stderr
        assert "Traceback" not in other.stderr
        assert yaml.safe_load((sweep_dir / "sweep.yaml").read_text())["base"]["train"]["learning_rate"] == 0.001
    finally:
        codes = finish(procs)
    logs = [(tmp_path / f"w{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], logs
    same_results(sweep_dir, want)
    claims = claim_files(sweep_dir)
    runs = {n.split(".")[0]: c for n, c in claims.items() if not n.startswith("@")}
    assert sorted(runs) == CELLS and all(f"{c}.1.json" in claims and f"{c}.2.json" not in claims for c in CELLS)
    assert {c["owner"]["pid"] for c in runs.values()} == {p.pid for p in procs}  # both worked
    assert not (sweep_dir / ".attempts").exists()  # no cell ran twice
    assert "@summary.1.json" in claims and "@summary.2.json" not in claims  # the summary was written once
    assert sum("sweep: summary in" in text for text in logs) == 1
    assert all("Traceback" not in text for text in logs)


@pytest.mark.slow
def test_three_workers_one_killed_mid_cell(tmp_path, reference):
    root, want = reference
    cfg = sweep_config(tmp_path, root, GRID, name="three")
    sweep_dir = tmp_path / "results" / "three"
    procs = [start_worker(cfg, cwd=tmp_path, log=tmp_path / f"w{i}.log") for i in range(3)]
    pids = {p.pid: p for p in procs}
    victim: dict[str, object] = {}

    def a_cell_running() -> bool:
        for cell_dir in sweep_dir.glob("*/config.yaml"):
            name = cell_dir.parent.name
            claim = claim_files(sweep_dir).get(f"{name}.1.json", {})
            if claim.get("state") == "running" and claim["owner"]["pid"] in pids:
                victim.update(cell=name, proc=pids[claim["owner"]["pid"]])
                return True
        return False

    try:
        wait_for(a_cell_running, "a running cell", procs)
        victim["proc"].kill()  # SIGKILL: no chance to record anything
        victim["proc"].wait()
        assert not (sweep_dir / victim["cell"] / "metrics.json").exists()
    finally:
        codes = finish(procs)
    survivors = [p for p in procs if p is not victim["proc"]]
    logs = {p.pid: (tmp_path / f"w{procs.index(p)}.log").read_text() for p in procs}
    assert [p.returncode for p in survivors] == [0, 0], logs
    assert victim["proc"].returncode == -signal.SIGKILL, codes
    same_results(sweep_dir, want)
    cell = victim["cell"]
    taken = [t for p, t in logs.items() if p != victim["proc"].pid and f"sweep: {cell}: taking over the claim" in t]
    assert len(taken) == 1, logs  # taken over once, and the log says from whom and why
    assert f"of {socket.gethostname()}:{victim['proc'].pid}: its process {victim['proc'].pid}" in taken[0]
    claims = claim_files(sweep_dir)
    assert claims[f"{cell}.2.json"]["state"] == "finished" and f"{cell}.3.json" not in claims
    assert status(sweep_dir)[cell]["attempts"] == 2
    assert [a.name for a in (sweep_dir / ".attempts").iterdir()] == [f"{cell}.attempt"]  # the killed attempt
    assert sum("sweep: summary in" in t for t in logs.values()) == 1


@pytest.mark.slow
def test_workers_option_runs_local_workers_and_forwards_sigterm(tmp_path, reference):
    root, want = reference
    cfg = sweep_config(tmp_path, root, GRID, name="many")
    sweep_dir = tmp_path / "results" / "many"
    # On this CPU-only machine there is no GPU to pin a worker to: CUDA_VISIBLE_DEVICES stays unset.
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    parent = subprocess.Popen(
        [sys.executable, "-m", "tlexp", "sweep", str(cfg), "--workers", "2"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        wait_for(lambda: list(sweep_dir.glob("*/config.yaml")), "a first cell", [parent])
        parent.terminate()  # the parent passes SIGTERM on to its workers, which record it
        out, err = parent.communicate(timeout=120)
    finally:
        finish([parent])
    assert parent.returncode == 128 + signal.SIGTERM, err
    assert "sweep: started 2 workers: pid" in err and "CUDA_VISIBLE_DEVICES" not in err
    assert "interrupted" in {c["status"] for c in status(sweep_dir).values()}
    assert not (sweep_dir / "summary.csv").exists()

    again = tlexp("sweep", str(cfg), "--workers", "2", cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == str(sweep_dir)  # one line, the parent's; the workers print nothing
    same_results(sweep_dir, want)
    claims = claim_files(sweep_dir)
    workers = {c["owner"]["pid"] for n, c in claims.items() if not n.startswith("@") and c["state"] == "finished"}
    assert len(workers) >= 2 and parent.pid not in workers
    assert not list((sweep_dir / ".claims").glob("workers-*.yaml"))
