"""The depth probe (tlexp.api.probe, 'tlexp probe', probe.enabled in a sweep) on the tiny experiment."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import tlexp.probes
from tlexp import api, files
from tlexp.cli import main
from tlexp.errors import UserError

from conftest import sweep_config, tiny_config, tiny_config_file

pytestmark = pytest.mark.slow

VGG16_FEATURES = [64, 128, 256, 512, 512]


def test_probe_scores_every_classifier_at_every_stage(tmp_path, flat_dataset):
    cfg = tiny_config(tmp_path, flat_dataset)
    out = api.probe(cfg, tmp_path / "probe")
    assert sorted(p.name for p in out.iterdir()) == ["probe.csv", "probe.json", "probe.log", "probe.png"]
    record = json.loads((out / "probe.json").read_text())
    assert (record["backbone"], record["weights"], record["image_size"], record["source"]) == (
        "vgg16",
        "none",
        32,
        "images",
    )
    assert record["n"] == {"train": 12, "val": 6, "test": 6} and record["classes"] == ["cat", "dog"]
    assert set(record["seconds"]) == {"features", "fit", "total"}
    depths = record["depths"]
    assert [d["label"] for d in depths] == ["block1", "block2", "block3", "block4", "block5"]
    assert [d["stage"] for d in depths] == [1, 2, 3, 4, 5] and [d["cut"] for d in depths] == [4, 7, 11, 15, 19]
    assert [d["features"] for d in depths] == VGG16_FEATURES
    assert depths[-1]["params_below"] == 14_714_688 and depths[-1]["share_below"] == 1.0
    assert all(a["params_below"] < b["params_below"] for a, b in zip(depths, depths[1:], strict=False))
    for d in depths:
        assert set(d["classifiers"]) == {"forest", "logreg"}
        for s in d["classifiers"].values():
            assert 0.0 <= s["val_accuracy"] <= 1.0 and 0.0 <= s["test_accuracy"] <= 1.0
            assert s["test_n"] == 6 and s["test_correct"] == round(s["test_accuracy"] * 6)
            assert s["test_correct"] / s["test_n"] == pytest.approx(s["test_accuracy"])
            assert 0.0 <= s["test_low"] <= s["test_accuracy"] <= s["test_high"] <= 1.0
    rows = files.read_csv(out / "probe.csv")
    assert len(rows) == 5 * 2 and {r["classifier"] for r in rows} == {"forest", "logreg"}
    assert [r["label"] for r in rows if r["classifier"] == "logreg"] == [d["label"] for d in depths]
    assert (out / "probe.png").stat().st_size > 5000
    assert "probe: 5 block5" in (out / "probe.log").read_text()

    with pytest.raises(UserError, match="exists; a probe never writes into an existing folder"):
        api.probe(cfg, out)
    with pytest.raises(UserError, match="has neither"):
        api.probe(tiny_config(tmp_path, flat_dataset, "forest.enabled=false", "classifiers={}"), tmp_path / "none")
    assert not (tmp_path / "none").exists()


def test_probe_command(tmp_path, flat_dataset, capsys, monkeypatch):
    """The CLI end to end (in this process), into its default folder <output.dir>/<run name>_probe."""
    config = tiny_config_file(tmp_path, flat_dataset, forest={"enabled": False})
    monkeypatch.chdir(tmp_path)
    assert main(["-q", "probe", str(config), "data.image_size=40"]) == 0
    out = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert out == tmp_path / "results" / "vgg16_f30_s0_probe"
    record = json.loads((out / "probe.json").read_text())
    assert record["image_size"] == 40 and [set(d["classifiers"]) for d in record["depths"]] == [{"logreg"}] * 5
    # user errors: exit 2 and one line, as for the other commands
    assert main(["probe", str(config), "--out", str(out)]) == 2
    assert main(["probe", str(config), "sweep={seed: [0, 1]}"]) == 2


def test_sweep_probes_each_backbone_once_and_resumes(tmp_path, flat_dataset, caplog, monkeypatch):
    config = sweep_config(tmp_path, flat_dataset, {"model.freeze": [0.0, 0.5]}, probe={"enabled": True})
    result = api.sweep(api.load_config(config), name="mini")
    assert result.exit_code == 0
    probes = result.dir / "probes"
    assert [p.name for p in probes.iterdir()] == ["vgg16"]
    record = json.loads((probes / "vgg16" / "probe.json").read_text())
    assert [d["features"] for d in record["depths"]] == VGG16_FEATURES
    written = (probes / "vgg16" / "probe.json").stat().st_mtime_ns

    caplog.set_level("INFO", logger="tlexp")
    again = api.sweep(api.load_config(config), name="mini")  # resumes: every cell and the probe are done
    assert again.dir == result.dir and again.exit_code == 0
    assert (probes / "vgg16" / "probe.json").stat().st_mtime_ns == written
    assert "depth probe of vgg16: done before" in caplog.text

    # A probe that fails leaves the sweep's cells and summary as they are: a warning, exit 0.
    def broken(cfg, out_dir):
        raise RuntimeError("no memory left")

    shutil.rmtree(probes / "vgg16")
    monkeypatch.setattr(tlexp.probes, "run_probe", broken)
    (result.dir / "summary.md").unlink()
    failed = api.sweep(api.load_config(config), name="mini")
    assert failed.exit_code == 0 and (result.dir / "summary.md").is_file()
    assert "depth probe of vgg16 failed: RuntimeError: no memory left" in caplog.text
    assert not (probes / "vgg16").exists()
