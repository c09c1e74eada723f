"""The JAX backend: the core runs on it without TensorFlow (issue #17, "Any Keras backend").

The JAX tests run where JAX is installed (CI's second leg: a venv with '.[jax]' and no
TensorFlow, KERAS_BACKEND=jax); elsewhere they skip and say why. The checks of the
messages for an unsupported or missing backend run everywhere.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tlexp.config import load_config
from tlexp.results.record import load_record

HAS_JAX = importlib.util.find_spec("jax") is not None
needs_jax = pytest.mark.skipif(not HAS_JAX, reason="JAX is not installed (pip install -e '.[jax]')")
# Keras fixes its backend when first imported: the in-process tests need the whole session on JAX.
on_jax = pytest.mark.skipif(
    os.environ.get("KERAS_BACKEND") != "jax" or not HAS_JAX,
    reason="runs in a pytest session started with KERAS_BACKEND=jax (and JAX installed)",
)


def _cli(*args, backend: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "KERAS_BACKEND": backend}
    return subprocess.run(
        [sys.executable, "-m", "tlexp", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600
    )


def _overrides(tmp_path, root, *more) -> list[str]:
    return [
        f"data.root={root}",
        "data.image_size=32",
        "data.val_fraction=0.25",
        "data.test_fraction=0.25",
        "model.weights=none",
        "model.head.dense=[8]",
        "train.epochs=2",
        "train.batch_size=5",  # 12 training images: batches of 5, 5 and 2
        "train.learning_rate=0.001",
        "forest.n_estimators=20",
        "forest.n_jobs=1",
        "classifiers={}",
        f"output.dir={tmp_path / 'out'}",
        "output.save_model=false",
        f"data.cache_dir={tmp_path / 'cache'}",
        *more,
    ]


# --------------------------------------------------------------------------- everywhere


def test_torch_backend_says_it_is_not_supported_yet(tmp_path, flat_dataset):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data:\n  root: {flat_dataset}\n  image_size: 32\nmodel:\n  weights: none\n")
    r = _cli("plan", str(cfg), backend="torch")
    assert r.returncode == 2, r.stderr
    assert "KERAS_BACKEND=torch is not supported yet: use tensorflow" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.skipif(HAS_JAX, reason="checks the message for a missing JAX; JAX is installed here")
def test_missing_backend_names_the_extra_to_install(tmp_path, flat_dataset):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data:\n  root: {flat_dataset}\n  image_size: 32\nmodel:\n  weights: none\n")
    r = _cli("plan", str(cfg), backend="jax")
    assert r.returncode == 2, r.stderr
    assert "pip install -e '.[jax]'" in r.stderr and "Traceback" not in r.stderr
    # tlexp run says so before any data work (like missing weights): no check, no cache, no run folder.
    r = _cli("run", str(cfg), f"data.cache_dir={tmp_path / 'cache'}", f"output.dir={tmp_path / 'out'}", backend="jax")
    assert r.returncode == 2, r.stderr
    assert "pip install -e '.[jax]'" in r.stderr and "data:" not in r.stderr
    assert not (tmp_path / "cache").exists() and not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- on JAX


@needs_jax
@pytest.mark.slow
def test_cli_run_on_jax_learns_and_records_its_backend(tmp_path, flat_dataset):
    """``tlexp run`` with KERAS_BACKEND=jax, in a fresh process (no TensorFlow is imported)."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: clirun\n")
    r = _cli("run", str(cfg), *_overrides(tmp_path, flat_dataset, "model.head.dense=[32]"), backend="jax")
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "out" / "clirun"
    rec = load_record(out)
    assert rec.environment.backend == "jax" and rec.environment.backend_version
    assert rec.environment.tensorflow is None
    assert rec.classifiers["forest"].test.accuracy >= 0.8  # colours: easy even from random filters
    assert rec.classifiers["head"].test.n == 6
    metrics = json.loads((out / "metrics.json").read_text())
    assert "jax=" not in json.dumps(metrics["environment"])  # names and versions in their own fields


@on_jax
@pytest.mark.slow
def test_cached_prefix_gives_the_ordinary_results_on_jax(tmp_path, flat_dataset):
    """Same seed: the same losses and predictions with the activation cache as without, on JAX."""
    from tlexp.experiment import run_experiment

    recs = {}
    for enabled in ("false", "true"):
        cfg = load_config(
            None,
            _overrides(tmp_path, flat_dataset, f"train.prefix_cache.enabled={enabled}", f"name=jax_{enabled}"),
        )
        recs[enabled] = load_record(run_experiment(cfg))
    plain, cached = recs["false"], recs["true"]
    assert not plain.prefix_cache.used and cached.prefix_cache.used
    assert cached.environment.backend == "jax"
    from tlexp.model.backend import numerics_fingerprint

    assert numerics_fingerprint([]).startswith("jax=")  # activation caches are keyed apart from TensorFlow's
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(getattr(plain.history, key), getattr(cached.history, key), atol=1e-5)
    for split in ("train", "val", "test"):
        a, b = plain.classifiers["head"].split(split), cached.classifiers["head"].split(split)
        assert a.confusion == b.confusion and abs(a.log_loss - b.log_loss) < 1e-5


@on_jax
def test_smaller_last_batch_compiles_once_not_once_per_epoch():
    """JAX compiles per input shape; Keras keeps its jitted steps for the whole fit, so the
    last, smaller batch adds one compile per step function, whatever the number of epochs."""
    import jax
    import keras

    from tlexp.loader import Batches

    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, _secs, **_: compiles.append(event) if event.endswith("backend_compile_duration") else None
    )
    x_all = np.random.default_rng(0).normal(size=(12, 4)).astype("float32")
    labels = (x_all[:, 0] > 0).astype("float32")

    def load(rows):
        return x_all[rows], np.ones(len(rows), bool)

    def count(epochs: int) -> int:
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
        model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
        train = Batches(load, np.arange(12), labels, np.zeros(12, bool), 5, True, 0, "float32")
        val = Batches(load, np.arange(7), labels, np.zeros(12, bool), 5, False, 0, "float32")
        assert [len(train.batch(k)[2]) for k in range(len(train))] == [5, 5, 2]
        before = len(compiles)
        model.fit(train.for_fit(), validation_data=val.for_fit(), epochs=epochs, verbose=0)
        return len(compiles) - before

    count(1)  # the first fit also compiles one-off helpers (seeding, variable set-up)
    two, five = count(2), count(5)
    print(f"backend compiles during fit: 2 epochs {two}, 5 epochs {five}")
    # Train and test steps, each for the full and the last batch's shape (measured: 4).
    assert five == two <= 4


@on_jax
def test_image_and_activation_batches_share_their_order():
    """One seeded permutation per epoch, without the known-unusable rows, for both paths."""
    from tlexp.loader import Batches

    bad = np.zeros(20, bool)
    bad[[3, 11]] = True
    labels = np.arange(20) % 2

    def load(rows):
        return rows.astype("float32"), np.ones(len(rows), bool)

    a = Batches(load, np.arange(20), labels, bad, 4, True, 7, "int32")
    b = Batches(load, np.arange(20), labels, bad, 4, True, 7, "int32")
    for _epoch in range(3):
        got = [i for _, _, i in a]
        assert [list(i) for i in got] == [list(i) for _, _, i in b]
        flat = np.concatenate(got)
        assert sorted(flat) == [i for i in range(20) if not bad[i]]
        a.epoch += 1
        b.epoch += 1
    assert not np.array_equal(np.concatenate([i for _, _, i in a]), np.concatenate(got))  # reshuffled


@on_jax
def test_fit_reads_every_batch_of_each_epochs_permutation():
    """Through ``fit`` (tlexp's, with its per-epoch callback): each epoch trains exactly the
    batches of that epoch's seeded permutation, every one of them."""
    import threading

    import keras

    from tlexp.loader import Batches
    from tlexp.model.training import fit

    x_all = np.random.default_rng(0).normal(size=(100, 4)).astype("float32")
    labels = (x_all[:, 0] > 0).astype("float32")
    seen, lock = [], threading.Lock()

    def load(rows):
        with lock:
            seen.append(tuple(rows))
        return x_all[rows], np.ones(len(rows), bool)

    train = Batches(load, np.arange(100), labels, np.zeros(100, bool), 8, True, 3, "float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    fit(model, train.for_fit(), None, epochs=3, verbose=0)
    expected = []
    for epoch in range(3):
        perm = np.random.default_rng([3, epoch]).permutation(100)
        expected += [tuple(perm[k * 8 : (k + 1) * 8]) for k in range(13)]
    assert set(seen) == set(expected)
    assert len(seen) <= len(expected) + 4  # the batches read ahead for fit's first peek, at most


@on_jax
def test_gpus_on_jax_set_precision_and_say_what_needs_tensorflow(monkeypatch, flat_dataset):
    """GPUs from jax.devices() (faked here): compute capability picks the precision; two
    GPUs train on one (MirroredStrategy is TensorFlow's); mirrored and GPU determinism
    without XLA's flag stop with a message saying what to do."""
    from types import SimpleNamespace

    from tlexp.config import load_config
    from tlexp.errors import UserError
    from tlexp.model import accel, backend

    gpus = [SimpleNamespace(device_kind="NVIDIA H200", compute_capability="9.0", platform="gpu")] * 2
    monkeypatch.setattr(backend, "jax_gpus", lambda: gpus)
    got = accel.resolve(load_config(None, [f"data.root={flat_dataset}"]).train)
    assert got.gpus == ["NVIDIA H200"] * 2 and got.precision == "mixed_bfloat16" and got.distribute == "none"
    with pytest.raises(UserError, match="mirrored.*needs TensorFlow"):
        accel.resolve(load_config(None, [f"data.root={flat_dataset}", "train.distribute=mirrored"]).train)
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    with pytest.raises(UserError, match="xla_gpu_deterministic_ops"):
        accel.set_determinism(True)
    monkeypatch.setenv("XLA_FLAGS", "--xla_gpu_deterministic_ops=true")
    accel.set_determinism(True)
    accel.set_determinism(False)
