"""MLflow tracking from run folders, against local stores in tmp_path (file store and sqlite)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from tlexp import files, runfolder
from tlexp.errors import UserError
from tlexp.results import log_run, require_mlflow, resolve_uri, sweep_parent

from records import make_record, scores

needs_mlflow = pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="MLflow not installed")
needs_sqlalchemy = pytest.mark.skipif(
    importlib.util.find_spec("sqlalchemy") is None or importlib.util.find_spec("alembic") is None,
    reason="the sqlite store needs sqlalchemy and alembic",
)


@pytest.fixture(autouse=True)
def _quiet_mlflow(monkeypatch):
    # No usage pings from tests; and start from the user's default: file store not opted in.
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def make_run(parent: Path, name: str, *, backbone: str = "vgg16", seed: int = 0) -> Path:
    """A small finished run folder with known numbers (the layout the README documents)."""
    from PIL import Image

    run_dir = parent / name
    run_dir.mkdir(parents=True)
    config = {
        "name": name,
        "seed": seed,
        "model": {"backbone": backbone, "freeze": 0.3, "head": {"dense": [256, 64]}},
        "train": {"epochs": 2, "learning_rate": 0.0003},
        "forest": {"enabled": True, "max_depth": None},
        # 150 params: more than one log_batch call; one value longer than MLflow's 500 characters.
        "classifiers": {"big": {"params": {f"p{i}": i for i in range(150)}, "note": "x" * 600}},
        "sweep": {},
    }
    files.write_yaml(run_dir / runfolder.CONFIG_FILE, config)
    files.write_csv(
        run_dir / runfolder.HISTORY_FILE,
        ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"],
        [[1, 0.9, 0.5, 0.8, 0.55], [2, 0.4, 0.75, 0.6, 0.7]],
    )
    make_record(
        name,
        str(run_dir),
        config,
        {
            "head": {s: scores(a, 0.5, f1=0.6, auc=0.9) for s, a in (("train", 1.0), ("val", 0.75), ("test", 0.5))},
            "forest": {s: scores(0.25, 0.5, f1=0.6, auc=None) for s in ("train", "val", "test")},
            "logreg": {s: scores(0.625, 0.5, f1=0.6, auc=0.9) for s in ("train", "val", "test")},
        },
        share=0.31,
        wall=2.5,
        trainable=1234,
    ).save(run_dir)
    (run_dir / runfolder.LOG_FILE).write_text("train: done\n")
    for plot in (runfolder.CURVES_PLOT, runfolder.CONFUSION_PLOT):
        Image.new("RGB", (4, 4), (255, 0, 0)).save(run_dir / plot)
    return run_dir


def _client(uri: str, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # reading a file store back needs it too
    return MlflowClient(tracking_uri=resolve_uri(uri))


def _all_runs(client, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    return list(client.search_runs([exp.experiment_id]))


@needs_mlflow
def test_log_run_file_store(tmp_path, monkeypatch):
    run_dir = make_run(tmp_path / "results", "vgg16_f30_s0")
    store = tmp_path / "mlruns"

    run_id = log_run(run_dir, str(store), "exp")  # a plain path works as uri
    assert "MLFLOW_ALLOW_FILE_STORE" not in os.environ  # opted in for the call only
    assert (store / "meta.yaml").is_file() or any(store.iterdir())

    client = _client(f"file:{store}", monkeypatch)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "vgg16_f30_s0"
    assert run.info.start_time == 1767323045000  # from metrics.json, not the upload time
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    assert params["model.backbone"] == "vgg16"
    assert params["model.freeze"] == "0.3"
    assert params["model.head.dense"] == "[256, 64]"
    assert params["forest.max_depth"] == "null"
    assert params["sweep"] == "{}"
    assert params["classifiers.big.params.p149"] == "149"  # past the first batch of 100
    assert len(params["classifiers.big.note"]) == 500

    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "loss")] == [(1, 0.9), (2, 0.4)]
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "val_accuracy")] == [(1, 0.55), (2, 0.7)]
    assert metrics["test_head_accuracy"] == 0.5
    assert metrics["val_head_accuracy"] == 0.75
    assert metrics["train_head_f1"] == 0.6
    assert metrics["test_forest_accuracy"] == 0.25
    assert "test_forest_roc_auc" not in metrics  # null in metrics.json
    assert metrics["test_logreg_accuracy"] == 0.625
    assert metrics["test_logreg_roc_auc"] == 0.9
    assert metrics["frozen_share"] == 0.31
    assert metrics["trainable_params"] == 1234
    assert metrics["wall_time_s"] == 2.5

    assert tags["tlexp.backbone"] == "vgg16"
    assert tags["tlexp.seed"] == "0"
    assert tags["tlexp.run_dir"] == str(run_dir.resolve())
    assert tags["tlexp.version"] == __import__("tlexp").__version__
    assert "mlflow.parentRunId" not in tags

    top = {a.path for a in client.list_artifacts(run_id)}
    assert top == {"curves.png", "confusion.png", "run"}
    inside = {a.path for a in client.list_artifacts(run_id, "run")}
    assert {"run/config.yaml", "run/metrics.json", "run/history.csv", "run/run.log", "run/curves.png"} <= inside


@needs_mlflow
def test_log_run_twice_is_one_run(tmp_path, monkeypatch):
    run_dir = make_run(tmp_path, "r")
    uri = f"file:{tmp_path / 'mlruns'}"
    first = log_run(run_dir, uri, "exp")
    assert log_run(run_dir, uri, "exp") == first
    assert [r.info.run_id for r in _all_runs(_client(uri, monkeypatch), "exp")] == [first]


@needs_mlflow
def test_sweep_cells_nest_under_one_parent(tmp_path, monkeypatch):
    sweep_dir = tmp_path / "sweep"
    cells = [make_run(sweep_dir, "vgg16_f30_s0"), make_run(sweep_dir, "resnet50_f30_s0", backbone="resnet50")]
    uri = str(tmp_path / "mlruns")

    parent = sweep_parent(uri, "exp", sweep_dir, "sweep")
    ids = [log_run(c, uri, "exp", parent_run_id=parent) for c in cells]
    assert sweep_parent(uri, "exp", sweep_dir, "sweep") == parent  # a resumed sweep reuses it
    assert log_run(cells[0], uri, "exp", parent_run_id=parent) == ids[0]

    client = _client(uri, monkeypatch)
    assert len(set(ids)) == 2
    for run_id in ids:
        assert client.get_run(run_id).data.tags["mlflow.parentRunId"] == parent
    assert client.get_run(ids[1]).data.tags["tlexp.backbone"] == "resnet50"
    assert client.get_run(parent).data.tags["tlexp.sweep_dir"] == str(sweep_dir.resolve())
    assert len(_all_runs(client, "exp")) == 3


@pytest.mark.slow
@needs_mlflow
@needs_sqlalchemy
def test_log_run_sqlite(tmp_path, monkeypatch):
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # artifacts must not land in ./mlruns of the working directory
    run_dir = make_run(tmp_path, "r")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    run_id = log_run(run_dir, uri, "exp")
    assert log_run(run_dir, uri, "exp") == run_id

    client = _client(uri, monkeypatch)
    run = client.get_run(run_id)
    assert run.data.params["model.backbone"] == "vgg16"
    assert run.data.metrics["test_head_accuracy"] == 0.5
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "loss")] == [(1, 0.9), (2, 0.4)]
    assert {a.path for a in client.list_artifacts(run_id)} == {"curves.png", "confusion.png", "run"}
    assert len(_all_runs(client, "exp")) == 1
    # MLflow 2.x makes an empty ./mlruns for its default experiment when it creates the database.
    assert [p for p in elsewhere.rglob("*") if p.is_file()] == []
    assert (tmp_path / "mlartifacts" / "exp").is_dir()


@needs_mlflow
def test_failed_upload_is_redone(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    run_dir = make_run(tmp_path, "o'clock")  # a quote in the path: MLflow filters cannot escape it
    uri = str(tmp_path / "mlruns")

    def disk_full(self, *args, **kwargs):
        raise OSError("No space left on device")

    with monkeypatch.context() as m:
        m.setattr(MlflowClient, "log_artifacts", disk_full)
        with pytest.raises(UserError, match="No space left on device"):
            log_run(run_dir, uri, "exp")
    assert _all_runs(_client(uri, monkeypatch), "exp") == []  # the half-logged run was deleted

    run_id = log_run(run_dir, uri, "exp")
    assert log_run(run_dir, uri, "exp") == run_id
    assert [r.info.run_id for r in _all_runs(_client(uri, monkeypatch), "exp")] == [run_id]


@needs_mlflow
def test_unfinished_run_is_refused(tmp_path):
    run_dir = make_run(tmp_path, "r")
    (run_dir / runfolder.METRICS_FILE).unlink()
    with pytest.raises(UserError, match="has no metrics.json"):
        log_run(run_dir, str(tmp_path / "mlruns"), "exp")


@needs_mlflow
def test_deleted_experiment_is_a_user_error(tmp_path, monkeypatch):
    uri = str(tmp_path / "mlruns")
    sweep_parent(uri, "gone", tmp_path, "s")
    client = _client(uri, monkeypatch)
    client.delete_experiment(client.get_experiment_by_name("gone").experiment_id)
    try:
        log_run(make_run(tmp_path, "r"), uri, "gone")
    except UserError as exc:
        assert "deleted MLflow experiment" in str(exc)
    else:  # MLflow 2.x file stores hide deleted experiments and let a new one take the name
        assert client.get_experiment_by_name("gone").lifecycle_stage == "active"


def test_resolve_uri(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    expected = (tmp_path / "mlruns").resolve().as_uri()
    assert resolve_uri("mlruns") == expected
    assert resolve_uri("file:./mlruns") == expected
    assert resolve_uri(str(tmp_path / "mlruns")) == expected
    assert resolve_uri(expected) == expected
    assert resolve_uri("http://host:5000") == "http://host:5000"
    assert resolve_uri("sqlite:///mlflow.db") == "sqlite:///mlflow.db"


def test_require_mlflow_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # makes `import mlflow` fail
    monkeypatch.delitem(sys.modules, "mlflow.tracking", raising=False)
    with pytest.raises(UserError, match=r"MLflow is not installed\. Install it with: pip install 'tlexp\[mlflow\]'"):
        require_mlflow()


@needs_mlflow
@needs_sqlalchemy
def test_require_mlflow_sqlite_needs_sqlalchemy(monkeypatch):
    require_mlflow("sqlite:///mlflow.db")  # mlflow itself is fine (or this test is skipped)
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)
    with pytest.raises(UserError, match="needs sqlalchemy"):
        require_mlflow("sqlite:///mlflow.db")
    require_mlflow("http://host:5000")  # servers need nothing more
