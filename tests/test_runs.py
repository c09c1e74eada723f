"""Run folders are never reused; writes are atomic."""

from __future__ import annotations

import json
import os
import stat

import pytest

from tlexp import files, runfolder


def test_new_run_dir_never_reuses(tmp_path):
    a = runfolder.new_run_dir(tmp_path, "vgg16_f30_s0")
    (a / "metrics.json").write_text("{}")
    b = runfolder.new_run_dir(tmp_path, "vgg16_f30_s0")
    c = runfolder.new_run_dir(tmp_path, "vgg16_f30_s0")
    assert [a.name, b.name, c.name] == ["vgg16_f30_s0", "vgg16_f30_s02", "vgg16_f30_s03"]
    assert (a / "metrics.json").read_text() == "{}"  # untouched


def test_safe_name():
    assert runfolder.safe_name("my run/1: test") == "my_run_1_test"
    assert runfolder.safe_name("..") == "run"


def test_atomic_write_leaves_old_file_on_error(tmp_path):
    target = tmp_path / "metrics.json"
    files.write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with files.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert json.loads(target.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["metrics.json"]  # no temp file left


def test_written_files_follow_umask(tmp_path):
    old = os.umask(0o022)
    try:
        files.write_text(tmp_path / "x.txt", "hi")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.txt").stat().st_mode) == 0o644


def test_json_handles_numpy_and_nan(tmp_path):
    import numpy as np

    files.write_json(tmp_path / "m.json", {"a": np.float32(0.5), "b": np.arange(3), "c": float("nan")})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 0.5, "b": [0, 1, 2], "c": None}


def test_csv_roundtrip(tmp_path):
    files.write_csv(tmp_path / "s.csv", ["path", "label"], [("a,b.jpg", "cat"), ("c.jpg", "dog")])
    assert files.read_csv(tmp_path / "s.csv") == [
        {"path": "a,b.jpg", "label": "cat"},
        {"path": "c.jpg", "label": "dog"},
    ]
