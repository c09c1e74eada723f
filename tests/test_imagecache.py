"""The decoded-image cache: decoded once, reused, invalidated by any change, never blocked."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

from tlexp import files as files_mod
from tlexp.data import CachedDecoder, ImageCache, cache_key, ensure_image_cache, load_image
from tlexp.data import _imagecache as imagecache

from conftest import write_image


def files_of(root):
    return [(p.name, hashlib.sha256(p.read_bytes()).hexdigest()) for p in sorted(root.glob("*.jpg"))]


@pytest.fixture
def images(tmp_path):
    root = tmp_path / "imgs"
    for i in range(6):
        write_image(root / f"cat.{i}.jpg", (200, 50, 40), size=(40 + i, 30), seed=i)
    return root


def test_rows_are_what_load_image_gives(tmp_path, images):
    cache = ensure_image_cache(images, files_of(images), 32, tmp_path / "c")
    assert cache.images.shape == (6, 32, 32, 3) and cache.images.dtype == np.uint8
    for p, _ in files_of(images):
        np.testing.assert_array_equal(cache.images[cache.index[p]], load_image(images / p, 32))
    dec = CachedDecoder(cache, ["cat.3.jpg", "cat.0.jpg"])
    img, ok = dec(np.int64(0))
    assert ok and np.array_equal(img, load_image(images / "cat.3.jpg", 32))


def test_second_use_decodes_nothing(tmp_path, images, monkeypatch):
    first = ensure_image_cache(images, files_of(images), 32, tmp_path / "c")

    def fail(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(imagecache, "load_image", fail)
    again = ensure_image_cache(images, files_of(images), 32, tmp_path / "c")
    assert again.folder == first.folder


def test_any_change_selects_a_new_cache(tmp_path, images):
    a = ensure_image_cache(images, files_of(images), 32, tmp_path / "c")
    b = ensure_image_cache(images, files_of(images), 48, tmp_path / "c")  # resize settings
    write_image(images / "cat.2.jpg", (10, 10, 250), seed=99)  # content of one file
    c = ensure_image_cache(images, files_of(images), 32, tmp_path / "c")
    assert len({a.folder, b.folder, c.folder}) == 3
    np.testing.assert_array_equal(c.images[c.index["cat.2.jpg"]], load_image(images / "cat.2.jpg", 32))
    assert cache_key(files_of(images), 32) == c.folder.name


def test_concurrent_build_uses_the_one_that_finished_first(tmp_path, images, monkeypatch):
    import shutil

    def other_process_won(src, dst):
        shutil.copytree(src, dst)  # the other build's rename landed first
        raise OSError(39, "Directory not empty")

    monkeypatch.setattr(files_mod.os, "rename", other_process_won)
    cache = ensure_image_cache(images, files_of(images), 32, tmp_path / "c")
    monkeypatch.undo()
    assert cache.folder.name == cache_key(files_of(images), 32)
    assert [p.name for p in (tmp_path / "c" / "images").iterdir()] == [cache.folder.name]  # our copy removed


def test_killed_build_never_blocks(tmp_path, images):
    files = files_of(images)
    parent = tmp_path / "c" / "images"
    stale = parent / f".build-{cache_key(files, 32)}-killed"
    stale.mkdir(parents=True)
    (stale / "images.u8").write_bytes(b"half")  # what a killed build leaves
    cache = ensure_image_cache(images, files, 32, tmp_path / "c")
    assert (cache.folder / "index.json").is_file()
    os.utime(stale, (0, 0))
    files_mod._remove_stale_builds(parent)
    assert not stale.exists()  # old leftovers are cleaned up


def test_file_broken_after_the_check_is_marked_not_ok(tmp_path, images):
    files = files_of(images)
    (images / "cat.4.jpg").write_bytes(b"")  # changed after its hash was taken
    cache = ensure_image_cache(images, files, 32, tmp_path / "c")
    assert "cat.4.jpg" in cache.errors and not cache.ok[cache.index["cat.4.jpg"]]
    dec = CachedDecoder(cache, [p for p, _ in files])
    assert list(dec.failed) == [4]
    _, ok = dec(np.int64(4))
    assert not ok
    # Reopened from disk, the failure is still known: the file stays marked, the others fine.
    reopened = ImageCache(cache.folder)
    assert reopened.errors == cache.errors and reopened.ok.tolist() == cache.ok.tolist()
    assert reopened.ok.sum() == len(files) - 1
    np.testing.assert_array_equal(reopened.images, cache.images)


@pytest.mark.parametrize("module", ["PIL", "numpy"])
def test_cache_of_another_pillow_or_numpy_is_never_reused(tmp_path, images, monkeypatch, module):
    """Pixels come from Pillow's decoder and resampling and NumPy's conversion: another version
    may give other pixels, so it gets a cache (and an activation-cache identity) of its own."""
    import importlib

    from tlexp.data import decoder_versions, image_key

    files = files_of(images)
    first = ensure_image_cache(images, files, 32, tmp_path / "c")
    key, ident = cache_key(files, 32), image_key([p for p, _ in files], [h for _, h in files], 32)
    monkeypatch.setattr(importlib.import_module(module), "__version__", "0.0.1")
    assert decoder_versions()["pillow" if module == "PIL" else "numpy"] == "0.0.1"
    assert cache_key(files, 32) != key
    assert image_key([p for p, _ in files], [h for _, h in files], 32) != ident
    decoded = []
    monkeypatch.setattr(imagecache, "load_image", lambda path, size: decoded.append(path) or load_image(path, size))
    other = ensure_image_cache(images, files, 32, tmp_path / "c")
    assert other.folder != first.folder and len(decoded) == 6  # built anew, the old one not read
    assert sorted(p.name for p in (tmp_path / "c" / "images").iterdir()) == sorted(
        [first.folder.name, other.folder.name]
    )
