"""The activation cache at scale: rows streamed from disk, the disk budget, and caching only where it pays."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from tlexp.pipeline import ActivationStore, Fallback, RowFile, prefix_activations
from tlexp.pipeline import _cachecost as cachecost

# --------------------------------------------------------------------------- rows on disk


def test_rowfile_reads_and_writes_any_rows_like_the_array(tmp_path):
    a = np.lib.format.open_memmap(tmp_path / "a.npy", mode="w+", dtype="float32", shape=(50, 3, 4))
    del a
    rows = RowFile.of(np.load(tmp_path / "a.npy", mmap_mode="r"), writable=True)
    values = np.random.default_rng(0).normal(size=(50, 3, 4)).astype("float32")
    order = np.random.default_rng(1).permutation(50)
    rows.write(order[:25], values[order[:25]])  # scattered rows
    rest = np.sort(order[25:])
    rows.write(rest, values[rest])  # runs of consecutive rows
    rows.close()
    on_disk = np.load(tmp_path / "a.npy")
    np.testing.assert_array_equal(on_disk, values)
    reader = RowFile.of(np.load(tmp_path / "a.npy", mmap_mode="r"))
    pick = np.array([7, 8, 9, 3, 3, 49, 0, 1])  # runs, a repeat, both ends
    np.testing.assert_array_equal(reader.read(pick), values[pick])
    assert reader.read([]).shape == (0, 3, 4)


def test_rowfile_says_when_an_entry_is_truncated(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((4, 10), "float32"))
    reader = RowFile.of(np.load(tmp_path / "a.npy", mmap_mode="r"))
    os.truncate(tmp_path / "a.npy", os.path.getsize(tmp_path / "a.npy") - 40)
    with pytest.raises(OSError, match=r"ends before row 3: the cache entry is truncated"):
        reader.read([3])


def _tiny_model():
    import keras

    inputs = keras.Input((4,))
    x = keras.layers.Dense(6, name="frozen")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
    model.layers[1].trainable = False
    return model


def _batches(n=12, size=4):
    x = np.random.default_rng(0).normal(size=(n, 4)).astype("float32")
    return lambda: [
        (x[s : s + size], np.zeros(len(x[s : s + size])), np.arange(s, min(s + size, n))) for s in range(0, n, size)
    ]


def _entry(model, store, **kw):
    args = dict(images=_batches(), failures=dict, n_files=12, data_key="k", dtype="auto", batch_size=4)
    return prefix_activations(model, 2, store=store, **{**args, **kw})


def test_training_reads_each_batch_from_disk_not_the_split(tmp_path):
    """The streamed dataset reads the rows of one batch at a time, and gives the entry's values."""
    from tlexp.pipeline import ActivationSource, BatchPlan, TFBatches

    model = _tiny_model()
    entry = _entry(model, ActivationStore(tmp_path, 10**6))
    reads = []
    original = entry.read
    entry.read = lambda rows: reads.append(len(rows)) or original(rows)
    labels = np.arange(12) % 2
    split = np.array([0, 2, 3, 5, 6, 8, 9, 11])
    source = ActivationSource(entry, labels, ["float32"])
    plan = BatchPlan(3, seed=1, shuffle=True, label_dtype="float32")
    got = list(TFBatches(source, split, plan).dataset.as_numpy_iterator())
    assert sorted(reads) == [2, 3, 3]  # one read per batch, never the whole split
    x = np.concatenate([b[0] for b in got])
    i = np.concatenate([b[2] for b in got])
    assert sorted(i.tolist()) == split.tolist()
    np.testing.assert_array_equal(x, np.asarray(entry.arrays[0])[i])
    np.testing.assert_array_equal(np.concatenate([b[1] for b in got]), labels[i].astype("float32"))


# --------------------------------------------------------------------------- the disk budget


def test_lowered_budget_trims_existing_entries_and_refuses_the_big_one(tmp_path, caplog):
    caplog.set_level("INFO", logger="tlexp")
    model = _tiny_model()
    first = _entry(model, ActivationStore(tmp_path, 10**6))
    assert first.source == "images" and (tmp_path / "activations" / first.folder.name).is_dir()
    # 12 images x 6 floats = 288 bytes of data: a 100-byte budget holds no entry.
    with pytest.raises(Fallback, match=r"need 0\.0 MB for 12 images, more than the cache's budget") as e:
        _entry(model, ActivationStore(tmp_path, 100))
    assert e.value.warn
    assert not first.folder.exists()  # the existing entry did not survive the lower budget
    assert "removed cached activations" in caplog.text


def test_auto_budget_is_free_space_plus_entries_less_a_margin(tmp_path, monkeypatch):
    model = _tiny_model()
    store = ActivationStore(tmp_path)  # max_gb: auto
    entry = _entry(model, store)
    held = sum(f.stat().st_size for f in entry.folder.iterdir())
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(total=10**12, free=3 * 10**9))
    # 5 % of a 1 TB disk is 50 GB, more than the 10 GB cap: 10 GB are kept free.
    assert store.max_bytes == 0 + held  # 3 GB free < 10 GB margin: only what is already there
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(total=10**11, free=20 * 10**9))
    assert store.max_bytes == held + 20 * 10**9 - 5 * 10**9  # 5 % of 100 GB
    assert "max_gb=auto: 20.0 GB free on the disk of" in store.budget_text()


# --------------------------------------------------------------------------- caching only where it pays


def test_cost_model_weighs_reads_against_recomputing():
    c = cachecost.CacheCost(
        n_images=1000,
        bytes_per_image=10**6,
        compute_s=0.002,
        build_s=0.002,
        write_rate=1e9,
        read_rate=2e9,
        read_from="disk",
        passes=3,
    )
    # cached: 1000 x (2 ms build + 1 ms write + 3 x 0.5 ms read) = 4.5 s; recomputed 1000 x 3 x 2 ms = 6 s
    assert (c.cached_s, c.recompute_s, c.pays) == (pytest.approx(4.5), pytest.approx(6.0), True)
    fast_gpu = c.__class__(**{**c.__dict__, "compute_s": 0.0002, "build_s": 0.0002})
    assert fast_gpu.recompute_s == pytest.approx(0.6) and not fast_gpu.pays
    assert "1 MB/image read at 2 GB/s (disk) = 0.5 ms/image against 0.2 ms/image" in fast_gpu.describe()
    reused = c.__class__(**{**c.__dict__, "build_s": 0.0})  # the entry exists: only reads left
    assert reused.cached_s == pytest.approx(1.5)
    assert cachecost.run_passes(epochs=2, n_train=600, n_val=200, n_files=1000) == pytest.approx(2.6)


def test_auto_refuses_a_cache_slower_than_recomputing_and_says_why(tmp_path, monkeypatch):
    model = _tiny_model()
    store = ActivationStore(tmp_path, 10**6)
    monkeypatch.setattr(cachecost, "disk_rates", lambda folder: (1e9, 100.0, 100.0))  # a 100 B/s disk
    with pytest.raises(Fallback, match=r"caching at frozen does not pay here: 2\.4e-05 MB/image read at 1e-07 GB/s"):
        _entry(model, store, passes=2.0)
    assert list((tmp_path / "activations").iterdir()) == []  # the half-built entry is gone
    entry = _entry(model, store)  # passes=None: enabled=true forces it
    assert entry.decision is None and entry.compute_s > 0
    # Reusing the entry is decided from the compute time measured when it was built.
    monkeypatch.setattr(cachecost, "disk_rates", lambda folder: (1e9, 1e12, 1e12))
    again = _entry(model, store, passes=2.0)
    assert again.source == "reused" and again.compute_s == entry.compute_s
    assert f"against {1e3 * entry.compute_s:.3g} ms/image to compute the prefix" in again.decision
    monkeypatch.setattr(cachecost, "disk_rates", lambda folder: (1e9, 100.0, 100.0))
    with pytest.raises(Fallback, match="does not pay"):
        _entry(model, store, passes=2.0)


def test_disk_rates_are_measured_once_per_disk_and_leave_nothing(tmp_path):
    cachecost._rates.clear()
    write, cold, warm = cachecost.disk_rates(tmp_path)
    assert min(write, cold, warm) > 0
    assert list(tmp_path.iterdir()) == []  # the probe file is removed
    assert cachecost.disk_rates(tmp_path / "sub") == (write, cold, warm)  # same disk: not measured again
