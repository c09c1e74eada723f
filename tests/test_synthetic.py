"""The built-in demo dataset."""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tlexp.data import _demo as demo
from tlexp.data import discover, ensure_demo_dataset, load_image
from tlexp.errors import DataError


def digest(root):
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(root.iterdir())}


def test_demo_dataset_is_real_jpegs_in_flat_layout(tmp_path):
    root = ensure_demo_dataset(tmp_path / "demo", per_class=6)
    ds = discover(root)
    assert ds.layout == "flat" and ds.class_names == ["disc", "stripes"]
    assert np.bincount(ds.labels).tolist() == [6, 6]
    assert (root / "disc.0.jpg").read_bytes()[:2] == b"\xff\xd8"  # JPEG signature
    img = load_image(root / "disc.0.jpg", 32)
    assert img.shape == (32, 32, 3)


def test_demo_dataset_is_reproducible_and_reused(tmp_path):
    a = digest(ensure_demo_dataset(tmp_path / "a", per_class=4))
    b = digest(ensure_demo_dataset(tmp_path / "b", per_class=4))
    assert a == b
    before = digest(tmp_path / "a")
    ensure_demo_dataset(tmp_path / "a", per_class=4)  # reused, not rewritten
    assert digest(tmp_path / "a") == before


def test_classes_differ_in_colour(tmp_path):
    root = ensure_demo_dataset(tmp_path / "d", per_class=20)
    mean = {
        c: np.mean([load_image(root / f"{c}.{i}.jpg", 32).reshape(-1, 3).mean(0) for i in range(20)], axis=0)
        for c in ("disc", "stripes")
    }
    assert mean["disc"][0] - mean["disc"][2] > mean["stripes"][0] - mean["stripes"][2] + 20


def test_never_writes_into_user_data(tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "cat.0.jpg").write_bytes(b"precious")
    with pytest.raises(DataError, match="is not a tlexp demo dataset"):
        ensure_demo_dataset(user, per_class=4)
    assert [p.name for p in user.iterdir()] == ["cat.0.jpg"]


def test_other_size_is_refused(tmp_path):
    ensure_demo_dataset(tmp_path / "d", per_class=4)
    with pytest.raises(DataError, match="per_class=4, but the config asks for data.synthetic.per_class=5"):
        ensure_demo_dataset(tmp_path / "d", per_class=5)


@pytest.mark.parametrize("before", ["missing", "empty"])
def test_two_concurrent_builds_both_succeed(tmp_path, monkeypatch, before):
    """Two runs of a sweep generating the demo data at once: both succeed, one dataset results."""
    root = tmp_path / "demo"
    if before == "empty":
        root.mkdir()
    barrier = threading.Barrier(2)
    draw = demo._draw

    def draw_together(label, index):
        if (label, index) == (0, 0):
            try:  # both builds are under way before either finishes
                barrier.wait(timeout=10)
            except threading.BrokenBarrierError:
                pass
        return draw(label, index)

    monkeypatch.setattr(demo, "_draw", draw_together)
    with ThreadPoolExecutor(2) as pool:
        results = [f.result() for f in [pool.submit(ensure_demo_dataset, root, 5) for _ in range(2)]]
    assert results == [root, root]
    assert not barrier.broken  # the race did happen
    monkeypatch.setattr(demo, "_draw", draw)
    assert digest(root) == digest(ensure_demo_dataset(tmp_path / "reference", per_class=5))
    assert len(digest(root)) == 11  # 5 per class and the marker
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo", "reference"]  # no build left behind


def test_a_failed_build_leaves_nothing(tmp_path, monkeypatch):
    def broken(label, index):
        if index == 2:
            raise KeyboardInterrupt  # Ctrl-C halfway through
        return draw(label, index)

    draw = demo._draw
    monkeypatch.setattr(demo, "_draw", broken)
    with pytest.raises(KeyboardInterrupt):
        ensure_demo_dataset(tmp_path / "demo", per_class=4)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(demo, "_draw", draw)
    assert len(digest(ensure_demo_dataset(tmp_path / "demo", per_class=4))) == 9  # the next run builds it
