"""Schedules and strategies in whole runs: the record lists the stages that ran, the cache
serves the strategies it can, and a cell stopped between stages is rerun whole."""

from __future__ import annotations

import json
import signal
import time

import pytest

import tlexp
from tlexp.results import load_record

from conftest import end_session, own_tmpdir, start_sweep, sweep_config, tiny_config

pytestmark = pytest.mark.slow


def test_lp_ft_run_records_its_stages_and_trains_on_the_cached_prefix(tmp_path, flat_dataset):
    cfg = tiny_config(
        tmp_path,
        flat_dataset,
        "model.freeze=0.5",
        "train.schedule=lp-ft",
        "train.probe_epochs=2",
        "train.epochs=1",
        "train.prefix_cache.enabled=true",
    )
    record = load_record(tlexp.run(cfg))
    assert [(s.name, s.epochs, s.first_epoch, s.depth) for s in record.training.stages] == [
        ("probe", 2, 1, 0),
        ("fine-tune", 1, 3, None),
    ]
    assert record.training.schedule == "lp-ft"
    assert record.training.stages[1].learning_rate == pytest.approx(0.001 * 0.1)
    assert record.training.stages[0].trainable_params < record.training.stages[1].trainable_params
    assert record.history.stage == ["probe", "probe", "fine-tune"] and record.history.epochs == 3
    assert record.prefix_cache.used  # both stages train above the cut: one cache serves them
    csv = next((tmp_path / "out").glob("*/history.csv")).read_text().splitlines()
    assert csv[0].startswith("epoch,stage,loss")
    assert [r.split(",")[1] for r in csv[1:]] == ["probe", "probe", "fine-tune"]


def test_block_run_caches_everything_below_the_block(tmp_path, flat_dataset):
    cfg = tiny_config(
        tmp_path, flat_dataset, "model.freeze=0", "model.train=block:4", "train.prefix_cache.enabled=true"
    )
    record = load_record(tlexp.run(cfg))
    assert record.freeze.train == "block:4" and record.freeze.last_frozen_layer == "block3_pool"
    assert record.freeze.trains.startswith("block4 (block4_conv1 .. block4_pool)")
    assert record.prefix_cache.used and record.prefix_cache.layer == "block3_pool"


def test_biases_with_nothing_frozen_cannot_use_the_cache(tmp_path, flat_dataset):
    cfg = tiny_config(tmp_path, flat_dataset, "model.freeze=0", "model.train=biases", "train.prefix_cache.enabled=true")
    record = load_record(tlexp.run(cfg))
    assert not record.prefix_cache.used and record.prefix_cache.reason == "no backbone layer is frozen"
    assert record.freeze.backbone_trainable == 4_224  # VGG16's 13 conv bias vectors: 2*64+2*128+3*256+6*512


def test_a_cell_killed_between_stages_is_rerun_whole(tmp_path, flat_dataset):
    cfg = sweep_config(
        tmp_path,
        flat_dataset,
        {"train.schedule": ["lp-ft"]},
        name="killed",
        train={"probe_epochs": 1, "epochs": 3},
    )
    sweep_dir = tmp_path / "results" / "killed"
    cell = sweep_dir / "vgg16_f30_lp-ft_s0"
    proc = start_sweep(cfg, cwd=tmp_path, started=cell / "config.yaml", env=own_tmpdir(tmp_path))
    try:
        deadline = time.time() + 240
        while "stage 2/2 fine-tune" not in _text(cell / "run.log"):
            assert proc.poll() is None and time.time() < deadline, _text(cell / "run.log")
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # mid-schedule: the probe done, fine-tuning begun
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        end_session(proc)
    assert not (cell / "metrics.json").exists()

    result = tlexp.sweep(tlexp.load_config(cfg))  # the resume
    assert result.failed == []
    record = load_record(cell)
    assert [(s.name, s.epochs) for s in record.training.stages] == [("probe", 1), ("fine-tune", 3)]
    assert record.history.stage == ["probe", "fine-tune", "fine-tune", "fine-tune"]
    log = _text(cell / "run.log")
    assert log.index("stage 1/2 probe") < log.index("stage 2/2 fine-tune")  # from the first stage, in order
    (attempt,) = (sweep_dir / ".attempts").iterdir()  # the stopped attempt, kept for its log
    assert "stage 2/2 fine-tune" in _text(attempt / "run.log") and not (attempt / "metrics.json").exists()
    cells = {c["name"]: c for c in json.loads((sweep_dir / "status.json").read_text())["cells"]}
    assert cells[cell.name]["attempts"] == 2 and cells[cell.name]["status"] == "finished"


def _text(path) -> str:
    return path.read_text() if path.exists() else ""
