"""Sweeps through a local Ray runtime (num_cpus=2): same results, same failure and resume semantics."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import end_session, session_processes, start_sweep, sweep_config

pytest.importorskip("ray")
pytestmark = pytest.mark.slow


def config(tmp_path: Path, root: Path, grid: dict, name: str, **sections: dict) -> Path:
    return sweep_config(tmp_path, root, grid, name, output={"save_model": False}, resources={"cpus": 1}, **sections)


def sweep(cfg: Path, *extra: str, cwd: Path) -> subprocess.CompletedProcess:
    """``tlexp sweep CFG EXTRA...`` to its end, in a session of its own; it must leave no
    process of its own running (with Ray: tlexp shuts down the runtime it started)."""
    args = [sys.executable, "-m", "tlexp", "sweep", str(cfg), *extra]
    proc = subprocess.Popen(
        args,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TLEXP_RAY_NUM_CPUS": "2"},
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        # Ray's processes end within moments of ray.shutdown(), not all before the driver exits.
        left = end_session(proc, grace_s=30)
    assert not left, f"the sweep left processes running:\n{left}\n{err}"
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def rows(sweep_dir: Path) -> dict[str, dict[str, str]]:
    with open(sweep_dir / "summary.csv", newline="") as f:
        return {r["name"]: r for r in csv.DictReader(f)}


def statuses(sweep_dir: Path) -> dict[str, dict]:
    return {c["name"]: c for c in json.loads((sweep_dir / "status.json").read_text())["cells"]}


def only_ray_agents(processes: dict[int, str]) -> bool:
    """Whether ``processes`` (pid -> command line) are at most Ray's dashboard and runtime-env
    agents: what a local Ray runtime leaves for a minute once its driver was killed."""
    return all(cmd.startswith(("ray::DashboardAgent", "ray::RuntimeEnvAgent")) for cmd in processes.values())


NUMBERS = ("head_test_accuracy", "head_val_loss", "forest_test_accuracy", "logreg_test_accuracy", "frozen_share")


@pytest.fixture(scope="module")
def ray_and_local(tmp_path_factory) -> SimpleNamespace:
    """One scenario, run once for the two tests below (each Ray sweep starts a Ray runtime
    of its own, the costliest part of these tests): on the demo data, a Ray sweep whose
    bad-weights cells fail (its driver makes the demo data), the same sweep with the local
    executor (the reference, run in this process: a process of its own would only import
    TensorFlow again), then the weights file fixed and the Ray sweep run again."""
    base = tmp_path_factory.mktemp("ray")
    bad = base / "bad.weights.h5"
    bad.write_bytes(b"not HDF5")
    grid = {"model.freeze": [0.3, 0.7], "model.weights": ["none", str(bad)]}
    demo = {"synthetic": {"enabled": True, "per_class": 12}}
    ray_dir, local_dir = base / "results" / "viaray", base / "results" / "local"
    ray = sweep(config(base, base / "demo", grid, "viaray", data=demo), "--executor", "ray", cwd=base)
    first = SimpleNamespace(
        ray=ray,
        rows=rows(ray_dir),
        statuses=statuses(ray_dir),
        logs={c.name: (c / "run.log").read_text() for c in ray_dir.iterdir() if (c / "run.log").is_file()},
    )
    import keras

    from tlexp.cli import main
    from tlexp.model import build_backbone

    with contextlib.chdir(base):
        local = main(["sweep", str(config(base, base / "demo", grid, "local", data=demo))])

    # fix the file: re-running retries exactly the failed cells, on Ray
    bad.unlink()
    keras.utils.set_random_seed(0)
    build_backbone("vgg16", 32).save_weights(bad)
    again = sweep(base / "viaray.yaml", "--executor", "ray", cwd=base)
    return SimpleNamespace(first=first, local=local, local_rows=rows(local_dir), again=again, ray_dir=ray_dir)


def test_ray_sweep_matches_local_and_retries_a_failed_cell(ray_and_local):
    first, local = ray_and_local.first, ray_and_local.local
    assert local == first.ray.returncode == 1, first.ray.stderr  # the bad-weights cells failed in both
    a, b = ray_and_local.local_rows, first.rows
    assert sorted(a) == sorted(b) and len(a) == 4
    for name in a:
        assert a[name]["status"] == b[name]["status"]
        if a[name]["status"] == "finished":
            for col in NUMBERS:
                assert float(a[name][col]) == pytest.approx(float(b[name][col]), abs=1e-9), (name, col)
    failed = [n for n, c in first.statuses.items() if c["status"] == "failed"]
    assert len(failed) == 2
    assert all("WeightsError" in first.statuses[n]["error"] for n in failed)

    again = ray_and_local.again
    assert again.returncode == 0, again.stderr
    assert "2 finished before, 2 to run" in again.stderr
    st = statuses(ray_and_local.ray_dir)
    assert all(c["status"] == "finished" for c in st.values())
    assert all(st[n]["attempts"] == 2 for n in failed)


def test_killed_ray_driver_resumes(tmp_path, flat_dataset):
    cfg = config(tmp_path, flat_dataset, {"model.freeze": [0.3, 0.5, 0.7]}, "killed")
    sweep_dir = tmp_path / "results" / "killed"
    proc = start_sweep(cfg, "--executor", "ray", cwd=tmp_path, started=sweep_dir / "vgg16_f30_s0" / "config.yaml")
    try:
        os.kill(proc.pid, signal.SIGKILL)  # the driver only: its local Ray runtime goes with it
        proc.wait()
        # Ray's own workers outlive the runtime by seconds, enough to finish a cell this small
        # now and then; tlexp's end with their raylet (test_sweep: a worker ends with its parent).
        # Looked at once no process but Ray's two agents is left (nothing that runs a cell, so
        # no result can come later), or after 8 s, whichever is first.
        deadline = time.time() + 8
        while time.time() < deadline and not only_ray_agents(session_processes(proc.pid)):
            time.sleep(0.1)
        assert not list(sweep_dir.glob("*/metrics.json"))
    finally:
        # What is left is Ray's: its dashboard and runtime-env agents see the raylet die at
        # once, then spend a minute trying to report that to the GCS, dead too, before they
        # exit. They are the sweep's, so the test ends them (by pid, in the sweep's session).
        proc.kill()
        proc.wait()
        left = end_session(proc)
    assert not [cmd for cmd in left.values() if "_ray_cell" in cmd], left  # no cell of tlexp's ran on

    again = sweep(cfg, "--executor", "ray", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    st = statuses(sweep_dir)
    assert all(c["status"] == "finished" for c in st.values())
    assert (sweep_dir / ".attempts" / "vgg16_f30_s0.attempt").is_dir()
    assert sorted(rows(sweep_dir)) == ["vgg16_f30_s0", "vgg16_f50_s0", "vgg16_f70_s0"]


def test_sigterm_stops_a_ray_sweep_like_ctrl_c(tmp_path, flat_dataset):
    # ray.init installs its own SIGTERM handler (sys.exit); tlexp keeps the CLI's, so the
    # interruption is recorded as with the local executor.
    cfg = config(tmp_path, flat_dataset, {"model.freeze": [0.3, 0.5]}, "term")
    sweep_dir = tmp_path / "results" / "term"
    proc = start_sweep(
        cfg,
        "--executor",
        "ray",
        cwd=tmp_path,
        started=sweep_dir / "vgg16_f30_s0" / "config.yaml",
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TLEXP_RAY_NUM_CPUS": "2"},
    )
    try:
        proc.terminate()
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        left = end_session(proc, grace_s=30)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "tlexp: terminated (SIGTERM)" in err and "Traceback" not in err
    assert {c["status"] for c in statuses(sweep_dir).values()} == {"interrupted"}
    assert not left, f"tlexp did not shut its Ray runtime down: {left}"  # unlike a killed driver, it can


def test_a_request_no_node_can_meet_is_an_error(tmp_path, flat_dataset):
    # No GPU here: Ray would queue the cell and wait forever; tlexp says what is missing.
    cfg = config(tmp_path, flat_dataset, {"seed": [0]}, "nogpu")
    proc = sweep(cfg, "--executor", "ray", "resources.gpus=1", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "resources.gpus=1, but no node of the Ray cluster has 1 GPU(s)" in proc.stderr
    assert "it has 2 CPU(s) and 0 GPU(s) in all" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists()  # refused before any file


def test_ray_cells_find_the_demo_data_prepared_once(ray_and_local):
    # All cells need the demo data; the driver makes it before dispatching them, instead of
    # every task generating it at once (which failed a cell with "Directory not empty").
    first = ray_and_local.first
    assert first.ray.stderr.count("data: generating the demo dataset") == 1
    # The cells that failed, failed on their weights file (asserted above), none on the data.
    finished = [n for n, c in first.statuses.items() if c["status"] == "finished"]
    assert sorted(finished) == ["vgg16_f30_s0_weights-none", "vgg16_f70_s0_weights-none"]
    for cell in finished:
        assert "data: reusing the demo dataset" in first.logs[cell]
    # The re-run finds the data made: it generates nothing, and every cell reuses it.
    again = ray_and_local.again
    assert again.returncode == 0, again.stderr
    assert "data: generating the demo dataset" not in again.stderr
    assert {c["status"] for c in statuses(ray_and_local.ray_dir).values()} == {"finished"}
    cells = sorted(ray_and_local.ray_dir.glob("vgg16_*"))
    assert [c.name for c in cells] == sorted(statuses(ray_and_local.ray_dir))  # every cell's folder, none missed
    for cell in cells:
        assert "data: reusing the demo dataset" in (cell / "run.log").read_text()


def test_missing_ray_is_a_clear_error(tmp_path, flat_dataset):
    code = (
        "import sys; sys.modules['ray'] = None\nfrom tlexp.cli import main\n"
        f"sys.exit(main(['sweep', {str(config(tmp_path, flat_dataset, {'seed': [0]}, 'noray'))!r}, "
        "'--executor', 'ray']))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert "pip install 'tlexp[ray]'" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists()
