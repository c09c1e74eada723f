"""The library API a notebook calls (tlexp.run, sweep, report, predict, load_record), end to end."""

from __future__ import annotations

import importlib

import pytest

import tlexp
from tlexp.errors import UserError

from conftest import tiny_config, tiny_overrides

pytestmark = pytest.mark.slow


def test_run_record_report_predict_and_sweep_from_python(tmp_path, flat_dataset):
    cfg = tiny_config(tmp_path, flat_dataset, "name=api")
    run_dir = tlexp.run(cfg)
    record = tlexp.load_record(run_dir)
    assert run_dir.name == "api" and set(record.classifiers) == {"head", "forest", "logreg"}
    assert record.data.counts["test"] == {"cat": 3, "dog": 3}

    paths = tlexp.report([run_dir], tmp_path / "report")
    assert {p.name for p in paths.values()} >= {"summary.md", "report.html"}
    assert "## The answer" in (tmp_path / "report" / "summary.md").read_text()

    names, rows = tlexp.predict(run_dir, [flat_dataset / "cat.0.jpg", flat_dataset / "dog.1.jpg"])
    assert names == ["cat", "dog"] and [r["path"] for r in rows] == [
        str(flat_dataset / "cat.0.jpg"),
        str(flat_dataset / "dog.1.jpg"),
    ]
    assert all(r["error"] is None and abs(sum(r["proba"]) - 1) < 1e-6 for r in rows)

    importlib.import_module("tlexp.sweeps")  # loaded: the package does not hide the function tlexp.sweep

    sweep_cfg = tlexp.load_config(None, tiny_overrides(tmp_path, flat_dataset, "name=apisweep", "sweep={seed: [0]}"))
    result = tlexp.sweep(sweep_cfg)
    assert result.exit_code == 0 and (result.dir / "summary.md").is_file()
    assert tlexp.plan(sweep_cfg)["cells"][0]["name"] == "vgg16_f30_s0"

    with pytest.raises(UserError, match="No finished run"):
        tlexp.report([tmp_path / "report"])
