"""The cached-prefix path: cut models, the activation store, and equality with the ordinary path."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest

from tlexp.results import load_record

from conftest import tiny_config


def _small_cfg(tmp_path, root, *overrides):
    return tiny_config(
        tmp_path,
        root,
        "train.epochs=2",
        "classifiers={}",
        "output.save_model=false",
        f"data.cache_dir={tmp_path / 'cache'}",
        # The mechanics of caching, whatever the measured figures would say (tests/test_cachestream.py).
        "train.prefix_cache.enabled=true",
        *overrides,
    )


def _run(cfg):
    from tlexp.experiment import run_experiment

    run_dir = run_experiment(cfg)
    return run_dir, load_record(run_dir)


def _predictions(run_dir):
    with open(run_dir / "predictions.csv", newline="") as f:
        return {row["path"]: row for row in csv.DictReader(f)}


# --------------------------------------------------------------------------- cutting a backbone


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vgg16", "resnet50", "densenet121"])
def test_segments_chain_to_the_whole_backbone(name):
    """Frontier -> frontier segments at every study cut (and a few more) compose exactly."""
    import keras

    from tlexp.model import build_backbone, frontier, plan_freeze, segment

    keras.utils.set_random_seed(0)
    backbone = build_backbone(name, 32)
    n = len(backbone.layers)
    cuts = sorted({plan_freeze(backbone, f, "inference").layers_frozen for f in (0.1, 0.3, 0.5, 0.7)} | {2, n - 1})
    widths = [len(frontier(backbone, c)) for c in range(1, n + 1)]
    if name == "vgg16":
        assert set(widths) == {1}  # a chain
    else:
        assert max(widths) >= 2  # cuts inside residual / dense blocks carry a shortcut too
    x = np.random.default_rng(0).uniform(-100, 100, (3, 32, 32, 3)).astype("float32")
    whole = np.asarray(backbone(x, training=False))
    value, start = x, 1
    for cut in [*cuts, n]:
        value = segment(backbone, start, cut)(value, training=False)
        start = cut
    np.testing.assert_allclose(np.asarray(value), whole, rtol=1e-5, atol=1e-5 * np.abs(whole).max())
    # A segment calls the backbone's own layers: no new weights.
    assert all(any(w is v for v in backbone.weights) for w in segment(backbone, cuts[0], n).weights)


# --------------------------------------------------------------------------- equality with the ordinary path


@pytest.mark.slow
@pytest.mark.parametrize("name,freeze", [("vgg16", "0.3"), ("resnet50", "0.9"), ("densenet121", "0.99")])
def test_cached_path_gives_the_ordinary_results(tmp_path, flat_dataset, name, freeze):
    """Same seed and split: same per-epoch losses, metrics and predictions, cache or no cache.

    resnet50 at 0.9 cuts inside the last residual block (conv5_block3_1_relu: the block's
    shortcut crosses the cut beside it); densenet121 at 0.99 inside the last dense block
    (conv5_block16_1_conv: the block's input crosses the cut beside it). Both are cuts
    through a block, as strict a check as one higher up (0.7: conv5_block2_1_relu,
    conv5_block1_1_relu), with a smaller top to train twice: the densenet121 pair takes
    about a quarter less time.

    Largest differences seen (CPU, float32; pytest -s prints them): vgg16 0, resnet50 1.2e-7, densenet121 0.
    """
    runs = {}
    for enabled in ("false", "true"):
        cfg = _small_cfg(
            tmp_path,
            flat_dataset,
            f"model.backbone={name}",
            f"model.freeze={freeze}",
            f"train.prefix_cache.enabled={enabled}",
            f"name={name}_{enabled}",
        )
        runs[enabled] = _run(cfg)
    (plain_dir, plain), (cached_dir, cached) = runs["false"], runs["true"]
    assert plain.prefix_cache.model_dump(exclude_none=True) == {
        "used": False,
        "reason": "train.prefix_cache.enabled is false",
    }
    info = cached.prefix_cache
    assert info.used and info.layer == cached.freeze.last_frozen_layer and info.source == "images"
    if name == "resnet50":
        assert (info.layer, len(info.tensors)) == ("conv5_block3_1_relu", 2)  # the block's shortcut crosses the cut
    if name == "densenet121":
        assert (info.layer, len(info.tensors)) == ("conv5_block16_1_conv", 2)  # the block's concat input crosses it
    worst = 0.0
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert len(getattr(cached.history, key)) == 2
        diff = np.abs(np.subtract(getattr(plain.history, key), getattr(cached.history, key))).max()
        worst = max(worst, diff)
    for clf in ("head", "forest"):
        for split in ("train", "val", "test"):
            a, b = plain.classifiers[clf].split(split), cached.classifiers[clf].split(split)
            assert a.confusion == b.confusion and a.n == b.n
            worst = max(worst, abs(a.log_loss - b.log_loss))
    p, q = _predictions(plain_dir), _predictions(cached_dir)
    assert p.keys() == q.keys()
    worst = max(worst, max(abs(float(p[k][c]) - float(q[k][c])) for k in p for c in ("head_p1", "forest_p1")))
    print(f"{name}: largest difference cached vs ordinary = {worst:.3g}")
    assert worst < 1e-5
    assert cached.params == plain.params  # the same model was trained


@pytest.mark.slow
def test_sweep_cells_share_the_prefix_and_a_rerun_reuses_it(tmp_path, flat_dataset):
    """A deeper cut is computed from a shallower entry; the same cut again is reused;
    other weights (another seed of a random init) never read an entry of this one."""
    first = _run(_small_cfg(tmp_path, flat_dataset, "model.freeze=0.3", "name=a"))[1].prefix_cache
    deeper = _run(_small_cfg(tmp_path, flat_dataset, "model.freeze=0.7", "name=b"))[1].prefix_cache
    again = _run(_small_cfg(tmp_path, flat_dataset, "model.freeze=0.7", "name=c"))[1].prefix_cache
    other_seed = _run(_small_cfg(tmp_path, flat_dataset, "model.freeze=0.7", "seed=1", "name=d"))[1].prefix_cache
    assert (first.layer, first.source) == ("block4_conv2", "images")
    assert (deeper.layer, deeper.source) == ("block5_conv1", "block4_conv2")
    assert again.source == "reused" and again.folder == deeper.folder
    assert other_seed.source == "images" and other_seed.folder != deeper.folder
    # 24 images x 4 x 4 x 512 float32 at block4_conv2 (32 px input)
    assert first.mb == round(24 * 4 * 4 * 512 * 4 / 1e6, 1)


@pytest.mark.slow
def test_activations_of_another_library_version_are_not_reused(tmp_path, flat_dataset, monkeypatch):
    """An entry records the libraries and device that computed it; another Keras never reads it."""
    import keras

    first = _run(_small_cfg(tmp_path, flat_dataset, "model.freeze=0.5", "name=a"))[1].prefix_cache
    assert _run(_small_cfg(tmp_path, flat_dataset, "model.freeze=0.5", "name=b"))[1].prefix_cache.source == "reused"
    monkeypatch.setattr(keras, "__version__", "0.0.0-another")
    other = _run(_small_cfg(tmp_path, flat_dataset, "model.freeze=0.5", "name=c"))[1].prefix_cache
    assert other.source == "images" and other.folder != first.folder


@pytest.mark.slow
def test_falls_back_when_over_budget_or_unwritable_and_says_why(tmp_path, flat_dataset, monkeypatch, caplog):
    m = _run(_small_cfg(tmp_path, flat_dataset, "train.prefix_cache.max_gb=0.0001", "name=budget"))[1]
    assert m.prefix_cache.used is False
    assert "need 0.8 MB for 24 images, more than the cache's budget (train.prefix_cache.max_gb=0.0001)" in (
        m.prefix_cache.reason
    )
    assert "no cached prefix (activations at block4_conv2 need 0.8 MB" in caplog.text  # a warning: act on it
    assert [r.levelname for r in caplog.records if "no cached prefix" in r.getMessage()] == ["WARNING"]
    assert len(m.history.loss) == 2  # and the run trained the ordinary way

    cache = tmp_path / "cache2"
    cache.mkdir()
    (cache / "activations").write_text("a file where the cache folder should be")
    m = _run(_small_cfg(tmp_path, flat_dataset, f"data.cache_dir={cache}", "name=unwritable"))[1]
    assert m.prefix_cache.used is False
    assert m.prefix_cache.reason.startswith("could not write the activation cache")
    assert "no cached prefix (could not write" in caplog.text


@pytest.mark.slow
def test_float16_storage_halves_the_cache_and_stays_close(tmp_path, flat_dataset):
    exact = _run(_small_cfg(tmp_path, flat_dataset, "name=f32"))[1]
    half = _run(_small_cfg(tmp_path, flat_dataset, "train.prefix_cache.dtype=float16", "name=f16"))[1]
    assert (exact.prefix_cache.dtype, half.prefix_cache.dtype) == ("float32", "float16")
    assert half.prefix_cache.mb == pytest.approx(exact.prefix_cache.mb / 2, abs=0.1)
    stored = np.load(os.path.join(half.prefix_cache.folder, "frontier0.npy"))
    full = np.load(os.path.join(exact.prefix_cache.folder, "frontier0.npy"))
    assert stored.dtype == np.float16 and full.dtype == np.float32
    # float16 keeps 11 significant bits: a relative rounding error of at most 2**-11.
    big = np.abs(full) > 1e-3
    assert np.abs(stored[big] / full[big] - 1).max() <= 2**-11
    # The first epoch's loss barely moves; later epochs drift further (training amplifies).
    assert half.history.loss[0] == pytest.approx(exact.history.loss[0], rel=1e-2)
    # A deeper cut is computed from the float16 entry (cast back to the float32 model).
    deeper = _run(
        _small_cfg(tmp_path, flat_dataset, "train.prefix_cache.dtype=float16", "model.freeze=0.7", "name=f16deep")
    )[1].prefix_cache
    assert (deeper.source, deeper.dtype) == ("block4_conv2", "float16")


# --------------------------------------------------------------------------- the store and the rules


def test_float16_overflow_falls_back_instead_of_storing_infinities(tmp_path):
    import keras

    from tlexp.pipeline import ActivationStore, Fallback, prefix_activations

    inputs = keras.Input((4,))
    x = keras.layers.Rescaling(1e6, name="huge")(inputs)  # activations far beyond float16's 65504
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
    model.layers[1].trainable = False
    batches = [(np.ones((3, 4), np.float32), np.zeros(3), np.arange(3))]
    store = ActivationStore(tmp_path, max_bytes=10**6)
    with pytest.raises(Fallback, match=r"exceed the float16 range \(max \|x\| = 1e\+06\)"):
        prefix_activations(
            model,
            2,
            store=store,
            images=lambda: batches,
            failures=dict,
            n_files=3,
            data_key="k",
            dtype="float16",
            batch_size=3,
        )
    assert not list((tmp_path / "activations").iterdir())  # the half-built entry is gone
    entry = prefix_activations(
        model,
        2,
        store=store,
        images=lambda: batches,
        failures=dict,
        n_files=3,
        data_key="k",
        dtype="auto",
        batch_size=3,
    )
    assert entry.dtype == "float32" and entry.ok.all() and float(entry.arrays[0].max()) == 1e6


def test_store_evicts_least_recently_used_entries(tmp_path):
    from tlexp.pipeline import ActivationStore

    store = ActivationStore(tmp_path, max_bytes=3000)

    def fill(files, ok, failed):
        files[0].write([0], np.ones((1, 250)))
        ok[:] = True
        return 0.001

    for i, key in enumerate(("a" * 64, "b" * 64, "c" * 64)):  # 1000 bytes of data (+ ~450 of headers) each
        store.build(key, [((250,), "float32")], 1, "layer", fill, "images")
        os.utime(store.folder(key) / "meta.json", (1000 * (i + 1), 1000 * (i + 1)))  # used in this order
    kept = sorted(p.name[:1] for p in store.root.iterdir())
    assert kept == ["b", "c"]  # "a" was the least recently used
    assert store.open("c" * 64).arrays[0].sum() == 250


def test_blocker_reasons():
    import keras

    from tlexp.pipeline import blocker

    inputs = keras.Input((4,))
    drop = keras.layers.Dropout(0.5, name="drop")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(drop))
    for layer in model.layers[:2]:
        layer.trainable = False
    kw = {"enabled": True, "batchnorm": "inference", "distribute": "none"}
    assert blocker(model, 2, **kw) is None  # dropout runs in inference mode there
    assert blocker(model, 2, **{**kw, "batchnorm": "train"}) == "frozen-part layer drop (Dropout) is random in training"
    assert blocker(model, 1, **kw) == "no backbone layer is frozen"
    assert blocker(model, 2, **{**kw, "enabled": False}) == "train.prefix_cache.enabled is false"
    assert "MirroredStrategy" in blocker(model, 2, **{**kw, "distribute": "mirrored"})
    model.layers[1].trainable = True
    assert blocker(model, 2, **kw) == "frozen-part layer drop is trainable"
