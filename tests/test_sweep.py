"""Sweeps: grid expansion and naming, resume after a killed sweep, failures, changed configs."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tlexp.config import expand_sweep, load_config
from tlexp.errors import ConfigError, UserError

from conftest import own_tmpdir, start_sweep, sweep_config, tlexp_here

# --------------------------------------------------------------------------- grid (no TensorFlow)


def test_grid_expansion_order_names_and_shared_split(tmp_path):
    cfg = load_config(
        None,
        [
            f"data.root={tmp_path}",
            "seed=4",
            "sweep.model.backbone=[vgg16, resnet50]",
            "sweep.model.freeze=[0.1, 0.7]",
            "sweep.seed=[0, 1]",
        ],
    )
    cells = expand_sweep(cfg)
    assert [c.name for c in cells] == [
        "vgg16_f10_s0",
        "vgg16_f10_s1",
        "vgg16_f70_s0",
        "vgg16_f70_s1",
        "resnet50_f10_s0",
        "resnet50_f10_s1",
        "resnet50_f70_s0",
        "resnet50_f70_s1",
    ]
    assert cells[5].overrides == {"model.backbone": "resnet50", "model.freeze": 0.1, "seed": 1}
    assert cells[5].config.model.backbone == "resnet50" and cells[5].config.seed == 1
    # every cell is an ordinary run on the base config's split
    assert {c.config.data.split_seed for c in cells} == {4}
    assert all(c.config.sweep == {} and c.config.name == c.name for c in cells)


def test_nested_yaml_grid_and_other_keys_in_names(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        f"data: {{root: {tmp_path}}}\nsweep:\n  model:\n    head:\n      dense: [[256], [64, 32]]\n"
        "  train.learning_rate: [0.001]\n"
    )
    cells = expand_sweep(load_config(path))
    assert [c.name for c in cells] == [
        "vgg16_f30_s0_dense-256_learning_rate-0.001",
        "vgg16_f30_s0_dense-64-32_learning_rate-0.001",
    ]
    assert cells[1].config.model.head.dense == [64, 32]


def test_command_line_narrows_the_grid(tmp_path):
    study = Path(__file__).resolve().parents[1] / "configs" / "study.yaml"
    full = expand_sweep(load_config(study, [f"data.root={tmp_path}"]))
    assert len(full) == 12
    narrowed = expand_sweep(
        load_config(study, [f"data.root={tmp_path}", "sweep.model.backbone=[densenet121]", "sweep.seed=2"])
    )  # a single value is a one-value list
    assert [c.name for c in narrowed] == [f"densenet121_f{f}_s2" for f in (10, 30, 50, 70)]


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("sweep.model.frezze=[0.1]", r"Unknown key 'sweep.model.frezze'. Did you mean 'sweep.model.freeze'\?"),
        ("sweep.model.freeze=[0.1, 1.5]", r"sweep value model.freeze=1.5: The 'model.freeze' parameter must be"),
        ("sweep.output.dir=[a, b]", r"'sweep.output.dir' cannot be swept"),
        ("sweep.seed=[]", r"'sweep.seed' must list at least one value"),
        ("sweep.model.head=[{dense: [8]}]", r"'sweep.model.head' is a section; sweep its keys instead"),
    ],
)
def test_bad_grids(tmp_path, override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [f"data.root={tmp_path}", override])


def test_run_refuses_a_sweep_config(tmp_path):
    from tlexp.experiment import run_experiment

    cfg = load_config(None, [f"data.root={tmp_path}", "sweep.seed=[0, 1]"])
    with pytest.raises(UserError, match=r"defines a sweep over seed; run it with 'tlexp sweep'"):
        run_experiment(cfg)


# --------------------------------------------------------------------------- running sweeps


def tlexp(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tlexp", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def summary(sweep_dir: Path) -> dict[str, dict[str, str]]:
    with open(sweep_dir / "summary.csv", newline="") as f:
        return {r["name"]: r for r in csv.DictReader(f)}


def status(sweep_dir: Path) -> dict[str, dict]:
    return {c["name"]: c for c in json.loads((sweep_dir / "status.json").read_text())["cells"]}


GRID = {"model.freeze": [0.3, 0.5, 0.7]}
CELLS = ["vgg16_f30_s0", "vgg16_f50_s0", "vgg16_f70_s0"]


@pytest.mark.slow
def test_killed_sweep_resumes_and_matches_an_uninterrupted_one(tmp_path, flat_dataset, capsys):
    # The reference: the same grid, never interrupted (in this process; only the killed sweep needs its own).
    ref = tlexp_here(capsys, "sweep", str(sweep_config(tmp_path, flat_dataset, GRID, name="ref")), cwd=tmp_path)
    assert ref.returncode == 0, ref.stderr
    ref_dir = tmp_path / "results" / "ref"
    assert {n: c["status"] for n, c in status(ref_dir).items()} == dict.fromkeys(CELLS, "finished")
    for cell in CELLS:
        assert (ref_dir / cell / "metrics.json").is_file()
    split = (ref_dir / CELLS[0] / "split.csv").read_bytes()
    assert all((ref_dir / c / "split.csv").read_bytes() == split for c in CELLS)  # one split for all cells

    # Kill a real sweep while its second cell is running.
    cfg = sweep_config(tmp_path, flat_dataset, GRID, name="killed")
    sweep_dir = tmp_path / "results" / "killed"
    started = sweep_dir / CELLS[1] / "config.yaml"
    proc = start_sweep(cfg, cwd=tmp_path, started=started, start_new_session=True, env=own_tmpdir(tmp_path))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (sweep_dir / CELLS[0] / "metrics.json").is_file()
    assert not (sweep_dir / CELLS[1] / "metrics.json").exists()
    assert not (sweep_dir / "summary.csv").exists()
    first_done = (sweep_dir / CELLS[0] / "metrics.json").stat().st_mtime_ns

    again = tlexp_here(capsys, "sweep", str(cfg), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "1 finished before, 2 to run" in again.stderr
    assert (sweep_dir / CELLS[0] / "metrics.json").stat().st_mtime_ns == first_done  # not redone
    attempts = list((sweep_dir / ".attempts").iterdir())
    assert [a.name for a in attempts] == [f"{CELLS[1]}.attempt"]  # the killed attempt, kept aside
    assert not (attempts[0] / "metrics.json").exists()
    st = status(sweep_dir)
    assert st[CELLS[1]]["attempts"] == 2 and all(c["status"] == "finished" for c in st.values())

    got, want = summary(sweep_dir), summary(ref_dir)
    assert sorted(got) == sorted(want) == CELLS
    for cell in CELLS:
        for col in ("head_test_accuracy", "forest_test_accuracy", "logreg_test_accuracy", "frozen_share"):
            assert float(got[cell][col]) == pytest.approx(float(want[cell][col]), abs=1e-9), (cell, col)

    # tlexp report rebuilds the same table from run folders gathered elsewhere (two "machines")
    import shutil

    for machine, cells in (("m1", CELLS[:2]), ("m2", CELLS[2:])):
        for cell in cells:
            shutil.copytree(ref_dir / cell, tmp_path / "gathered" / machine / cell)
    rep = tlexp_here(
        capsys,
        "report",
        str(tmp_path / "gathered" / "m1"),
        str(tmp_path / "gathered" / "m2"),
        "--out",
        str(tmp_path / "rebuilt"),
        cwd=tmp_path,
    )
    assert rep.returncode == 0, rep.stderr
    rebuilt = summary(tmp_path / "rebuilt")
    assert sorted(rebuilt) == CELLS
    for cell in CELLS:  # every column but where the folder is
        assert {k: v for k, v in rebuilt[cell].items() if k != "run_dir"} == {
            k: v for k, v in want[cell].items() if k != "run_dir"
        }
    assert (tmp_path / "rebuilt" / "report.html").is_file() and (tmp_path / "rebuilt" / "paired.csv").is_file()


@pytest.mark.slow
def test_failing_cell_is_recorded_and_retried(tmp_path, flat_dataset, capsys):
    bad = tmp_path / "bad.weights.h5"
    bad.write_bytes(b"not an HDF5 file")
    cfg = sweep_config(tmp_path, flat_dataset, {"model.weights": ["none", str(bad)]}, name="fails")
    sweep_dir = tmp_path / "results" / "fails"
    first = tlexp_here(capsys, "sweep", str(cfg), cwd=tmp_path)
    assert first.returncode == 1, first.stderr  # some cells failed
    assert "Traceback" not in first.stderr
    st = status(sweep_dir)
    ok, broken = st["vgg16_f30_s0_weights-none"], [c for n, c in st.items() if n != "vgg16_f30_s0_weights-none"][0]
    assert ok["status"] == "finished"
    assert broken["status"] == "failed" and "WeightsError: Could not load weights" in broken["error"]
    rows = summary(sweep_dir)
    assert rows[broken["name"]]["status"] == "failed" and rows[ok["name"]]["status"] == "finished"
    ok_mtime = (sweep_dir / ok["name"] / "metrics.json").stat().st_mtime_ns

    # Fix the file; the same command retries only the failed cell.
    import keras

    from tlexp.model import build_backbone

    keras.utils.set_random_seed(0)
    bad.unlink()
    build_backbone("vgg16", 32).save_weights(bad)
    second = tlexp_here(capsys, "sweep", str(cfg), cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    st = status(sweep_dir)
    assert st[broken["name"]]["status"] == "finished" and st[broken["name"]]["attempts"] == 2
    assert (sweep_dir / ok["name"] / "metrics.json").stat().st_mtime_ns == ok_mtime
    assert all(r["status"] == "finished" for r in summary(sweep_dir).values())


@pytest.mark.slow
def test_changed_config_is_refused_added_cells_just_run(tmp_path, flat_dataset, monkeypatch, capsys):
    cfg = sweep_config(tmp_path, flat_dataset, {"model.freeze": [0.5]}, name="grow")
    store = tmp_path / "mlruns"
    cfg.write_text(cfg.read_text() + f"tracking: {{mlflow: {{uri: {store}, experiment: study}}}}\n")
    sweep_dir = tmp_path / "results" / "grow"
    assert tlexp_here(capsys, "sweep", str(cfg), cwd=tmp_path).returncode == 0
    done = (sweep_dir / "vgg16_f50_s0" / "metrics.json").stat().st_mtime_ns
    assert (sweep_dir / "vgg16_f50_s0" / "run.log").read_text().count("mlflow: logged") == 1  # said once

    changed = tlexp_here(capsys, "sweep", str(cfg), "train.learning_rate=0.01", cwd=tmp_path)
    assert changed.returncode == 2
    assert "The config changed since 1 cell(s)" in changed.stderr
    assert "train.learning_rate: 0.001 -> 0.01" in changed.stderr
    assert "--new" in changed.stderr and "Traceback" not in changed.stderr

    grown = tlexp_here(capsys, "sweep", str(cfg), "sweep.model.freeze=[0.5, 0.7]", cwd=tmp_path)
    assert grown.returncode == 0, grown.stderr
    assert "1 finished before, 1 to run" in grown.stderr
    assert (sweep_dir / "vgg16_f50_s0" / "metrics.json").stat().st_mtime_ns == done
    assert sorted(summary(sweep_dir)) == ["vgg16_f50_s0", "vgg16_f70_s0"]

    fresh = tlexp_here(capsys, "sweep", str(cfg), "train.learning_rate=0.01", "--new", cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout.strip().endswith("grow2")
    assert (
        yaml.safe_load((tmp_path / "results" / "grow2" / "vgg16_f50_s0" / "config.yaml").read_text())["train"][
            "learning_rate"
        ]
        == 0.01
    )

    # MLflow: one parent run per sweep folder, one nested run per cell, none logged twice
    from tlexp.results import resolve_uri

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow >= 3.13 keeps plain folders behind a switch
    from mlflow.tracking import MlflowClient

    client = MlflowClient(resolve_uri(str(store)))
    exp = client.get_experiment_by_name("study")
    found = client.search_runs([exp.experiment_id])
    parents = {r.info.run_id: r.data.tags["tlexp.sweep_dir"] for r in found if "tlexp.sweep_dir" in r.data.tags}
    assert sorted(Path(d).name for d in parents.values()) == ["grow", "grow2"]
    children = [r for r in found if "mlflow.parentRunId" in r.data.tags]
    by_parent = {Path(parents[r.data.tags["mlflow.parentRunId"]]).name: [] for r in children}
    for r in children:
        by_parent[Path(parents[r.data.tags["mlflow.parentRunId"]]).name].append(r.info.run_name)
    assert {k: sorted(v) for k, v in by_parent.items()} == {
        "grow": ["vgg16_f50_s0", "vgg16_f70_s0"],
        "grow2": ["vgg16_f50_s0"],
    }


@pytest.mark.slow
def test_plan_lists_cells_without_training(tmp_path, flat_dataset, capsys):
    proc = tlexp_here(
        capsys,
        "plan",
        str(
            sweep_config(tmp_path, flat_dataset, {"model.backbone": ["vgg16", "resnet50"], "model.freeze": [0.3, 0.7]})
        ),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "# 4 cells" in lines
    assert any(line.startswith("vgg16_f30_s0") and "block4_conv2" in line and "35.9 %" in line for line in lines)
    assert any(line.startswith("resnet50_f70_s0") and "conv5_block2_1_relu" in line for line in lines)
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_sigterm_is_recorded_like_ctrl_c(tmp_path, flat_dataset):
    # Slurm's time limit, `timeout` and `kill` send SIGTERM: the sweep records it and exits 143.
    cfg = sweep_config(tmp_path, flat_dataset, GRID, name="term")
    sweep_dir = tmp_path / "results" / "term"
    proc = start_sweep(
        cfg, cwd=tmp_path, started=sweep_dir / CELLS[0] / "config.yaml", stderr=subprocess.PIPE, text=True
    )
    proc.terminate()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "tlexp: terminated (SIGTERM)" in err and "Traceback" not in err
    st = status(sweep_dir)
    assert st[CELLS[0]]["status"] == "interrupted" and st[CELLS[1]]["status"] == "pending"
    assert "run: interrupted" in (sweep_dir / CELLS[0] / "run.log").read_text()
    assert not (sweep_dir / CELLS[0] / "metrics.json").exists()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc (Linux)")
def test_ray_worker_ends_with_the_raylet_that_started_it(tmp_path):
    # What a Ray cell does first (exit_with_raylet), in a child of a stand-in raylet. When
    # that parent is killed, the child must end, not run on to finish its cell (here: sleep
    # two minutes, then say so).
    child = (
        "import time\nfrom tlexp.sweeps._ray import exit_with_raylet\nexit_with_raylet()\n"
        "print('ready', flush=True)\ntime.sleep(120)\nprint('ran on', flush=True)"
    )
    raylet = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys\n"
            f"p = subprocess.Popen([sys.executable, '-c', {child!r}])\n"
            "print(p.pid, flush=True)\np.wait()",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    pid = int(raylet.stdout.readline())
    try:
        assert raylet.stdout.readline().strip() == "ready"
        assert _alive(pid)
        raylet.kill()
        raylet.wait()
        # Generous: the watcher looks every 0.2 s, so only a worker that runs on gets near it.
        deadline = time.time() + 60
        while _alive(pid) and time.time() < deadline:
            time.sleep(0.05)
        assert not _alive(pid), "the worker outlived its raylet by 60 s"
        assert raylet.stdout.read() == ""  # the pipe closed with the worker, before it could say 'ran on'
    finally:
        if _alive(pid):  # the worker this test started (through the stand-in): never left running
            os.kill(pid, signal.SIGKILL)
        raylet.stdout.close()


def _alive(pid: int) -> bool:
    """Running (not exited, not a zombie waiting to be reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")
