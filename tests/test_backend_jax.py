"""The JAX backend: the core runs on it without TensorFlow (issue #17, "Any Keras backend").

The JAX tests run where JAX is installed (CI's second leg: a venv with '.[jax]' and no
TensorFlow, KERAS_BACKEND=jax); elsewhere they skip and say why. The checks of the
messages for an unsupported or missing backend run everywhere.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tlexp.config import load_config
from tlexp.results import load_record

from conftest import tiny_overrides

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
    return tiny_overrides(
        tmp_path,
        root,
        "train.epochs=2",
        "train.batch_size=5",  # 12 training images: batches of 5, 5 and 2
        "forest.n_estimators=20",
        "classifiers={}",
        "output.save_model=false",
        f"data.cache_dir={tmp_path / 'cache'}",
        *more,
    )


# --------------------------------------------------------------------------- everywhere


@pytest.mark.slow
def test_torch_backend_says_it_is_not_supported_yet(tmp_path, flat_dataset):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data:\n  root: {flat_dataset}\n  image_size: 32\nmodel:\n  weights: none\n")
    r = _cli("plan", str(cfg), backend="torch")
    assert r.returncode == 2, r.stderr
    assert "KERAS_BACKEND=torch is not supported yet: use tensorflow" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_head_with_overshooting_logits_learns_back_on_any_backend(tmp_path):
    """The loss is computed from logits (compile_model): at a logit of 40 for a class-0
    row it is 40 and its gradient pulls the logit down. From the probabilities it would
    be clipped (-log 1e-7 = 16.1) with no gradient at all on JAX, where ResNet50 from
    random weights then stayed at 50 % accuracy for good."""
    import keras

    from tlexp.model import compile_model

    inputs = keras.Input((1,))
    logits = keras.layers.Dense(1, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(40.0))
    model = keras.Model(inputs, logits(inputs))
    compile_model(model, 2, learning_rate=0.1)
    history = model.fit(np.ones((8, 1), "float32"), np.zeros(8, "float32"), epochs=5, batch_size=8, verbose=0)
    assert history.history["loss"][0] == pytest.approx(40.0, rel=1e-4)
    assert float(np.asarray(logits.bias)[0]) < 40.0 - 0.3  # five Adam steps of about lr each
    assert history.history["accuracy"] == [0.0] * 5  # still all class 1 (logit > 0)


# --------------------------------------------------------------------------- on JAX


def _rows(load, labels, bad=None):
    """A :class:`tlexp.pipeline.Source` over ``load(rows) -> (x, kept)``: rows of plain arrays."""
    from tlexp.pipeline import Source

    class Rows(Source):
        def __init__(self):
            self.labels, self.failed = np.asarray(labels), {}

        def known_bad(self):
            return np.zeros(len(self.labels), bool) if bad is None else bad

        def read(self, rows):
            return load(rows)

    return Rows()


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
    from tlexp.model import numerics_fingerprint

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

    from tlexp.pipeline import Batches, BatchPlan

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
        rows = _rows(load, labels)
        train = Batches(rows, np.arange(12), BatchPlan(5, 0, True, "float32"))
        val = Batches(rows, np.arange(7), BatchPlan(5, 0, False, "float32"))
        assert [len(train.batch(k)[2]) for k in range(len(train))] == [5, 5, 2]
        before = len(compiles)
        model.fit(train.for_fit().data, validation_data=val.for_fit().data, epochs=epochs, verbose=0)
        return len(compiles) - before

    count(1)  # the first fit also compiles one-off helpers (seeding, variable set-up)
    two, five = count(2), count(5)
    print(f"backend compiles during fit: 2 epochs {two}, 5 epochs {five}")
    # Train and test steps, each for the full and the last batch's shape (measured: 4).
    assert five == two <= 4


@on_jax
def test_image_and_activation_batches_share_their_order():
    """One seeded permutation per epoch, without the known-unusable rows, for both paths."""
    from tlexp.pipeline import Batches, BatchPlan

    bad = np.zeros(20, bool)
    bad[[3, 11]] = True
    labels = np.arange(20) % 2

    def load(rows):
        return rows.astype("float32"), np.ones(len(rows), bool)

    a = Batches(_rows(load, labels, bad), np.arange(20), BatchPlan(4, 7, True, "int32"))
    b = Batches(_rows(load, labels, bad), np.arange(20), BatchPlan(4, 7, True, "int32"))
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

    from tlexp.model import fit
    from tlexp.pipeline import Batches, BatchPlan

    x_all = np.random.default_rng(0).normal(size=(100, 4)).astype("float32")
    labels = (x_all[:, 0] > 0).astype("float32")
    seen, lock = [], threading.Lock()

    def load(rows):
        with lock:
            seen.append(tuple(rows))
        return x_all[rows], np.ones(len(rows), bool)

    train = Batches(_rows(load, labels), np.arange(100), BatchPlan(8, 3, True, "float32")).for_fit()
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    fit(model, train.data, None, epochs=3, verbose=0, callbacks=train.callbacks)
    expected = []
    for epoch in range(3):
        perm = np.random.default_rng([3, epoch]).permutation(100)
        expected += [tuple(perm[k * 8 : (k + 1) * 8]) for k in range(13)]
    assert set(seen) == set(expected)
    assert len(seen) <= len(expected) + 4  # the batches read ahead for fit's first peek, at most


@on_jax
def test_gpus_on_jax_set_precision_and_say_what_needs_tensorflow(monkeypatch, flat_dataset):
    """GPUs from jax.devices() (faked here): compute capability picks the precision; two
    GPUs train data parallel, with a batch that splits evenly over them (else a message
    says which batch sizes do); GPU determinism without XLA's flag stops with a message
    saying what to do."""
    from types import SimpleNamespace

    from tlexp.errors import UserError
    from tlexp.model import _accel as accel
    from tlexp.model import _backend as backend

    gpus = [SimpleNamespace(device_kind="NVIDIA H200", compute_capability="9.0", platform="gpu")] * 2
    monkeypatch.setattr(backend, "jax_gpus", lambda: gpus)
    monkeypatch.setattr(accel, "_jax_devices", lambda: gpus)
    got = accel.resolve_accel("auto", "auto", "auto", False, 32)
    assert got.gpus == ["NVIDIA H200"] * 2 and got.precision == "mixed_bfloat16"
    assert (got.distribute, got.replicas) == ("mirrored", 2)
    one = accel.resolve_accel("auto", "none", "auto", False, 32)
    assert (one.distribute, one.replicas) == ("none", 1)
    with pytest.raises(UserError, match=r"train.batch_size=33 does not split evenly over the 2 devices.*batch_size=34"):
        accel.resolve_accel("auto", "auto", "auto", False, 33)
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    with pytest.raises(UserError, match="xla_gpu_deterministic_ops"):
        accel.set_determinism(True)
    monkeypatch.setenv("XLA_FLAGS", "--xla_gpu_deterministic_ops=true")
    accel.set_determinism(True)
    accel.set_determinism(False)


_DATA_PARALLEL_RUN = """
import sys
import jax
assert len(jax.devices()) == 2, jax.devices()
from tlexp.cli import main
for name, distribute in (("one", "none"), ("two", "mirrored")):
    code = main(["--quiet", "run", sys.argv[1], *sys.argv[2:], f"train.distribute={distribute}", f"name={name}"])
    if code:
        sys.exit(code)
"""


@needs_jax
@pytest.mark.slow
def test_data_parallel_over_two_devices_trains_what_one_does(tmp_path):
    """train.distribute=mirrored on JAX: keras.distribution.DataParallel over two devices
    (two CPU devices here, XLA's host platform split in two) trains and predicts what
    one device does. Splits of odd size make last batches that do not divide over two
    devices: they are padded with zero-weight rows, and losses, accuracies and
    predictions stay those of the real rows. With the activation cache, so that every
    sharded path runs: the prefix's activations, training on them, the predictions."""
    from conftest import COLORS, write_image

    root = tmp_path / "train"
    for cls, n in (("cat", 13), ("dog", 12)):  # 25 images: odd splits
        for i in range(n):
            write_image(root / f"{cls}.{i}.jpg", COLORS[cls], seed=i)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("{}\n")
    overrides = _overrides(tmp_path, root, "train.batch_size=4", "train.prefix_cache.enabled=true")
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2",
        "JAX_PLATFORMS": "cpu",
    }
    r = subprocess.run(
        [sys.executable, "-c", _DATA_PARALLEL_RUN, str(cfg), *overrides],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    one, two = (load_record(tmp_path / "out" / n) for n in ("one", "two"))
    assert (one.accelerator.distribute, one.accelerator.replicas) == ("none", 1)
    assert (two.accelerator.distribute, two.accelerator.replicas) == ("mirrored", 2)
    assert two.prefix_cache.used is True
    assert two.data.used == one.data.used and sum(two.data.used.values()) == 25  # no padded row counted
    assert any(n % 4 % 2 for n in two.data.used.values())  # a last batch that had to be padded
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(getattr(two.history, key), getattr(one.history, key), rtol=2e-5, err_msg=key)
    for split in ("val", "test"):
        assert two.head.split(split).log_loss == pytest.approx(one.head.split(split).log_loss, rel=2e-5)
        assert two.head.split(split).n == one.head.split(split).n
    # Every image once, in the same order, with the head's probability of the real row.
    a, b = (list(csv.DictReader((tmp_path / "out" / n / "predictions.csv").open())) for n in ("one", "two"))
    assert [r["path"] for r in b] == [r["path"] for r in a] and len(b) == 25
    np.testing.assert_allclose([float(r["head_p1"]) for r in b], [float(r["head_p1"]) for r in a], atol=2e-5)


def test_padded_batches_split_evenly_and_weigh_only_their_own_rows():
    """loader.padded: a batch of 5 rows over 2 devices becomes 6 (a copy of its first row
    at weight 0); tuples of inputs (a cut crossed by two tensors) are padded alike; a
    batch that splits evenly is left as it is, with weights 1."""
    from tlexp.pipeline import padded

    x = np.arange(5 * 3, dtype=np.float32).reshape(5, 3)
    y = np.array([0, 1, 1, 0, 1], np.float32)
    (a, b), yy, w = padded((x, x * 10), y, 2)
    assert a.shape == (6, 3) and b.shape == (6, 3)
    np.testing.assert_array_equal(a[:5], x)
    np.testing.assert_array_equal(a[5], x[0])
    np.testing.assert_array_equal(b[5], x[0] * 10)
    np.testing.assert_array_equal(yy, [0, 1, 1, 0, 1, 0])
    np.testing.assert_array_equal(w, [1, 1, 1, 1, 1, 0])
    xx, yy, w = padded(x[:4], y[:4], 2)
    assert xx.shape == (4, 3) and w.tolist() == [1, 1, 1, 1]
    xx, yy, w = padded(x[:1], y[:1], 4)
    assert xx.shape == (4, 3) and w.tolist() == [1, 0, 0, 0]


_COMPILE = """
import jax, jax.numpy as jnp
from tlexp.model._backend import import_backend
import_backend()
print(jax.config.jax_compilation_cache_dir)
jax.jit(lambda a: jnp.sin(a) @ a.T)(jnp.ones((64, 64))).block_until_ready()
"""


@pytest.mark.slow
@needs_jax
def test_jax_compilations_are_kept_in_tlexps_cache_folder_unless_the_user_says_otherwise(tmp_path):
    """JAX's persistent compilation cache goes to <tlexp cache>/jax, so the next process
    reads what this one compiled; JAX_COMPILATION_CACHE_DIR wins over it, and
    JAX_ENABLE_COMPILATION_CACHE=false turns it off."""
    base = {**os.environ, "KERAS_BACKEND": "jax", "TLEXP_CACHE_DIR": str(tmp_path / "tlexp")}
    base.pop("JAX_COMPILATION_CACHE_DIR", None)

    def compile_in_new_process(**env) -> str:
        r = subprocess.run([sys.executable, "-c", _COMPILE], env={**base, **env}, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stdout.strip()

    assert compile_in_new_process() == str(tmp_path / "tlexp" / "jax")
    kept = sorted(p.name for p in (tmp_path / "tlexp" / "jax").glob("*-cache"))
    assert kept  # the jitted function (and its ones/sin helpers)
    compile_in_new_process()
    assert sorted(p.name for p in (tmp_path / "tlexp" / "jax").glob("*-cache")) == kept  # read back, not compiled anew
    mine = {"JAX_COMPILATION_CACHE_DIR": str(tmp_path / "mine"), "TLEXP_CACHE_DIR": str(tmp_path / "other")}
    assert compile_in_new_process(**mine) == str(tmp_path / "mine")  # with JAX's own settings
    assert not (tmp_path / "other").exists()
    compile_in_new_process(JAX_ENABLE_COMPILATION_CACHE="false", TLEXP_CACHE_DIR=str(tmp_path / "off"))
    assert not (tmp_path / "off").exists()
