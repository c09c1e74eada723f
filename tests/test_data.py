"""Dataset discovery (both layouts), the seeded stratified split, image decoding."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from tlexp.data.dataset import assign_splits, discover
from tlexp.data.decode import load_image
from tlexp.errors import DataError

from conftest import write_image


def test_flat_layout_detected(flat_dataset):
    ds = discover(flat_dataset)
    assert ds.layout == "flat"
    assert ds.class_names == ["cat", "dog"]
    assert len(ds.paths) == 24
    assert all(p.startswith(ds.class_names[y] + ".") for p, y in zip(ds.paths, ds.labels, strict=True))


def test_folder_layout_detected(folder_dataset):
    ds = discover(folder_dataset)
    assert ds.layout == "folders"
    assert ds.class_names == ["Bird", "Cat", "Dog"]
    assert np.bincount(ds.labels).tolist() == [6, 10, 8]  # Thumbs.db is not an image
    assert all(p.split("/")[0] == ds.class_names[y] for p, y in zip(ds.paths, ds.labels, strict=True))


def test_nested_folders_and_hidden_files(tmp_path):
    root = tmp_path / "d"
    write_image(root / "a" / "sub" / "x.jpg", (1, 2, 3))
    write_image(root / "a" / ".hidden.jpg", (1, 2, 3))
    write_image(root / "b" / "y.png", (1, 2, 3))
    ds = discover(root)
    assert ds.paths == ["a/sub/x.jpg", "b/y.png"]


def test_mixed_layout_needs_explicit_choice(flat_dataset):
    write_image(flat_dataset / "extra" / "z.jpg", (1, 2, 3))
    with pytest.raises(DataError, match=r"sub-folders \(extra\); set the layout to 'flat' or 'folders' \(data.layout"):
        discover(flat_dataset)
    assert discover(flat_dataset, "flat").layout == "flat"


def test_unlabelled_flat_files_are_left_out_with_a_warning(tmp_path, caplog):
    """A flat-layout name without 'class.' prefix has no label: discover leaves the file out
    and says so once, as the data check reports it under '(no label)'."""
    for name in ("cat.0.jpg", "cat.1.jpg", "dog.0.jpg", "img001.jpg", "photo.png"):
        write_image(tmp_path / name, (1, 2, 3))
    with caplog.at_level(logging.INFO, logger="tlexp"):
        ds = discover(tmp_path)
    assert ds.layout == "flat" and ds.class_names == ["cat", "dog"]
    assert ds.paths == ["cat.0.jpg", "cat.1.jpg", "dog.0.jpg"] and ds.labels.tolist() == [0, 0, 1]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "left out 2 of 5 image file(s)" in warnings[0] and "e.g. 'img001.jpg'" in warnings[0]


def test_flat_files_all_unlabelled_or_of_one_class(tmp_path):
    write_image(tmp_path / "img001.jpg", (1, 2, 3))
    write_image(tmp_path / "img002.jpg", (1, 2, 3))
    with pytest.raises(DataError, match=r"None of the 2 image file\(s\) .* has a label \(e.g. 'img001.jpg'\)"):
        discover(tmp_path)
    write_image(tmp_path / "cat.1.jpg", (1, 2, 3))
    with pytest.raises(DataError, match=r"only one class \('cat'\)"):
        discover(tmp_path, "flat")


def test_bad_layout_is_refused(flat_dataset):
    with pytest.raises(ValueError, match="The 'layout' parameter must be one of .* Got 'kaggle' instead"):
        discover(flat_dataset, "kaggle")


def test_single_class_and_empty_folder(tmp_path):
    with pytest.raises(DataError, match="No images"):
        discover(tmp_path)
    write_image(tmp_path / "cat" / "1.jpg", (1, 2, 3))
    with pytest.raises(DataError, match=r"only one class \('cat'\)"):
        discover(tmp_path)


def test_split_is_stratified_and_deterministic(folder_dataset):
    ds = discover(folder_dataset)
    a = assign_splits(ds, 0.2, 0.2, seed=7)
    b = assign_splits(discover(folder_dataset), 0.2, 0.2, seed=7)
    assert a.paths == b.paths and a.split.tolist() == b.split.tolist()
    counts = a.counts()
    # round(n * 0.2): Bird 6 -> 1, Cat 10 -> 2, Dog 8 -> 2 in each of val and test.
    assert counts["val"] == {"Bird": 1, "Cat": 2, "Dog": 2}
    assert counts["test"] == {"Bird": 1, "Cat": 2, "Dog": 2}
    assert counts["train"] == {"Bird": 4, "Cat": 6, "Dog": 4}
    c = assign_splits(ds, 0.2, 0.2, seed=8)
    assert c.split.tolist() != a.split.tolist()  # another seed, another split


def test_limit_per_class(flat_dataset):
    ds = assign_splits(discover(flat_dataset), 0.2, 0.2, seed=0, limit_per_class=5)
    assert sum(sum(c.values()) for c in ds.counts().values()) == 10
    assert {s: sum(c.values()) for s, c in ds.counts().items()} == {"train": 6, "val": 2, "test": 2}


def test_class_too_small_for_three_splits(tmp_path):
    for cls in ("a", "b"):
        for i in range(2):
            write_image(tmp_path / cls / f"{i}.jpg", (1, 2, 3))
    with pytest.raises(DataError, match=r"Class 'a' has 2 image\(s\): too few"):
        assign_splits(discover(tmp_path), 0.1, 0.1, seed=0)


def test_load_image_converts_modes_and_sizes(tmp_path):
    from PIL import Image

    Image.new("L", (50, 20), 128).save(tmp_path / "gray.jpg")
    Image.new("CMYK", (30, 30), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    Image.new("RGBA", (30, 60), (0, 0, 255, 10)).save(tmp_path / "rgba.png")
    Image.new("P", (30, 30)).save(tmp_path / "pal.gif")
    Image.new("RGB", (30, 30), (0, 255, 0)).save(tmp_path / "png_named.jpg", format="PNG")
    for name in ("gray.jpg", "cmyk.jpg", "rgba.png", "pal.gif", "png_named.jpg"):
        arr = load_image(tmp_path / name, 32)
        assert arr.shape == (32, 32, 3) and arr.dtype == np.uint8, name
    assert load_image(tmp_path / "gray.jpg", 32)[0, 0].tolist() == [128, 128, 128]
    assert load_image(tmp_path / "png_named.jpg", 32)[5, 5].tolist() == [0, 255, 0]


def test_load_image_applies_exif_orientation(tmp_path):
    from PIL import Image

    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 20, 20))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the blue half ends up on top
    img.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    arr = load_image(tmp_path / "rot.jpg", 32)
    assert arr[2, 16, 2] > 200 and arr[2, 16, 0] < 60  # top is blue
    assert arr[29, 16, 0] > 200  # bottom is red


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "cannot identify image file"),
        (b"\xff\xd8\xff\xe0 truncated", "(?i)truncated"),  # a JPEG header, then nothing
        (b"hello, not an image", "cannot identify image file"),
    ],
)
def test_load_image_raises_on_bad_files(tmp_path, content, match):
    # Pillow's own errors (UnidentifiedImageError is an OSError), saying what is wrong with the file.
    (tmp_path / "bad.jpg").write_bytes(content)
    with pytest.raises(OSError, match=match):
        load_image(tmp_path / "bad.jpg", 32)
