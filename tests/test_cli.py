"""The tlexp command, end to end, through a real subprocess (in this process where the
command's process is not what a test checks: one of its own would only import TensorFlow again)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from tlexp.results import load_record

from conftest import COLORS, tiny_config_file, tlexp_here, write_image

RUN_FILES = {
    "config.yaml",
    "split.csv",
    "skipped.csv",
    "rejected.csv",
    "duplicates.csv",
    "near_duplicates.csv",
    "history.csv",
    "predictions.csv",
    "metrics.json",
    "run.log",
    "curves.png",
    "confusion.png",
    "roc.png",
    "model.keras",
    "forest.joblib",
    "logreg.joblib",
}


def tlexp(*args: str, cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tlexp", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def tiny_config(tmp_path: Path, root: Path) -> Path:
    """The shared tiny experiment, two epochs of a 16-unit head at freeze 0.5, seed 3."""
    return tiny_config_file(
        tmp_path,
        root,
        seed=3,
        model={"freeze": 0.5, "head": {"dense": [16]}},
        train={"epochs": 2},
        forest={"n_estimators": 10},
    )


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir())}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> tuple[Path, Path, dict[str, bytes], Path, subprocess.CompletedProcess]:
    """``tlexp run`` on the flat layout's 24 images plus three bad files, once for the
    module: test_run_end_to_end checks the run, test_predict_with_a_saved_run predicts
    with its saved model. Returns (its cwd, the data, the data's bytes before, config, process)."""
    base = tmp_path_factory.mktemp("cli-run")
    data = base / "train"
    for cls in ("cat", "dog"):  # the same files as the flat_dataset fixture
        for i in range(12):
            write_image(data / f"{cls}.{i}.jpg", COLORS[cls], seed=i)
    (data / "cat.90.jpg").write_bytes(b"")  # zero bytes
    good = (data / "dog.0.jpg").read_bytes()
    (data / "dog.91.jpg").write_bytes(good[: len(good) // 3])  # truncated JPEG
    (data / "dog.92.jpg").write_bytes(b"<html>not an image</html>")
    before = snapshot(data)
    cfg = tiny_config(base, data)
    return base, data, before, cfg, tlexp("run", str(cfg), "forest.n_estimators=12", cwd=base)


@pytest.mark.slow
def test_run_end_to_end(first_run):
    tmp_path, dirty_flat_dataset, before, cfg, proc = first_run
    assert proc.returncode == 0, proc.stderr
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    assert run_dir == tmp_path / "results" / "vgg16_f50_s3"
    assert {p.name for p in run_dir.iterdir()} == RUN_FILES
    assert snapshot(dirty_flat_dataset) == before  # the user's data is untouched

    # config.yaml is the resolved config, with the command-line override applied
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["forest"]["n_estimators"] == 12 and resolved["model"]["freeze"] == 0.5
    assert resolved["data"]["root"] == str(dirty_flat_dataset.resolve())

    split = list(csv_rows(run_dir / "split.csv"))
    rejected = {r["path"]: r["reason"] for r in csv_rows(run_dir / "rejected.csv")}
    skipped = list(csv_rows(run_dir / "skipped.csv"))
    # the data check rejects the bad files before training: they never reach a split
    assert len(split) == 24 and not {r["path"] for r in split} & set(rejected)
    assert rejected == {
        "cat.90.jpg": "empty",
        "dog.91.jpg": rejected["dog.91.jpg"],
        "dog.92.jpg": "not an image (HTML)",
    }
    assert rejected["dog.91.jpg"].startswith("truncated")
    assert skipped == []  # nothing failed later

    m = load_record(run_dir)
    planned = Counter(r["split"] for r in split)
    assert m.data.skipped == 0
    assert m.data.check.rejected == 3 and m.data.check.usable == 24
    assert m.data.check.variant == "custom"
    assert m.data.decoded_cache  # images came from the decoded-image cache
    for s in ("train", "val", "test"):
        assert sum(m.data.counts[s].values()) == planned[s]
        assert m.data.used[s] == planned[s]
        assert list(m.classifiers) == ["head", "forest", "logreg"]
        for scores in (c.split(s) for c in m.classifiers.values()):
            cm = np.array(scores.confusion)
            assert cm.sum() == scores.n == m.data.used[s]
            assert scores.accuracy == pytest.approx(np.trace(cm) / cm.sum())
    # per-class counts in metrics.json agree with split.csv
    by_class = Counter((r["split"], r["label"]) for r in split)
    assert m.data.counts["test"] == {c: by_class[("test", c)] for c in ("cat", "dog")}

    assert m.freeze.last_frozen_layer == "block4_pool"
    assert m.params.non_trainable == 7_635_264
    assert m.classifiers["forest"].n_features == 16 and m.classifiers["forest"].kind == "forest"
    assert m.classifiers["logreg"].estimator == "StandardScaler + LogisticRegression"
    # predictions.csv: one row per decoded image; its accuracies are the ones in metrics.json
    preds = list(csv_rows(run_dir / "predictions.csv"))
    assert len(preds) == sum(m.data.used.values())
    assert {r["path"] for r in preds} == {r["path"] for r in split}
    for clf, result in m.classifiers.items():
        test = [r for r in preds if r["split"] == "test"]
        assert np.mean([r[clf] == r["label"] for r in test]) == pytest.approx(result.test.accuracy)
        assert all(0.0 <= float(r[f"{clf}_p1"]) <= 1.0 for r in test)
    history = list(csv_rows(run_dir / "history.csv"))
    assert [int(r["epoch"]) for r in history] == [1, 2]
    assert float(history[-1]["val_accuracy"]) == pytest.approx(m.history.val_accuracy[-1])
    # each epoch's wall time; together they are the training phase, less its set-up
    seconds = [float(r["seconds"]) for r in history]
    assert seconds == pytest.approx(m.history.seconds, abs=1e-4) and min(seconds) > 0
    assert sum(seconds) <= m.timings_s["train"] + 1e-3
    assert set(m.timings_s) >= {
        "weights",
        "data",
        "build",
        "train",
        "predict",
        "fit_forest",
        "fit_logreg",
        "plots",
        "total",
    }
    assert m.environment.device and m.environment.tensorflow
    assert m.config["model"]["freeze"] == 0.5 and m.run.name == run_dir.name
    # colour-separable classes: the run learns something
    assert m.classifiers["forest"].test.accuracy >= 0.8
    for png in ("curves.png", "confusion.png", "roc.png"):
        assert (run_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log = (run_dir / "run.log").read_text()
    assert (
        "data: flat layout" in log and "model: vgg16, frozen prefix 15/19 layers" in log
    )  # logged before the folder existed
    assert "24 usable, 3 rejected" in log and "run: done" in log
    assert "forest: fitting RandomForestClassifier on" in log and "\nrf: " not in log and " rf: " not in log
    assert "logreg: fitting StandardScaler + LogisticRegression on" in log
    assert "Traceback" not in proc.stderr

    # same command again, quietly: a new folder, the first run untouched, same split and same numbers
    first = snapshot(run_dir)
    proc2 = tlexp("--quiet", "run", str(cfg), "forest.n_estimators=12", cwd=tmp_path)
    assert proc2.returncode == 0, proc2.stderr
    assert "train: epoch" not in proc2.stderr and "data: flat layout" not in proc2.stderr  # --quiet: warnings only
    run2 = Path(proc2.stdout.strip().splitlines()[-1])
    assert "train: epoch 2/2" in (run2 / "run.log").read_text()  # the log file still has everything
    assert run2.name == "vgg16_f50_s32"
    assert snapshot(run_dir) == first
    assert (run2 / "split.csv").read_bytes() == (run_dir / "split.csv").read_bytes()
    m2 = load_record(run2)
    assert m2.head.test.accuracy == m.head.test.accuracy
    assert m2.history.loss == pytest.approx(m.history.loss, rel=1e-4)


def csv_rows(path: Path):
    import csv

    with open(path, newline="") as f:
        yield from csv.DictReader(f)


@pytest.mark.slow
def test_bad_config_exits_2_with_every_problem(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("model:\n  freeze: 1.5\n  backbone: vgg17\ntrain:\n  epochs: 0\n")
    proc = tlexp("run", str(cfg), "data.root=/definitely/missing", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "4 problem(s)" in proc.stderr
    for needle in ("'model.freeze'", "'model.backbone'", "'train.epochs'", "'data.root' folder does not exist"):
        assert needle in proc.stderr
    assert not (tmp_path / "results").exists()


def test_overrides_are_accepted_anywhere_among_the_flags():
    from tlexp.cli import parse_args

    args = parse_args(["sweep", "c.yaml", "a=1", "--executor", "ray", "output.dir=x", "--new", "a=2"])
    assert args.executor == "ray" and args.new and args.overrides == ["a=1", "output.dir=x", "a=2"]  # in order
    assert parse_args(["-q", "run", "c.yaml", "--", "b=1"]).overrides == ["b=1"]
    assert parse_args(["sweep", "c.yaml", "--workers", "auto"]).workers == "auto"
    assert parse_args(["sweep", "c.yaml", "--workers", "4", "x=1"]).workers == 4


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sweep", "c.yaml", "--bogus", "a=1"], "unrecognized arguments: --bogus"),
        (["run", "c.yaml", "a=1", "--flag=a=1"], "unrecognized arguments: --flag=a=1"),
        (["sweep", "c.yaml", "--new", "stray"], "unrecognized arguments: stray"),
        (["config", "a=1"], "unrecognized arguments: a=1"),  # takes no overrides
        (["sweep", "c.yaml", "--workers", "0"], "argument --workers: must be a whole number >= 1 or 'auto'"),
    ],
)
def test_unknown_arguments_are_still_errors(argv, message, capsys):
    from tlexp.cli import parse_args

    with pytest.raises(SystemExit) as e:
        parse_args(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.slow
def test_an_override_after_a_flag_reaches_the_config(tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text("sweep: {seed: [0, 1]}\n")
    proc = tlexp("sweep", str(cfg), "--executor", "local", "data.root=/definitely/missing", cwd=tmp_path)
    assert proc.returncode == 2
    assert "'data.root' folder does not exist" in proc.stderr and "unrecognized" not in proc.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_missing_imagenet_weights_fail_before_any_work(tmp_path, flat_dataset):
    cfg = tiny_config(tmp_path, flat_dataset)
    proc = tlexp(
        "run",
        str(cfg),
        "model.weights=imagenet",
        "model.download=false",
        cwd=tmp_path,
        env={"KERAS_HOME": str(tmp_path / "kh")},
    )
    assert proc.returncode == 2
    assert "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in proc.stderr
    assert str(tmp_path / "kh" / "models") in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists()  # no run folder for a run that never started


@pytest.mark.slow
def test_bad_layer_name_is_a_user_error(tmp_path, flat_dataset, capsys):
    proc = tlexp_here(
        capsys, "plan", str(tiny_config(tmp_path, flat_dataset)), "model.freeze=block4_poll", cwd=tmp_path
    )
    assert proc.returncode == 2, proc.stderr
    assert "Did you mean 'block4_pool'" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_plan_shows_data_and_freeze_plan_without_training(tmp_path, folder_dataset, capsys):
    proc = tlexp_here(
        capsys,
        "plan",
        str(tiny_config(tmp_path, folder_dataset)),
        "model.freeze=0.3",
        "data.image_size=224",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "layout: folders" in out and "classes: Bird, Cat, Dog" in out
    assert "through block4_conv2" in out
    assert "backbone trainable: 9,439,232   non-trainable: 5,275,456" in out
    # head on 224 px: Flatten(7*7*512) -> Dense(16) -> Dense(3)
    assert f"total: {14_714_688 + 25088 * 16 + 16 + 16 * 3 + 3:,}" in out
    assert "trains: all layers above block4_conv2 (model.train: all)" in out
    # The backbone's stages, those holding a trained layer marked, and the schedule.
    stages = [
        line.split() for line in out.split("# backbone stages")[1].split("# schedule")[0].splitlines()[1:] if line
    ]
    assert [(s[0], s[1], s[-1]) for s in stages] == [
        ("1", "block1", "(frozen)"),
        ("2", "block2", "(frozen)"),
        ("3", "block3", "(frozen)"),
        ("4", "block4", "(trains)"),
        ("5", "block5", "(trains)"),
    ]
    assert "block4_conv1 .. block4_pool  5,899,776 parameters" in out
    assert "1. fine-tune: 2 epoch(s) at lr 0.001, training the head and all layers above block4_conv2" in out
    assert "test" in out and not (tmp_path / "results").exists()


@pytest.mark.slow
def test_config_command_prints_every_key_with_its_default_type_and_description(tmp_path):
    from tlexp.config import describe

    proc = tlexp("config", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = describe()
    lines = [line for line in proc.stdout.splitlines() if not line.startswith("#")]
    assert len(lines) == 2 * len(rows)  # per key: "key  default  type", then its description indented
    for (key, default, typ, desc), line, below in zip(rows, lines[0::2], lines[1::2], strict=True):
        printed_key, rest = line.split(maxsplit=1)
        assert printed_key == key
        # The default and the type, as describe() gives them, apart by at least two spaces (column padding).
        assert re.fullmatch(rf"{re.escape(default)} {{2,}}{re.escape(typ)}", rest), (key, rest)
        assert below.startswith(" ") and below.strip() == desc, key


@pytest.mark.slow
def test_help_does_not_import_tensorflow(tmp_path):
    code = (
        "import sys; from tlexp.cli import main\ntry: main(['--help'])\nexcept SystemExit: pass\n"
        "print('TF' if 'tensorflow' in sys.modules else 'noTF')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.stdout.strip().endswith("noTF")


@pytest.mark.slow
def test_dataset_with_no_decodable_image_is_a_user_error(tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    for cls in ("cat", "dog"):
        for i in range(6):
            (root / f"{cls}.{i}.jpg").write_bytes(b"")
    proc = tlexp("run", str(tiny_config(tmp_path, root)), cwd=tmp_path)
    assert proc.returncode == 2
    assert "has usable images of 0 class(es)" in proc.stderr and "tlexp data check" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists()  # it fails before a run folder exists


@pytest.mark.slow
def test_predict_with_a_saved_run(tmp_path, flat_dataset, first_run, capsys):
    """tlexp predict reproduces the run's own predictions (same preprocessing, same model).

    The run is the module's first_run, whose data are these 24 files (same bytes, same
    names; plus three files its data check rejected)."""
    proc = first_run[-1]
    assert proc.returncode == 0, proc.stderr
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    files = sorted(flat_dataset.iterdir())
    assert len(files) == 24 and all((first_run[1] / p.name).read_bytes() == p.read_bytes() for p in files)
    expected = {r["path"]: r for r in csv_rows(run_dir / "predictions.csv")}
    (tmp_path / "junk.jpg").write_bytes(b"not an image")

    for clf in ("head", "forest", "logreg"):
        out = tmp_path / f"{clf}.csv"
        p = tlexp_here(
            capsys,
            "predict",
            str(run_dir),
            str(flat_dataset),
            str(tmp_path / "junk.jpg"),
            "--classifier",
            clf,
            "--out",
            str(out),
            cwd=tmp_path,
        )
        assert p.returncode == 0, p.stderr
        rows = list(csv_rows(out))
        assert len(rows) == 25
        junk = [r for r in rows if r["path"].endswith("junk.jpg")][0]
        assert junk["prediction"] == "" and "UnidentifiedImageError" in junk["error"]
        for r in rows:
            name = Path(r["path"]).name
            if name in expected:
                assert r["prediction"] == expected[name][clf], (clf, name)
                assert float(r["p_dog"]) == pytest.approx(float(expected[name][f"{clf}_p1"]), abs=1e-5)
    # refuses to overwrite, lists the classifiers it has
    again = tlexp_here(
        capsys, "predict", str(run_dir), str(flat_dataset), "--out", str(tmp_path / "head.csv"), cwd=tmp_path
    )
    assert again.returncode == 2 and "--overwrite" in again.stderr
    unknown = tlexp_here(capsys, "predict", str(run_dir), str(flat_dataset), "--classifier", "svm", cwd=tmp_path)
    assert unknown.returncode == 2 and "it has: head, forest, logreg" in unknown.stderr

    # Kaggle's test1/ layout: N.jpg -> id,label with P(dog), sorted by id
    test1 = tmp_path / "test1"
    test1.mkdir()
    for i, name in ((10, "dog.3.jpg"), (2, "cat.4.jpg")):
        (test1 / f"{i}.jpg").write_bytes((flat_dataset / name).read_bytes())
    sub = tlexp_here(capsys, "predict", str(run_dir), str(test1), "--submission", cwd=tmp_path)
    assert sub.returncode == 0, sub.stderr
    lines = sub.stdout.strip().splitlines()
    assert lines[0] == "id,label" and [line.split(",")[0] for line in lines[1:]] == ["2", "10"]
    assert float(lines[2].split(",")[1]) == pytest.approx(float(expected["dog.3.jpg"]["head_p1"]), abs=1e-5)


@pytest.mark.slow
def test_predict_needs_a_saved_model(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("data: {image_size: 32}\nmodel: {backbone: vgg16}\n")
    (run / "metrics.json").write_text('{"data": {"class_names": ["a", "b"]}}')
    (tmp_path / "x.jpg").write_bytes(b"")
    proc = tlexp("predict", str(run), str(tmp_path / "x.jpg"), cwd=tmp_path)
    assert proc.returncode == 2 and "ran with output.save_model=false" in proc.stderr


@pytest.mark.slow
def test_weights_command_reports_missing_files(tmp_path):
    from tlexp.model import REGISTRY

    proc = tlexp("weights", cwd=tmp_path, env={"KERAS_HOME": str(tmp_path / "kh")})
    assert proc.returncode == 1
    assert proc.stdout.count("MISSING") == len(REGISTRY)  # every keras.applications backbone
    assert str(tmp_path / "kh" / "models" / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5") in proc.stdout
    bad = tmp_path / "download.h5"
    bad.write_bytes(b"truncated")
    imp = tlexp("weights", "import", str(bad), cwd=tmp_path, env={"KERAS_HOME": str(tmp_path / "kh")})
    assert imp.returncode == 2 and "matches none of the no-top ImageNet weights files" in imp.stderr
    models = tmp_path / "kh" / "models"
    assert not models.exists() or not any(models.iterdir())  # nothing written


@pytest.mark.slow
def test_failed_weight_download_is_one_message_without_tensorflow_noise(tmp_path, flat_dataset):
    """Keras' download imports TensorFlow; its C++ start-up notes must go into tlexp's
    capture (shown with -v), not onto the terminal. The proxy on a closed loopback port
    makes the download fail at once, with or without internet."""
    env = {
        "KERAS_HOME": str(tmp_path / "keras"),
        "https_proxy": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "TF_CPP_MIN_LOG_LEVEL": "0",
    }
    proc = tlexp("run", str(tiny_config(tmp_path, flat_dataset)), "model.weights=imagenet", cwd=tmp_path, env=env)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines[0].startswith("weights: downloading vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5")
    assert lines[1].startswith("tlexp: error: Could not download ImageNet weights for vgg16")
    assert len(lines) == 2, proc.stderr  # nothing else: no absl / oneDNN / CUDA notes, no traceback
    assert not (tmp_path / "results").exists()  # failed before any run folder
