"""Tests for tlexp.results._report: run folders written by hand, with known numbers, into exact tables."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tlexp import files, runfolder
from tlexp.errors import UserError
from tlexp.results import build_report, find_runs

from records import SPLITS, first_layout, make_record, scores


def make_run(
    parent: Path,
    name: str,
    *,
    backbone: str = "vgg16",
    freeze: float | str = 0.3,
    seed: int = 0,
    share: float = 0.36,
    head: Sequence[float] = (0.95, 0.90, 0.85),  # train, val, test accuracy
    losses: Sequence[float] = (0.1, 0.2, 0.3),  # train, val, test log loss
    others: dict[str, Sequence[float]] | None = None,  # classifier -> (train, val, test) accuracy
    predictions: dict[str, Sequence[str]] | None = None,  # test split: "label", "head", classifier -> classes
    classes: Sequence[str] = ("cat", "dog"),
    wall: float = 10.0,
    epochs: int = 2,
    finished: bool = True,
    config: dict[str, Any] | None = None,  # extra dotted config keys, e.g. {"train.learning_rate": 0.1}
    auc: float | None = 0.99,
    n_test: int | None = None,  # test images in the record; default: as many as predictions, else 20
    last_epoch: float = 0.8,  # Keras' running train accuracy of the last epoch
    train_s: float | None = None,  # the train phase's seconds; default: half the wall time
    prefix_s: float = 0.0,  # the prefix phase's seconds
    predict_s: float = 0.0,  # the predict phase's seconds
    cache_source: str | None = "images",  # prefix_cache.source: images (cold), reused (warm); None: no cache
) -> Path:
    """A run folder like `tlexp run` writes: config.yaml, metrics.json, predictions.csv."""
    others = {"forest": (1.0, 0.80, 0.75)} if others is None else others
    run_dir = parent / name
    run_dir.mkdir(parents=True)
    cfg: dict[str, Any] = {
        "name": name,
        "seed": seed,
        "data": {"root": "/data", "image_size": 32, "split_seed": None},
        "model": {"backbone": backbone, "weights": "none", "freeze": freeze},
        "train": {"epochs": epochs, "learning_rate": 0.001},
        "forest": {"enabled": "forest" in others},
        "output": {"dir": str(parent)},
    }
    for key, value in (config or {}).items():
        *path, last = key.split(".")
        node = cfg
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    files.write_yaml(run_dir / runfolder.CONFIG_FILE, cfg)
    if predictions is not None:
        names = ["head"] + list(others)
        binary = len(classes) == 2
        header = ["path", "split", "label"] + [c for n in names for c in ([n, f"{n}_p1"] if binary else [n])]
        # A few train rows (all right) that the paired test must ignore, then the test split.
        split_rows = [("train", classes[0], {n: classes[0] for n in names}) for _ in range(3)]
        split_rows += [("test", y, {n: predictions[n][i] for n in names}) for i, y in enumerate(predictions["label"])]
        rows = []
        for i, (split, label, pred) in enumerate(split_rows):
            rows.append(
                [f"img{i}.jpg", split, label] + [c for n in names for c in ([pred[n], "0.5"] if binary else [pred[n]])]
            )
        files.write_csv(run_dir / runfolder.PREDICTIONS_FILE, header, rows)
    if not finished:
        return run_dir
    if n_test is None:
        n_test = len(predictions["label"]) if predictions else 20
    auc_kw = {"auc": auc, "classes": classes}
    n = {"train": 20, "val": 20, "test": n_test}
    clfs = {"head": {s: scores(a, lo, n=n[s], **auc_kw) for s, a, lo in zip(SPLITS, head, losses, strict=True)}}
    clfs.update(
        {
            c: {
                s: scores(a, 0.2 if c == "forest" else 0.3, n=n[s], **auc_kw) for s, a in zip(SPLITS, accs, strict=True)
            }
            for c, accs in others.items()
        }
    )
    cache = (
        {"used": True, "layer": "block4_conv2", "mb": 3.1, "source": cache_source}
        if freeze != "block3_conv1" and cache_source
        else {"used": False, "reason": "train.prefix_cache.enabled is false"}
    )
    make_record(
        name,
        str(run_dir),
        cfg,
        clfs,
        share=share,
        freeze=freeze,
        epochs=epochs,
        wall=wall,
        trainable=1000 + seed,
        prefix_cache=cache,
        classes=classes,
        last_epoch=last_epoch,
        train_s=train_s,
        timings={"prefix": prefix_s, "predict": predict_s},
    ).save(run_dir)
    return run_dir


def md_table(md: str, heading: str) -> list[list[str]]:
    """The rows (header first, rule dropped) of the first Markdown table under ``## heading``."""
    section = md.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split(" | ")] for i, ln in enumerate(lines) if i != 1]


def csv_rows(path: Path) -> list[dict[str, str]]:
    return files.read_csv(path)


def from_counts(n: int, both: int, head_only: int, other_only: int, other: str = "forest") -> dict[str, list[str]]:
    """Test-split predictions with known agreement: ``both`` images right for both, then
    ``head_only`` right for the head only (b), ``other_only`` for ``other`` only (c), the rest wrong."""
    labels = ["cat", "dog"] * (n // 2)
    flip = {"cat": "dog", "dog": "cat"}
    head = [y if i < both + head_only else flip[y] for i, y in enumerate(labels)]
    right = set(range(both)) | set(range(both + head_only, both + head_only + other_only))
    return {"label": labels, "head": head, other: [y if i in right else flip[y] for i, y in enumerate(labels)]}


def section(md: str, heading: str) -> str:
    """The text of ``## heading`` in Markdown, up to the next section."""
    return md.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0].strip()


# --------------------------------------------------------------------------- find_runs


def test_find_runs_finished_unfinished_nested_and_deduplicated(tmp_path):
    sweep = tmp_path / "sweep"
    b = make_run(sweep, "b_run")
    a = make_run(sweep / "nested", "a_run")
    u = make_run(sweep, "c_unfinished", finished=False)
    (sweep / "report").mkdir()  # a folder without config.yaml is not a run
    (sweep / "report" / "summary.csv").write_text("x\n")
    finished, unfinished = find_runs([sweep, b, sweep / "nested"])
    assert finished == sorted([a.resolve(), b.resolve()])
    assert unfinished == [u.resolve()]


def test_find_runs_rejects_missing_path(tmp_path):
    with pytest.raises(UserError, match="is not a folder"):
        find_runs([tmp_path / "nope"])


# --------------------------------------------------------------------------- summary


def test_summary_rows_sorted_and_exact(tmp_path):
    p = tmp_path / "runs"
    dirs = [
        make_run(p, "z_mobile", backbone="mobilenetv2", freeze=0.1, share=0.11),
        make_run(p, "d70", backbone="densenet121", freeze=0.7, share=0.69),
        make_run(p, "r30s1", backbone="resnet50", freeze=0.3, seed=1, share=0.31),
        make_run(p, "v70", backbone="vgg16", freeze=0.7, share=0.68, head=(0.99, 0.97, 0.96), wall=12.5),
        make_run(p, "r30s0", backbone="resnet50", freeze=0.3, seed=0, share=0.31),
        make_run(p, "v10", backbone="vgg16", freeze=0.1, share=0.12),
        make_run(p, "a_eff", backbone="efficientnetb0", freeze="block3_conv1", share=0.2),
    ]
    out = tmp_path / "report"
    written = build_report(dirs, out)

    rows = csv_rows(out / "summary.csv")
    assert [r["name"] for r in rows] == ["v10", "v70", "r30s0", "r30s1", "d70", "a_eff", "z_mobile"]
    v70 = rows[1]
    assert v70["status"] == "finished"
    assert v70["backbone"] == "vgg16" and v70["seed"] == "0"
    assert float(v70["freeze_requested"]) == 0.7 and float(v70["frozen_share"]) == 0.68
    assert v70["last_frozen_layer"] == "block4_conv2" and v70["trainable_params"] == "1000"
    assert float(v70["head_train_accuracy_final_model"]) == 0.99
    assert float(v70["head_train_accuracy_last_epoch"]) == 0.8
    assert float(v70["head_val_loss"]) == 0.2 and float(v70["head_val_accuracy"]) == 0.97
    assert float(v70["head_test_loss"]) == 0.3 and float(v70["head_test_accuracy"]) == 0.96
    assert float(v70["forest_val_accuracy"]) == 0.80 and float(v70["forest_test_accuracy"]) == 0.75
    assert float(v70["head_test_f1"]) == 0.96 and float(v70["forest_test_roc_auc"]) == 0.99
    assert v70["epochs"] == "2" and float(v70["wall_time_s"]) == 12.5 and v70["device"] == "CPU (test)"
    assert float(v70["train_time_s"]) == 6.25
    assert v70["run_dir"] == "../runs/v70" and v70["error"] == ""
    assert rows[5]["freeze_requested"] == "block3_conv1"
    assert v70["cached_prefix"] == "block4_conv2"
    assert rows[5]["cached_prefix"] == "no: train.prefix_cache.enabled is false"

    md = (out / "summary.md").read_text()
    table = md_table(md, "Results")
    assert table[0] == [
        "run",
        "backbone",
        "frozen (asked)",
        "frozen (achieved)",
        "seed",
        "train acc (last epoch)",
        "train acc (final model)",
        "val loss",
        "val acc",
        "test acc",
        "forest test acc",
    ]
    assert table[2] == [
        "v70",
        "vgg16",
        "70 %",
        "68.0 %",
        "0",
        "0.8000",
        "0.9900",
        "0.2000",
        "0.9700",
        "0.9600",
        "0.7500",
    ]
    assert table[6][2] == "through block3_conv1"
    # resnet50 at 30 % ran with two seeds: a means table, one row per setting, in the same order.
    means = md_table(md, "Mean ± std over seeds")
    assert [(r[0], r[1], r[3]) for r in means[1:]] == [
        ("vgg16", "10 %", "0"),
        ("vgg16", "70 %", "0"),
        ("resnet50", "30 %", "0 1"),
        ("densenet121", "70 %", "0"),
        ("efficientnetb0", "through block3_conv1", "0"),
        ("mobilenetv2", "10 %", "0"),
    ]
    assert set(written) == {
        "summary.csv",
        "summary_by_setting.csv",
        "summary.md",
        "accuracy_vs_frozen.png",
        "time_vs_frozen.png",
        "accuracy_vs_minutes.png",
        "report.html",
    }  # no paired.csv: no predictions.csv
    assert all(path.is_file() and path.parent == out for path in written.values())
    assert "v70: no predictions.csv, so its classifiers were not compared." in md


def test_mean_and_std_over_seeds(tmp_path):
    p = tmp_path / "runs"
    dirs = [
        make_run(
            p,
            f"v30s{s}",
            seed=s,
            head=(0.9, 0.8, acc),
            others={"forest": (1, 0.7, rf), "logreg": (1, 0.5, 0.6)},
            wall=w,
        )
        for s, acc, rf, w in [(0, 0.80, 0.70, 10.0), (1, 0.85, 0.75, 20.0), (2, 0.90, 0.80, 30.0)]
    ]
    dirs.append(make_run(p, "v70s0", freeze=0.7, share=0.7, head=(0.9, 0.8, 0.5)))  # its own setting, one seed
    # Same backbone and freeze but another learning rate: another setting, told apart by a column.
    dirs.append(make_run(p, "v30lr", config={"train.learning_rate": 0.1}, head=(0.9, 0.8, 0.4)))
    out = tmp_path / "rep"
    written = build_report(dirs, out)
    assert "summary_by_setting.csv" in written

    rows = csv_rows(out / "summary_by_setting.csv")
    assert len(rows) == 3
    three = next(r for r in rows if r["n_runs"] == "3")
    assert three["seeds"] == "0 1 2" and three["runs"] == "v30s0 v30s1 v30s2"
    assert float(three["head_test_accuracy_mean"]) == pytest.approx(0.85)
    assert float(three["head_test_accuracy_std"]) == pytest.approx(0.05)  # sample std of .80 .85 .90
    assert float(three["forest_test_accuracy_mean"]) == pytest.approx(0.75)
    assert float(three["logreg_test_accuracy_std"]) == pytest.approx(0.0)
    assert float(three["wall_time_s_mean"]) == pytest.approx(20.0)
    assert float(three["wall_time_s_std"]) == pytest.approx(10.0)
    assert three["setting"] == "train.learning_rate=0.001"
    single = next(r for r in rows if r["runs"] == "v70s0")
    assert float(single["head_test_accuracy_mean"]) == 0.5 and single["head_test_accuracy_std"] == ""

    table = md_table((out / "summary.md").read_text(), "Mean ± std over seeds")
    assert table[0][:5] == ["backbone", "frozen (asked)", "frozen (achieved)", "setting", "seeds"]
    row = next(r for r in table if r[4] == "0 1 2")
    assert row[:4] == ["vgg16", "30 %", "36.0 %", "train.learning_rate=0.001"]
    assert row[table[0].index("test acc")] == "0.8500 ± 0.0500"
    assert row[table[0].index("forest test acc")] == "0.7500 ± 0.0500"
    assert row[table[0].index("time (s)")] == "20.0 ± 10.0"


def test_paired_mcnemar_from_predictions(tmp_path):
    # 20 test images: head right on 0-15, forest right on 0-9 and 16-17.
    # b (head right, forest wrong) = 6 (10-15); c (head wrong, forest right) = 2 (16, 17).
    labels = ["cat", "dog"] * 10
    flip = {"cat": "dog", "dog": "cat"}
    head = [y if i < 16 else flip[y] for i, y in enumerate(labels)]
    forest = [y if i < 10 or i in (16, 17) else flip[y] for i, y in enumerate(labels)]
    run = make_run(
        tmp_path / "runs",
        "one",
        head=(1.0, 1.0, 0.8),
        others={"forest": (1, 1, 0.6)},
        predictions={"label": labels, "head": head, "forest": forest},
    )
    build_report([run], tmp_path / "rep")
    (row,) = csv_rows(tmp_path / "rep" / "paired.csv")
    assert (row["run"], row["classifier_a"], row["classifier_b"], row["split"]) == ("one", "head", "forest", "test")
    assert (row["n"], row["b"], row["c"]) == ("20", "6", "2")
    # z = (c - b) / sqrt(b + c) = -4 / sqrt(8); p = erfc(|z| / sqrt(2)) = erfc(1) = 0.1573
    assert float(row["z"]) == pytest.approx(-4 / math.sqrt(8))
    assert float(row["p_value"]) == pytest.approx(math.erfc(1.0))
    assert float(row["p_holm"]) == float(row["p_value"])  # a family of one
    assert float(row["accuracy_a"]) == 0.8 and float(row["accuracy_b"]) == 0.6
    assert float(row["diff"]) == pytest.approx(-0.2)
    assert float(row["diff_low"]) < -0.2 < float(row["diff_high"]) and float(row["diff_high"]) > 0
    assert (row["test"], row["interval"]) == (
        "McNemar score test (asymptotic, no continuity correction)",
        "Tango score interval",
    )
    assert row["reading"] == "no significant difference (p=0.16)"
    table = md_table((tmp_path / "rep" / "summary.md").read_text(), "Head vs other classifiers")
    assert table[0][:7] == ["run", "head vs", "n", "b", "c", "p", "Holm p"]
    assert table[1][:7] == ["one", "forest", "20", "6", "2", "0.16", "0.16"]
    assert table[1][7] == "-0.2000 [-0.4570, +0.0858]"


def test_paired_significant_reading(tmp_path):
    labels = ["a", "b"] * 20
    head = ["a"] * 40  # right on the 20 "a" images only
    logreg = list(labels)  # right on all 40: b=0, c=20, z = sqrt(20)
    run = make_run(
        tmp_path / "r",
        "x",
        classes=("a", "b"),
        others={"logreg": (1, 1, 1)},
        predictions={"label": labels, "head": head, "logreg": logreg},
    )
    build_report([run], tmp_path / "rep")
    (row,) = csv_rows(tmp_path / "rep" / "paired.csv")
    assert (row["b"], row["c"]) == ("0", "20")
    assert float(row["p_value"]) == pytest.approx(math.erfc(math.sqrt(10)))
    assert row["reading"] == "logreg better, p<0.001, survives Holm (p<0.001)"


def test_failed_and_unfinished_rows(tmp_path):
    p = tmp_path / "runs"
    dirs = [make_run(p, f"v30s{s}", seed=s, head=(0.9, 0.8, 0.8 + 0.1 * s)) for s in (0, 1)]
    unfinished = make_run(p, "v70s0", freeze=0.7, finished=False)
    failed = [
        {
            "name": "resnet50_f30_s0",
            "error": "ResourceExhaustedError: OOM when allocating\nTraceback ...",
            "overrides": {"model.backbone": "resnet50", "model.freeze": 0.3, "seed": 0},
        }
    ]
    out = tmp_path / "rep"
    build_report([*dirs, unfinished], out, failed=failed)

    rows = {r["name"]: r for r in csv_rows(out / "summary.csv")}
    assert [r for r in rows] == ["v30s0", "v30s1", "v70s0", "resnet50_f30_s0"]
    bad = rows["resnet50_f30_s0"]
    assert (bad["status"], bad["backbone"], bad["seed"], bad["freeze_requested"]) == ("failed", "resnet50", "0", "0.3")
    assert bad["error"] == "ResourceExhaustedError: OOM when allocating"
    assert bad["head_test_accuracy"] == "" and bad["run_dir"] == ""
    assert rows["v70s0"]["status"] == "unfinished" and rows["v70s0"]["head_test_accuracy"] == ""
    assert "metrics.json" in rows["v70s0"]["error"]

    # Not averaged: the by-setting table holds only the two finished seeds.
    (setting,) = csv_rows(out / "summary_by_setting.csv")
    assert setting["runs"] == "v30s0 v30s1"
    assert float(setting["head_test_accuracy_mean"]) == pytest.approx(0.85)

    md = (out / "summary.md").read_text()
    results = md_table(md, "Results")
    assert results[0][-1] == "status" and results[-1][-1] == "failed"
    problems = md_table(md, "Failed and unfinished runs")
    assert problems[1] == ["v70s0", "vgg16", "70 %", "0", "unfinished", problems[1][-1]]
    assert problems[2] == [
        "resnet50_f30_s0",
        "resnet50",
        "30 %",
        "0",
        "failed",
        "ResourceExhaustedError: OOM when allocating",
    ]


def test_multiclass_run(tmp_path):
    classes = ("bird", "cat", "dog")
    labels = ["bird", "cat", "dog"] * 4
    run = make_run(
        tmp_path / "r",
        "three",
        classes=classes,
        auc=None,
        others={"forest": (1, 1, 8 / 12)},
        predictions={
            "label": labels,
            "head": labels,
            "forest": ["bird"] * 3 + labels[3:6] + ["cat", "cat", "cat"] + labels[9:],
        },
    )
    header = (run / "predictions.csv").read_text().splitlines()[0]
    assert header == "path,split,label,head,forest"  # no _p1 columns with three classes
    out = tmp_path / "rep"
    build_report([run], out)
    (row,) = csv_rows(out / "summary.csv")
    assert row["head_test_roc_auc"] == "" and row["forest_test_roc_auc"] == ""
    (pair,) = csv_rows(out / "paired.csv")
    # forest is wrong on cat, dog of the first triple and bird, dog of the third; head never.
    assert (pair["b"], pair["c"], pair["n"]) == ("4", "0", "12")


def test_single_run_without_classifiers_and_stale_files(tmp_path):
    out = tmp_path / "rep"
    out.mkdir()
    (out / "paired.csv").write_text("stale\n")
    (out / "summary_by_setting.csv").write_text("stale\n")
    (out / "notes.txt").write_text("mine\n")
    run = make_run(tmp_path / "r", "solo", others={})
    written = build_report([run], out, title="Solo <run>")
    assert not (out / "paired.csv").exists() and not (out / "summary_by_setting.csv").exists()
    assert (out / "notes.txt").read_text() == "mine\n"  # files of other names are left alone
    header = (out / "summary.csv").read_text().splitlines()[0].split(",")
    assert [c for c in header if c.startswith("forest")] == []
    assert header[-10:] == [
        "head_test_accuracy",
        "head_test_f1",
        "head_test_roc_auc",
        "epochs",
        "train_time_s",
        "wall_time_s",
        "cached_prefix",
        "device",
        "run_dir",
        "error",
    ]
    md = (out / "summary.md").read_text()
    assert md.startswith("# Solo <run>\n") and "Head vs other" not in md
    assert "Solo &lt;run&gt;" in (out / "report.html").read_text()
    assert sorted(written) == sorted(
        [
            "summary.csv",
            "summary.md",
            "accuracy_vs_frozen.png",
            "time_vs_frozen.png",
            "accuracy_vs_minutes.png",
            "report.html",
        ]
    )


def test_report_with_only_failed_runs(tmp_path):
    out = tmp_path / "rep"
    written = build_report([], out, failed=[{"name": "x", "error": "boom", "overrides": {}}])
    assert sorted(written) == ["report.html", "summary.csv", "summary.md"]
    (row,) = csv_rows(out / "summary.csv")
    assert (row["name"], row["status"], row["error"]) == ("x", "failed", "boom")


def test_markdown_escapes_pipes(tmp_path):
    out = tmp_path / "rep"
    build_report([], out, failed=[{"name": "x", "error": "a | b", "overrides": {"seed": 1}}])
    md = (out / "summary.md").read_text()
    assert "a \\| b" in md


@pytest.mark.slow
def test_report_has_no_tensorflow_import():
    import subprocess
    import sys

    code = (
        "import sys, tlexp.results._report, tlexp.results._stats, tlexp.results._plots; "
        "sys.exit(1 if any(m.split('.')[0] in ('tensorflow', 'keras') for m in sys.modules) else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_first_layout_metrics_without_predictions(tmp_path):
    """A folder of the first tlexp (metrics.json without a version, forest at the top
    level, no predictions.csv) is read through the migration, not misread."""
    run = make_run(tmp_path / "r", "demo2", others={"forest": (1.0, 0.80, 0.75), "logreg": (0.9, 0.7, 0.65)})
    (run / "metrics.json").write_text(json.dumps(first_layout(json.loads((run / "metrics.json").read_text()))))
    build_report([run], tmp_path / "rep")
    (row,) = csv_rows(tmp_path / "rep" / "summary.csv")
    assert math.isclose(float(row["forest_test_accuracy"]), 0.75)
    assert math.isclose(float(row["logreg_test_accuracy"]), 0.65)
    assert math.isclose(float(row["head_test_accuracy"]), 0.85)
    assert yaml.safe_load((run / "config.yaml").read_text())["name"] == "demo2"


def test_failed_entry_with_resolved_config(tmp_path):
    """A sweep that did not vary the backbone can pass the cell's config to show it anyway."""
    out = tmp_path / "rep"
    failed = [
        {
            "name": "f30_s2",
            "error": "boom",
            "overrides": {"model.freeze": 0.3, "seed": 2},
            "config": {"seed": 0, "model": {"backbone": "densenet121", "freeze": 0.1}},
        }
    ]
    build_report([], out, failed=failed)
    (row,) = csv_rows(out / "summary.csv")
    # The overrides win over the base values in the config.
    assert (row["backbone"], row["freeze_requested"], row["seed"]) == ("densenet121", "0.3", "2")
    assert "resolved config" in (out / "report.html").read_text()


# --------------------------------------------------------------------------- the two sweep charts


@pytest.mark.parametrize(
    "n_backbones, n_classifiers, size", [(1, 2, (500, 400)), (3, 3, (1500, 400)), (4, 4, (1000, 850))]
)
def test_accuracy_chart_layouts(tmp_path, n_backbones, n_classifiers, size):
    from PIL import Image

    from tlexp.results import Curve, plot_accuracy_vs_frozen

    names = ["vgg16", "resnet50", "densenet121", "mobilenetv2"][:n_backbones]
    clfs = ["head", "forest", "logreg", "svc"][:n_classifiers]
    curves = [
        Curve(b, c, [(s, 0.9 + 0.01 * k, 0.89 + 0.01 * k, 0.92 + 0.01 * k) for k, s in enumerate((0.1, 0.3, 0.5))], i)
        for b in names
        for i, c in enumerate(clfs)
    ]
    path = plot_accuracy_vs_frozen(curves, tmp_path / "acc.png", note="mean of 2 seeds per point")
    with Image.open(path) as im:
        assert im.size[0] >= size[0] and im.size[1] >= size[1]
    assert [p.name for p in tmp_path.iterdir()] == ["acc.png"]  # no temp file left


def capture_figures(monkeypatch) -> list:
    """The figures of tlexp.results._plots as they are saved, to read back what was drawn."""
    from tlexp.results._plots import save_figure

    figures = []
    monkeypatch.setattr(
        "tlexp.results._plots.save_figure", lambda fig, path: figures.append(fig) or save_figure(fig, path)
    )
    return figures


def test_time_chart_and_empty_input(tmp_path, monkeypatch):
    import numpy as np

    from tlexp.results import Curve, plot_accuracy_vs_frozen, plot_time_vs_frozen

    figures = capture_figures(monkeypatch)
    curves = [Curve("", "vgg16", [(0.36, 12.0, 10.0, 14.0), (0.5, 20.0, None, None)]), Curve("", "resnet50", [], 1)]
    curves.append(Curve("", "resnet50", [(0.3, 30.0, None, None)], 1))
    out = plot_time_vs_frozen(curves, tmp_path / "t.png", note="mean of 2 seeds where several ran")
    assert out == tmp_path / "t.png" and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (ax,) = figures[0].axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["vgg16", "resnet50"]
    assert ax.get_title() == "Wall time per run vs frozen share\nmean of 2 seeds where several ran"
    line, _, (bars,) = ax.containers[0]  # vgg16: the means, one error bar per share
    assert line.get_xdata() == pytest.approx([36, 50]) and line.get_ydata() == pytest.approx([12, 20])
    assert np.asarray(bars.get_segments()[0])[:, 1] == pytest.approx([10, 14])
    assert np.asarray(bars.get_segments()[1])[:, 1] == pytest.approx([20, 20])  # no interval: no bar
    assert ax.get_ylim()[0] == 0  # from zero: heights compare as ratios
    with pytest.raises(ValueError, match="at least one"):
        plot_time_vs_frozen([Curve("", "vgg16", [])], tmp_path / "x.png")
    with pytest.raises(ValueError, match="at least one"):
        plot_accuracy_vs_frozen([Curve("vgg16", "head", [])], tmp_path / "x.png")


# --------------------------------------------------------------------------- valid science


def test_both_train_accuracies_are_reported_and_labelled(tmp_path):
    """The study quotes Keras' running train accuracy of the last epoch; the evaluation pass
    of the final model over the training set is another number (demo: 0.932 vs 0.959)."""
    p = tmp_path / "runs"
    dirs = [make_run(p, f"v30s{s}", seed=s, head=(0.959, 0.9, 0.9), last_epoch=0.932 - 0.01 * s) for s in (0, 1)]
    out = tmp_path / "rep"
    build_report(dirs, out)

    first = csv_rows(out / "summary.csv")[0]
    assert float(first["head_train_accuracy_last_epoch"]) == 0.932
    assert float(first["head_train_accuracy_final_model"]) == 0.959
    (setting,) = csv_rows(out / "summary_by_setting.csv")
    assert float(setting["head_train_accuracy_last_epoch_mean"]) == pytest.approx(0.927)
    assert float(setting["head_train_accuracy_final_model_mean"]) == pytest.approx(0.959)

    md = (out / "summary.md").read_text()
    results = md_table(md, "Results")
    row = dict(zip(results[0], results[1], strict=True))
    assert (row["train acc (last epoch)"], row["train acc (final model)"]) == ("0.9320", "0.9590")
    means = md_table(md, "Mean ± std over seeds")
    row = dict(zip(means[0], means[1], strict=True))
    assert row["train acc (last epoch)"] == "0.9270 ± 0.0071" and row["train acc (final model)"] == "0.9590 ± 0.0000"
    assert "Keras' running mean over the last training epoch" in section(md, "Results")
    assert "one pass of the finished model over the training images" in section(md, "Results")
    html = (out / "report.html").read_text()
    assert html.count(">train acc (last epoch)</th>") == 2 and html.count(">train acc (final model)</th>") == 2


@pytest.mark.parametrize(
    "key, default, other",
    [("data.image_size", 32, 64), ("train.epochs", 2, 5), ("train.learning_rate", 0.001, 0.1)],
)
@pytest.mark.slow
def test_charts_never_pool_different_settings(tmp_path, monkeypatch, key, default, other):
    """Two runs that differ in one key are two lines, labelled with what differs, never one mean."""
    figures = capture_figures(monkeypatch)
    p = tmp_path / "runs"
    dirs = [make_run(p, f"v30s{s}", seed=s, head=(1, 1, acc), others={}) for s, acc in ((0, 0.8), (1, 0.9))]
    dirs.append(make_run(p, "v30x", head=(1, 1, 0.4), others={}, config={key: other}, wall=50.0))
    out = tmp_path / "rep"
    build_report(dirs, out)

    acc, time, _ = figures
    lines = {c.get_label(): c.lines[0].get_ydata().tolist() for c in acc.axes[0].containers}
    assert lines == {f"head, {key}={default}": [pytest.approx(0.85)], f"head, {key}={other}": [pytest.approx(0.4)]}
    legend = [t.get_text() for t in acc.legends[0].get_texts()]
    assert sorted(legend) == sorted(lines)
    times = {c.get_label(): c.lines[0].get_ydata().tolist() for c in time.axes[0].containers}
    assert times == {f"vgg16, {key}={default}": [10.0], f"vgg16, {key}={other}": [50.0]}
    # The title says how many seeds each point is, and what the bars are; the caption says the same.
    note = (
        "mean of 2 seeds where several ran (bars: lowest to highest seed); one seed elsewhere "
        "(bars: 95 % Wilson interval of the test accuracy (n = 20 test images))"
    )
    assert acc._suptitle.get_text().replace("\n", " ") == f"Test accuracy vs frozen share {note}"
    html = (out / "report.html").read_text()
    assert f"one line per classifier and setting; {note}.</figcaption>" in html


def test_accuracy_points_carry_their_intervals(tmp_path, monkeypatch):
    """One seed: the 95 % Wilson interval of the test accuracy (k of n test images);
    several seeds: the mean, with a bar from the lowest to the highest seed."""
    figures = capture_figures(monkeypatch)
    p = tmp_path / "runs"
    dirs = [make_run(p, "v10", freeze=0.1, share=0.1, head=(1, 1, 0.85), others={}, n_test=200)]
    dirs += [
        make_run(p, f"v50s{s}", freeze=0.5, share=0.5, seed=s, head=(1, 1, acc), others={}, n_test=200)
        for s, acc in ((0, 0.80), (1, 0.86), (2, 0.90))
    ]
    out = tmp_path / "rep"
    build_report(dirs, out)

    (container,) = figures[0].axes[0].containers
    line, _, (bars,) = container
    assert line.get_xdata() == pytest.approx([10, 50]) and line.get_ydata() == pytest.approx([0.85, 2.56 / 3])
    single, several = (np.asarray(seg)[:, 1] for seg in bars.get_segments())
    # Wilson: the p with |170 - 200 p| = z sqrt(200 p (1 - p)); 0.7939 and 0.8929.
    z = 1.959963984540054
    for bound in single:
        assert abs(170 - 200 * bound) == pytest.approx(z * math.sqrt(200 * bound * (1 - bound)))
    assert single == pytest.approx([0.7939, 0.8929], abs=5e-5)
    assert several == pytest.approx([0.80, 0.90])
    caption = figures[0]._suptitle.get_text().replace("\n", " ")
    assert "mean of 3 seeds where several ran (bars: lowest to highest seed)" in caption
    assert "one seed elsewhere (bars: 95 % Wilson interval of the test accuracy (n = 200 test images))" in caption


def test_holm_correction_beside_the_raw_p_values(tmp_path):
    """Three head-vs-forest tests: p = 0.0047, 0.035, 0.67; Holm: 3 * 0.0047, max(2 * 0.035, .),
    max(0.67, .). Only the first difference survives; the second was 'significant' alone."""
    p = tmp_path / "runs"
    counts = {"f10": (0, 8), "f30": (2, 9), "f70": (10, 12)}  # (b, c) of 200 test images
    dirs = [
        make_run(p, name, freeze=int(name[1:]) / 100, predictions=from_counts(200, 150, b, c))
        for name, (b, c) in counts.items()
    ]
    out = tmp_path / "rep"
    build_report(dirs, out)

    # McNemar's score test: z = (c - b) / sqrt(b + c), p = erfc(|z| / sqrt(2)).
    raw = {name: math.erfc(abs(c - b) / math.sqrt(2 * (b + c))) for name, (b, c) in counts.items()}
    assert [round(v, 4) for v in raw.values()] == [0.0047, 0.0348, 0.6698]
    holm = {"f10": 3 * raw["f10"], "f30": 2 * raw["f30"], "f70": raw["f70"]}
    rows = {r["run"]: r for r in csv_rows(out / "paired.csv")}
    for name in counts:
        assert float(rows[name]["p_value"]) == pytest.approx(raw[name])
        assert float(rows[name]["p_holm"]) == pytest.approx(holm[name])
    assert rows["f10"]["reading"] == "forest better, p=0.0047, survives Holm (p=0.014)"
    assert rows["f30"]["reading"] == "forest ahead at p=0.035, but not after Holm's correction (p=0.07)"
    assert rows["f70"]["reading"] == "no significant difference (p=0.67)"

    md = (out / "summary.md").read_text()
    table = md_table(md, "Head vs other classifiers")
    assert [(r[0], r[5], r[6]) for r in table[1:]] == [("f10", "0.0047", "0.014"), ("f30", "0.035", "0.07")] + [
        ("f70", "0.67", "0.67")
    ]
    assert "1 of 3 difference(s) survive it: f10 forest better." in section(md, "Head vs other classifiers")
    assert (
        "- head vs forest: 1 of 3 difference(s) survive Holm's correction: forest better in f10 "
        "(Δ = +0.0400 [+0.0204, +0.0769], Holm p = 0.014). In the other 2 run(s), the data cannot separate "
        "them at this level (f30 had p < 0.05 before the correction)."
    ) in section(md, "The answer")


def test_paired_interval_agrees_with_its_test(tmp_path):
    """n = 200, b = 0, c = 5: an exact McNemar p of 0.0625 sat beside a bootstrap interval
    that excluded 0. Now p < 0.05 exactly when the interval excludes 0, and the report says
    which test and which interval it uses."""
    run = make_run(tmp_path / "runs", "x", predictions=from_counts(200, 180, 0, 5))
    out = tmp_path / "rep"
    build_report([run], out)
    (row,) = csv_rows(out / "paired.csv")
    p, low, high = float(row["p_value"]), float(row["diff_low"]), float(row["diff_high"])
    assert (p < 0.05) == (low > 0 or high < 0)
    assert round(p, 4) == 0.0253 and (round(low, 4), round(high, 4)) == (0.0057, 0.0572)
    assert (row["test"], row["interval"]) == (
        "McNemar score test (asymptotic, no continuity correction)",
        "Tango score interval",
    )
    intro = section((out / "summary.md").read_text(), "Head vs other classifiers")
    assert "p: McNemar's score test, z = (c − b) / √(b + c) (asymptotic, no continuity correction)." in intro
    assert "Tango's 95 % score interval, which inverts the same statistic: p < 0.05 exactly when" in intro


@pytest.mark.parametrize(
    "p, text",
    [
        (0.0495, "0.0495"),  # two digits said "0.05": not below α, read as not significant
        (0.0504, "0.0504"),  # two digits said "0.05": read as α itself
        (0.031, "0.031"),
        (0.0451, "0.0451"),
        (0.0449, "0.045"),  # two digits already on the right side, and not α
        (0.05, "0.05"),
        (0.0024, "0.0024"),
        (0.41, "0.41"),
        (1.0, "1.00"),
        (0.0009, "<0.001"),
        (0.0499999999, "<0.05"),
        (0.0500000001, ">0.05"),
    ],
)
def test_p_values_print_on_their_side_of_alpha(p, text):
    from tlexp.results import fmt_p

    assert fmt_p(p, 0.05) == text


def test_no_printed_p_value_lands_on_alpha_or_across_it():
    from tlexp.results import fmt_p

    grid = np.concatenate([np.linspace(0.001, 0.2, 4001), 0.05 + np.linspace(-1e-4, 1e-4, 2001)])
    crossed = []
    for p in grid:
        text = fmt_p(float(p), 0.05)
        below = text.startswith("<") or (text[0] != ">" and float(text) < 0.05)
        if below != (p < 0.05) or (text[0] not in "<>" and float(text) == 0.05 and p != 0.05):
            crossed.append((float(p), text))
    assert crossed == []


def test_reading_near_alpha():
    """Issue #23: a p of 0.0495 printed as "p=0.05, survives Holm (p=0.05)"."""
    from tlexp.results._paired import reading

    assert reading(0.0495, 0.0495, "forest") == "forest better, p=0.0495, survives Holm (p=0.0495)"
    assert reading(0.0495, 0.0504, "forest") == "forest ahead at p=0.0495, but not after Holm's correction (p=0.0504)"


# The study's answer, for a sweep of three backbones (one seed, 200 test images each):
# (backbone, freeze, achieved share, images both right, head only, forest only).
ANSWER_SWEEP = [
    ("vgg16", 0.1, 0.12, 180, 8, 2),
    ("vgg16", 0.3, 0.36, 178, 8, 6),
    ("vgg16", 0.7, 0.68, 170, 4, 14),
    ("resnet50", 0.3, 0.31, 160, 20, 5),
    ("resnet50", 0.7, 0.70, 150, 10, 12),
    ("densenet121", 0.5, 0.52, 170, 6, 6),
]


def answer_sweep(root: Path) -> list[Path]:
    return [
        make_run(
            root,
            f"{backbone}_f{round(100 * freeze)}_s0",
            backbone=backbone,
            freeze=freeze,
            share=share,
            head=(0.99, 0.95, (both + head_only) / 200),
            others={"forest": (1.0, 0.9, (both + forest_only) / 200)},
            predictions=from_counts(200, both, head_only, forest_only),
            train_s=120 * (1 - freeze) + 30,
            prefix_s=12.0,
            predict_s=6.0,
            wall=150.0,
        )
        for backbone, freeze, share, both, head_only, forest_only in ANSWER_SWEEP
    ]


def test_the_answer_comes_first(tmp_path):
    out = tmp_path / "rep"
    build_report(answer_sweep(tmp_path / "runs"), out)
    md = (out / "summary.md").read_text()
    assert [ln[3:] for ln in md.splitlines() if ln.startswith("## ")] == [
        "The answer",
        "Results",
        "Head vs other classifiers",
    ]
    lines = section(md, "The answer").splitlines()
    assert "Student's paired t-test of the per-seed accuracy differences" in lines[0]
    assert "a single comparison of a pair chosen after ranking, not corrected" in lines[0]
    # The head's sets of right images are nested (from_counts): vgg16 10 % is right on images
    # 0-187, 30 % on 0-185, so b = 0, c = 2: z = sqrt(2), p = erfc(1) = 0.157.
    assert lines[2:5] == [
        "Best setting per classifier (test accuracy):",
        "- head: vgg16, 10 % frozen, 0.9400 [0.8981, 0.9653] (1 seed, 95 % Wilson interval over 200 test "
        "images); runner-up vgg16, 30 % frozen (0.9300): lead +0.0100 [-0.0090, +0.0357], McNemar p = 0.16 on "
        "the same 200 test images (only the leader right on 2, only the runner-up on 0): the data cannot "
        "separate them.",
        "- forest: vgg16, 30 % frozen, 0.9200 [0.8740, 0.9502] (1 seed, 95 % Wilson interval over 200 test "
        "images); runner-up vgg16, 70 % frozen (0.9200): lead +0.0000 [-0.0428, +0.0428], McNemar p = 1.00 on "
        "the same 200 test images (only the leader right on 8, only the runner-up on 8): the data cannot "
        "separate them.",
    ]
    assert lines[6:10] == [
        "Best freeze share per backbone (head test accuracy):",
        "- vgg16: 10 % frozen did best, 0.9400 [0.8981, 0.9653] (1 seed, 95 % Wilson interval over 200 test "
        "images); runner-up 30 % frozen (0.9300): lead +0.0100 [-0.0090, +0.0357], McNemar p = 0.16 on the same "
        "200 test images (only the leader right on 2, only the runner-up on 0): the data cannot separate them.",
        "- resnet50: 30 % frozen did best, 0.9000 [0.8506, 0.9343] (1 seed, 95 % Wilson interval over 200 test "
        "images); runner-up 70 % frozen (0.8000): lead +0.1000 [+0.0657, +0.1494], McNemar p < 0.001 on the same "
        "200 test images (only the leader right on 20, only the runner-up on 0): the leader is better.",
        "- densenet121: only 50 % frozen was run, 0.8800 [0.8277, 0.9180]: nothing to compare.",
    ]
    assert lines[11:13] == [
        "Head vs the other classifiers, same test images (McNemar's score test, Holm's correction, α = 0.05). "
        "Holm's family is every head-vs-other comparison in this report: 6, one per run and classifier (6 run(s) "
        "with predictions.csv; head vs forest). A report over more or fewer runs has another family, and so "
        "other Holm p-values. The answer's leader-vs-runner-up tests are not in it.",
        "- head vs forest: 1 of 6 difference(s) survive Holm's correction: head better in resnet50_f30_s0 "
        "(Δ = -0.0750 [-0.1282, -0.0282], Holm p = 0.016). In the other 5 run(s), the data cannot separate "
        "them at this level (vgg16_f70_s0 had p < 0.05 before the correction).",
    ]
    # Minutes: prefix 12 s + train 120 (1 - freeze) + 30 s + predict 6 s; 10 % frozen: 156 s = 2.60 min.
    assert lines[14].startswith(
        "Cost of the head's test accuracy, per setting (means over seeds): minutes of compute = the prefix, "
        "train and predict phases"
    )
    assert lines[14].endswith(
        "Cache: cold = the run built the activation cache, its build counted. The majority-class baseline "
        "(always predicting the largest test class, 100 of 200 images) scores 0.5000. Most accurate first:"
    )
    assert lines[15:21] == [
        "- vgg16, 10 % frozen: 0.9400 in 2.60 min (cold); on the Pareto frontier",
        "- vgg16, 30 % frozen: 0.9300 in 2.20 min (cold); on the Pareto frontier",
        "- resnet50, 30 % frozen: 0.9000 in 2.20 min (cold)",
        "- densenet121, 50 % frozen: 0.8800 in 1.80 min (cold); on the Pareto frontier",
        "- vgg16, 70 % frozen: 0.8700 in 1.40 min (cold); on the Pareto frontier",
        "- resnet50, 70 % frozen: 0.8000 in 1.40 min (cold)",
    ]
    # The most accurate (vgg16 10 %) is not better than vgg16 30 % by the paired test: the cheaper
    # one is recommended; the two cheaper frontier settings are worse by the same test.
    assert lines[22:] == [
        "Pareto frontier (no other setting is as accurate or more in as few minutes or fewer, and better in "
        "one), cheapest first: vgg16, 70 % frozen (0.8700 in 1.40 min); densenet121, 50 % frozen (0.8800 in "
        "1.80 min); vgg16, 30 % frozen (0.9300 in 2.20 min); vgg16, 10 % frozen (0.9400 in 2.60 min). "
        "Recommendation: vgg16, 30 % frozen (0.9300 in 2.20 min), 15 % fewer minutes than the most accurate, "
        "vgg16, 10 % frozen (0.9400 in 2.60 min), which the paired test does not find better: lead +0.0100 "
        "[-0.0090, +0.0357], McNemar p = 0.16 on the same 200 test images (only the most accurate right on 2, "
        "only the cheaper on 0): the data cannot separate them. Cheaper settings on the frontier were worse or "
        "not compared: vgg16, 70 % frozen: lead +0.0700 [+0.0422, +0.1141], McNemar p < 0.001 on the same 200 "
        "test images (only the most accurate right on 14, only the cheaper on 0): the most accurate is better; "
        "densenet121, 50 % frozen: lead +0.0600 [+0.0347, +0.1019], McNemar p < 0.001 on the same 200 test "
        "images (only the most accurate right on 12, only the cheaper on 0): the most accurate is better."
    ]
    html = (out / "report.html").read_text()
    first = html.index("<h2>")
    assert html[first:].startswith("<h2>The answer</h2>")
    assert "<li>head vs forest: 1 of 6 difference(s) survive Holm&#x27;s correction" in html


def test_the_answer_without_finished_runs(tmp_path):
    out = tmp_path / "rep"
    build_report([], out, failed=[{"name": "x", "error": "boom", "overrides": {}}])
    assert section((out / "summary.md").read_text(), "The answer") == "No finished runs: nothing to answer yet."


def test_the_docs_state_the_statistics():
    """The docs' statistics page names the test, the intervals and the correction, with references."""
    page = Path(__file__).resolve().parents[1] / "docs" / "concepts" / "statistics.md"
    text = " ".join(page.read_text(encoding="utf-8").split())  # lines unwrapped
    for needed in (
        "McNemar",
        "Tango",
        "Tango, T. (1998)",
        "Wilson, E. B. (1927)",
        "Holm, S. (1979)",
        "Fagerland",
        "p < 0.05 exactly when the 95 % interval excludes 0",
        "lowest to the highest seed",
        "-0.1240 to -0.0054",
        # the answer's tests (issue #23)
        "Student (1908)",
        "Student's paired t-test of the per-seed accuracy differences",
        "matched by path in the two runs' `predictions.csv`",
        '"the data cannot separate them" appears exactly when p ≥ 0.05',
        "b = 10, c = 0 gives p = 0.0016",
        "not corrected for the ranking and not part of Holm's family",
        "A report over more or fewer runs has another family",
        "`prefix` + `train` + `predict` phases",
        "*cold*",
        "*warm*",
        "majority-class baseline",
        "Pareto frontier",
        "does not find the most accurate one better (p ≥ 0.05)",
        "(0.0495, 0.0504)",
    ):
        assert needed in text, needed
