"""The data check on a torture dataset: every kind of broken, odd and duplicate file."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import re
import stat
from pathlib import Path

import numpy as np
import pytest

from tlexp.data import (
    CUSTOM,
    HASH_BITS,
    KAGGLE,
    NO_LABEL,
    PETIMAGES,
    check_dataset,
    detect_variant,
    discover,
    format_summary,
    load_image,
)
from tlexp.data import _check as datacheck
from tlexp.data import _checkreport as checkreport
from tlexp.errors import DataError
from tlexp.files import read_csv
from tlexp.results import load_record

from conftest import tlexp_logger_kept, write_image

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0  # root reads a chmod 000 file anyway


def _noise(seed: int, size: tuple[int, int] = (40, 30)) -> np.ndarray:
    """RGB noise, shape (height, width, 3); a different seed gives different bytes."""
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def _save(path: Path, img, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kwargs)
    return path


def _jpeg_bytes(seed: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(_noise(seed)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


# path -> (status, detail prefix); width/height checked separately where they matter.
EXPECTED = {
    "cat/good.jpg": ("good", ""),
    "cat/cmyk.jpg": ("converted", "CMYK->RGB"),
    "cat/gray.jpg": ("converted", "grayscale->RGB"),
    "cat/palette.jpg": ("converted", "GIF named .jpg; palette->RGB"),
    "cat/rgba.png": ("converted", "RGBA->RGB"),
    "cat/deep.png": ("converted", "16-bit->RGB"),
    "cat/rotated.jpg": ("converted", "EXIF-rotated"),
    "cat/png.jpg": ("converted", "PNG named .jpg"),
    "cat/bmp.jpg": ("converted", "BMP named .jpg"),
    "cat/empty.jpg": ("rejected", "empty"),
    "cat/truncated.jpg": ("rejected", "truncated"),
    "cat/text.jpg": ("rejected", "not an image (text)"),
    "cat/page.jpg": ("rejected", "not an image (HTML)"),
    "cat/tiny.jpg": ("rejected", "too small (4x4"),
    "cat/loop.jpg": ("rejected", "unreadable: symlink loop"),
    "cat/gone.jpg": ("rejected", "unreadable: broken symlink"),
    "cat/locked.jpg": ("good", "") if IS_ROOT else ("rejected", "unreadable: Permission denied"),
    "cat/same.jpg": ("good", ""),
    "dog/good.jpg": ("good", ""),
    "dog/same.jpg": ("good", ""),
    "dog/sub/nested.jpg": ("good", ""),
    "dog/alias.jpg": ("good", ""),  # a symlink to sub/nested.jpg: checked, and a duplicate of it
    "dog/pipe.jpg": ("rejected", "unreadable: not a regular file"),
    "dog/upper.JPEG": ("good", ""),
}


@pytest.fixture
def torture(tmp_path: Path) -> Path:
    """Folders layout cat/ and dog/ holding one file of every kind the check must handle."""
    from PIL import Image

    root = tmp_path / "pets"
    cat, dog = root / "cat", root / "dog"
    _save(cat / "good.jpg", Image.fromarray(_noise(1)), quality=90)
    _save(cat / "cmyk.jpg", Image.fromarray(_noise(2)).convert("CMYK"))
    _save(cat / "gray.jpg", Image.fromarray(_noise(3)).convert("L"))
    _save(cat / "palette.jpg", Image.fromarray(_noise(4)).convert("P"), format="GIF")
    _save(cat / "rgba.png", Image.fromarray(np.dstack([_noise(5), _noise(6)[..., 0]]), "RGBA"))
    deep = np.arange(40 * 30, dtype=np.uint16).reshape(30, 40) * 50  # a real 16-bit range
    _save(cat / "deep.png", Image.fromarray(deep))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    _save(cat / "rotated.jpg", Image.fromarray(_noise(7, (40, 30))), exif=exif)
    _save(cat / "png.jpg", Image.fromarray(_noise(8)), format="PNG")
    _save(cat / "bmp.jpg", Image.fromarray(_noise(9)), format="BMP")
    (cat / "empty.jpg").write_bytes(b"")
    good = _jpeg_bytes(10)
    (cat / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (cat / "text.jpg").write_text("this is a note, not a picture\n")
    (cat / "page.jpg").write_text("<!DOCTYPE html>\n<html><body>403 Forbidden</body></html>\n")
    _save(cat / "tiny.jpg", Image.fromarray(_noise(11, (4, 4))))
    (cat / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0 windows thumbnail cache")
    _save(cat / ".hidden.jpg", Image.fromarray(_noise(12)))
    os.symlink("loop.jpg", cat / "loop.jpg")  # points to itself: ELOOP
    os.symlink("..", cat / "up")  # a folder link to the parent: the walk must not loop
    os.symlink("nowhere.jpg", cat / "gone.jpg")
    _save(cat / "locked.jpg", Image.fromarray(_noise(13)))
    os.chmod(cat / "locked.jpg", 0)
    (cat / "same.jpg").write_bytes(_jpeg_bytes(14))
    _save(dog / "good.jpg", Image.fromarray(_noise(15)))
    (dog / "same.jpg").write_bytes(_jpeg_bytes(14))  # the same image labelled dog
    _save(dog / "sub" / "nested.jpg", Image.fromarray(_noise(16)))
    os.symlink("sub/nested.jpg", dog / "alias.jpg")
    (dog / "notes.txt").write_text("ignored")
    os.mkfifo(dog / "pipe.jpg")  # opening a FIFO blocks: the check must not
    _save(dog / "upper.JPEG", Image.fromarray(_noise(17)))
    return root


def _snapshot(root: Path) -> dict[str, tuple]:
    """Names, modes and bytes (or link targets) of everything under ``root``."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[str(p)] = ("link", st.st_mode, os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                readable = IS_ROOT or st.st_mode & stat.S_IRUSR
                out[str(p)] = ("file", st.st_mode, p.read_bytes() if readable else None)
            else:
                out[str(p)] = ("dir", st.st_mode, None)
    return out


def test_every_verdict(torture):
    before = _snapshot(torture)
    res = check_dataset(torture, workers=4)
    got = {f.path: f for f in res.files}
    assert sorted(got) == sorted(EXPECTED)  # no Thumbs.db, .hidden.jpg, notes.txt, nothing via up/
    for path, (status, prefix) in EXPECTED.items():
        assert (got[path].status, got[path].detail[: len(prefix)]) == (status, prefix), path
        assert (got[path].detail == "") == (status == "good"), path
    assert (got["cat/rotated.jpg"].width, got["cat/rotated.jpg"].height) == (30, 40)  # EXIF swaps the sides
    assert (got["cat/good.jpg"].width, got["cat/good.jpg"].height) == (40, 30)
    assert (got["cat/tiny.jpg"].width, got["cat/tiny.jpg"].height) == (4, 4)
    assert got["cat/deep.png"].detail == "16-bit->RGB"
    deep = load_image(torture / "cat/deep.png", 32)  # scaled, not clipped to a white image
    assert 0 < deep.mean() < 250 and deep.max() > deep.min()
    assert got["cat/loop.jpg"].size == -1 and got["cat/loop.jpg"].sha256 == ""
    assert got["cat/empty.jpg"].size == 0
    assert all(len(f.sha256) == 64 for f in res.files if f.size >= 0)

    assert res.layout == "folders" and res.class_names == ["cat", "dog"] and res.variant == CUSTOM
    assert res.reused == 0
    s = res.summary()
    assert s["cat"]["ignored"] == 2 and s["dog"]["ignored"] == 1  # Thumbs.db + .hidden.jpg; notes.txt
    assert s["total"]["good"] + s["total"]["converted"] + s["total"]["rejected"] == len(EXPECTED)
    assert s["total"]["rejected"] == len(res.rejected()) == sum(v[0] == "rejected" for v in EXPECTED.values())
    assert len(res.usable()) == s["total"]["good"] + s["total"]["converted"]
    for f in res.usable():  # the guarantee: what the check passes, training can load
        assert load_image(torture / f.path, 32).shape == (32, 32, 3)
    assert _snapshot(torture) == before  # nothing changed, moved, or created


@pytest.mark.parametrize("tree", ["torture", "flat_torture"])
def test_labels_match_discover(tree, request, caplog):
    """One scanner: discover lists exactly the check's candidates that have a label, in both
    layouts; an unlabelled flat file is left out with a warning (not an error)."""
    root = request.getfixturevalue(tree)
    with caplog.at_level(logging.WARNING, logger="tlexp"):
        ds = discover(root)
    res = check_dataset(root)
    assert ds.layout == res.layout and ds.class_names == res.class_names == ["cat", "dog"]
    assert [(p, ds.class_names[y]) for p, y in zip(ds.paths, ds.labels, strict=True)] == [
        (f.path, f.label) for f in res.files if f.label is not None
    ]
    unlabelled = [f.path for f in res.files if f.label is None]
    assert unlabelled == ([] if tree == "torture" else ["photo.jpg"])
    assert [r.getMessage().split(" in ")[0] for r in caplog.records] == (
        [] if tree == "torture" else ["data: left out 1 of 9 image file(s)"]
    )


def test_duplicates_and_csv_files(torture, tmp_path):
    res = check_dataset(torture)
    groups = [[f.path for f in g] for g in res.duplicates()]
    assert groups == [["cat/same.jpg", "dog/same.jpg"], ["dog/alias.jpg", "dog/sub/nested.jpg"]]
    assert [[f.label for f in g] for g in res.conflicting_duplicates()] == [["cat", "dog"]]

    before = _snapshot(torture)
    paths = checkreport.write_check(res, tmp_path / "out")
    assert _snapshot(torture) == before
    assert sorted(os.listdir(tmp_path / "out")) == [  # no temp files
        "duplicates.csv",
        "manifest.csv",
        "near_duplicates.csv",
        "rejected.csv",
    ]
    manifest = read_csv(paths["manifest"])
    assert list(manifest[0]) == ["path", "label", "size", "sha256", "status", "detail", "width", "height", "phash"]
    assert [(r["path"], r["status"]) for r in manifest] == [(f.path, f.status) for f in res.files]
    row = next(r for r in manifest if r["path"] == "cat/rotated.jpg")
    assert (row["label"], row["width"], row["height"], row["detail"]) == ("cat", "30", "40", "EXIF-rotated")
    rejected = read_csv(paths["rejected"])
    assert {r["path"]: r["reason"] for r in rejected} == {f.path: f.detail for f in res.rejected()}
    assert next(r for r in rejected if r["path"] == "cat/empty.jpg") == {
        "path": "cat/empty.jpg",
        "label": "cat",
        "reason": "empty",
    }
    dups = read_csv(paths["duplicates"])
    assert [(r["group"], r["path"], r["label"]) for r in dups] == [
        ("1", "cat/same.jpg", "cat"),
        ("1", "dog/same.jpg", "dog"),
        ("2", "dog/alias.jpg", "dog"),
        ("2", "dog/sub/nested.jpg", "dog"),
    ]
    assert dups[0]["sha256"] == dups[1]["sha256"] != dups[2]["sha256"]

    text = format_summary(res)
    assert "variant custom" in text and "empty 1" in text and "truncated 1" in text and "not an image 2" in text
    assert "2 group(s)" in text and "1 with different labels" in text
    assert "cat/same.jpg (cat) = dog/same.jpg (dog)" in text


@pytest.fixture
def flat_torture(tmp_path: Path) -> Path:
    """Flat layout: good, converted and truncated files, links that cannot be opened, a file
    without a label, files that are no images."""
    from PIL import Image

    root = tmp_path / "train"
    for i in range(2):
        write_image(root / f"cat.{i}.jpg", (200, 60, 40), seed=i)
        write_image(root / f"dog.{i}.jpg", (40, 80, 200), seed=10 + i)
    _save(root / "cat.2.jpg", Image.fromarray(_noise(3)).convert("CMYK"))
    (root / "dog.2.jpg").write_bytes(_jpeg_bytes(4)[:300])
    write_image(root / "photo.jpg", (1, 2, 3))  # no 'class.' prefix: no label
    os.symlink("cat.loop.jpg", root / "cat.loop.jpg")  # scandir().is_file() raises on this
    os.symlink("missing.jpg", root / "dog.gone.jpg")
    (root / "Thumbs.db").write_bytes(b"x")
    (root / "cat.notes.txt").write_text("x")
    return root


def test_flat_layout_survives_links_and_unlabelled_files(flat_torture):
    root = flat_torture
    before = _snapshot(root)

    res = check_dataset(root)
    got = {f.path: (f.label, f.status, f.detail.split(":")[0].split(" (")[0]) for f in res.files}
    assert got == {
        "cat.0.jpg": ("cat", "good", ""),
        "cat.1.jpg": ("cat", "good", ""),
        "dog.0.jpg": ("dog", "good", ""),
        "dog.1.jpg": ("dog", "good", ""),
        "cat.2.jpg": ("cat", "converted", "CMYK->RGB"),
        "dog.2.jpg": ("dog", "rejected", "truncated"),
        "photo.jpg": (None, "good", ""),
        "cat.loop.jpg": ("cat", "rejected", "unreadable"),
        "dog.gone.jpg": ("dog", "rejected", "unreadable"),
    }
    assert res.layout == "flat" and res.class_names == ["cat", "dog"]
    assert "photo.jpg" not in [f.path for f in res.usable()]  # good, but without a label
    s = res.summary()
    assert s[NO_LABEL] == {"good": 1, "converted": 0, "rejected": 0, "ignored": 1}  # photo.jpg; Thumbs.db
    assert s["cat"]["ignored"] == 1  # cat.notes.txt
    assert "(no label)" in format_summary(res)
    assert _snapshot(root) == before


def test_cache_reuses_unchanged_and_notices_changes(tmp_path, monkeypatch):
    from PIL import Image

    root, cache = tmp_path / "data", tmp_path / "cache"
    rng = np.random.default_rng(0)
    for i in range(300):
        cls = ("a", "b")[i % 2]
        _save(root / cls / f"{i}.jpg", Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)))
    first = check_dataset(root, cache_dir=cache)
    assert first.reused == 0 and len(first.usable()) == 300
    assert len(list((cache / "checks").glob("*.json"))) == 1

    def must_not_run(*args):
        raise AssertionError("a file was opened although its verdict is cached")

    with monkeypatch.context() as m:
        m.setattr(datacheck, "check_file", must_not_run)
        m.setattr("tlexp.data._inspect._inspect", must_not_run)
        second = check_dataset(root, cache_dir=cache)
    assert second.reused == 300
    assert [(f.path, f.sha256, f.status) for f in second.files] == [(f.path, f.sha256, f.status) for f in first.files]

    st = os.stat(root / "a/0.jpg")
    os.utime(root / "a/0.jpg", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # touched
    (root / "b/1.jpg").write_bytes(b"")  # modified: now empty
    _save(root / "a/new.jpg", Image.fromarray(_noise(1)))  # added
    (root / "b/3.jpg").unlink()  # removed
    checked = []
    original = datacheck.check_file

    def record(root_, rel, *args):
        checked.append(rel)
        return original(root_, rel, *args)

    monkeypatch.setattr(datacheck, "check_file", record)
    third = check_dataset(root, cache_dir=cache)
    assert sorted(checked) == ["a/0.jpg", "a/new.jpg", "b/1.jpg"]
    assert third.reused == 297 and len(third.files) == 300
    assert "b/3.jpg" not in {f.path for f in third.files}
    assert next(f for f in third.files if f.path == "b/1.jpg").detail == "empty"

    checked.clear()
    assert check_dataset(root, cache_dir=cache).reused == 300 and checked == []  # the cache was updated
    assert check_dataset(root, cache_dir=cache, min_side=32).reused == 0  # another rule: not reused


def test_corrupt_cache_is_rebuilt(torture, tmp_path):
    cache = tmp_path / "cache"
    n_read = len([v for v in EXPECTED.values() if "unreadable" not in v[1]])
    check_dataset(torture, cache_dir=cache)
    (cache_file,) = (cache / "checks").glob("*.json")
    assert check_dataset(torture, cache_dir=cache).reused == n_read  # unreadable files are always re-tried
    for junk in (b"{not json", b"\xff\xfe", b'{"header": 1, "files": []}', b"[]"):
        cache_file.write_bytes(junk)
        assert check_dataset(torture, cache_dir=cache).reused == 0
    res = check_dataset(torture, cache_dir=cache)
    assert res.reused == n_read and [f.path for f in res.files] == sorted(EXPECTED)
    data = json.loads(cache_file.read_text())
    assert data["header"]["version"] == datacheck.CACHE_VERSION
    data["files"]["cat/good.jpg"] = ["x", None]  # one damaged entry: that file alone is checked again
    data["files"]["cat/gray.jpg"][6] = "wide"
    cache_file.write_text(json.dumps(data))
    res = check_dataset(torture, cache_dir=cache)
    assert res.reused == n_read - 2 and {f.path: f.status for f in res.files}["cat/good.jpg"] == "good"


def test_variant_rule():
    assert detect_variant("flat", {"cat": 12_500, "dog": 12_500}) == KAGGLE
    assert detect_variant("flat", {"cat": 12_500, "dog": 12_499}) == CUSTOM
    assert detect_variant("flat", {"Cat": 12_500, "Dog": 12_500}) == CUSTOM
    assert detect_variant("folders", {"cat": 12_500, "dog": 12_500}) == CUSTOM
    assert detect_variant("folders", {"Cat": 12_501, "Dog": 12_499}) == PETIMAGES
    assert detect_variant("folders", {"Cat": 12_500, "Dog": 12_500}) == PETIMAGES
    assert detect_variant("folders", {"Cat": 12_502, "Dog": 12_500}) == CUSTOM
    assert detect_variant("folders", {"Cat": 12_500, "Dog": 12_500, "Bird": 1}) == CUSTOM


def test_variant_counts_candidates(tmp_path, monkeypatch):
    root = tmp_path / "PetImages"
    for cls in ("Cat", "Dog"):
        write_image(root / cls / "0.jpg", (1, 2, 3))
    (root / "Cat" / "1.jpg").write_bytes(b"")  # rejected files count too
    seen = []
    monkeypatch.setattr(datacheck, "detect_variant", lambda layout, counts: seen.append((layout, counts)) or "x")
    assert check_dataset(root, progress=True).variant == "x"
    assert seen == [("folders", {"Cat": 2, "Dog": 1})]


def test_bad_parameters_and_folders(tmp_path):
    with pytest.raises(ValueError, match="The 'layout' parameter must be one of .* Got 'kaggle' instead"):
        check_dataset(tmp_path, "kaggle")
    with pytest.raises(ValueError, match="'workers' parameter .* Got 0 instead"):
        check_dataset(tmp_path, workers=0)
    with pytest.raises(ValueError, match="'min_side' parameter .* Got 0 instead"):
        check_dataset(tmp_path, min_side=0)
    with pytest.raises(DataError, match="not found"):
        check_dataset(tmp_path / "nope")
    with pytest.raises(DataError, match="No images"):
        check_dataset(tmp_path)
    write_image(tmp_path / "cat.0.jpg", (1, 2, 3))
    write_image(tmp_path / "dog" / "0.jpg", (1, 2, 3))
    with pytest.raises(DataError, match="set the layout to 'flat' or 'folders'"):
        check_dataset(tmp_path)
    assert [f.path for f in check_dataset(tmp_path, "folders").files] == ["dog/0.jpg"]


@pytest.fixture
def tlexp_main():
    """``tlexp.cli.main`` in this process; the tlexp logger is restored afterwards (main adds a
    terminal handler on the test's captured stderr)."""
    from tlexp.cli import main

    with tlexp_logger_kept():
        yield main


def test_missing_folder_is_one_message_everywhere(tmp_path, capsys, tlexp_main):
    missing = tmp_path / "nope"
    expected = (
        f"Dataset folder not found: '{missing}' does not exist or is not a folder. Point data.root (or the "
        "ROOT of 'tlexp data check') at the folder that holds the images."
    )
    for call in (discover, check_dataset):
        with pytest.raises(DataError) as e:
            call(missing)
        assert str(e.value) == expected, call.__name__
    assert tlexp_main(["data", "check", str(missing), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"tlexp: error: {expected}\n"
    assert not (tmp_path / "out").exists()


def test_quiet_data_check_prints_only_the_report_folder(flat_torture, tmp_path, capsys, tlexp_main):
    out = tmp_path / "results"
    assert tlexp_main(["-q", "data", "check", str(flat_torture), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    (report,) = out.iterdir()
    assert captured.out == f"{report}\n"  # what a script reads, nothing else
    assert captured.err == ""  # nothing went wrong: no warning
    assert sorted(os.listdir(report)) == ["duplicates.csv", "manifest.csv", "near_duplicates.csv", "rejected.csv"]

    assert tlexp_main(["data", "check", str(flat_torture), "--out", str(out)]) == 0  # without -q: as before
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"data check: {flat_torture} (flat layout, variant custom): 9 files in ")
    assert lines[1].split() == ["class", "good", "converted", "rejected", "ignored"]
    assert lines[-1] == str(out / f"{report.name}2") and len(lines) > 6


def test_a_run_logs_the_check_in_one_line(flat_dataset, tmp_path, caplog):
    """prepare_data (the start of every run) says what the check found once, the reused count in one wording."""
    from tlexp.config import load_config
    from tlexp.data import prepare_data

    write_image(flat_dataset / "photo.jpg", (1, 2, 3))  # no label
    (flat_dataset / "dog.99.jpg").write_bytes(b"")  # rejected: empty
    cfg = load_config(None, [f"data.root={flat_dataset}", f"data.cache_dir={tmp_path / 'cache'}"])
    for reused in (0, 26):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="tlexp"):
            ds, check = prepare_data(cfg)
        lines = [r.getMessage() for r in caplog.records]
        checked = [m for m in lines if "checked" in m]
        assert len(checked) == 1, lines
        assert re.fullmatch(
            rf"data: checked 26 files in [0-9.]+s \({reused} unchanged since the last check\): "
            r"24 usable, 1 rejected, 1 without a label; see rejected.csv",
            checked[0],
        )
        assert sum("left out 1 of 26 image file(s)" in m and "'photo.jpg'" in m for m in lines) == 1
        assert len(ds.paths) == 24 and check.reused == reused


def test_permission_denied_is_unreadable(torture, monkeypatch):
    # chmod 000 does not stop root, so the refusal is simulated where the check opens files.
    real_open = os.open

    def refuse(path, *args, **kwargs):
        if str(path).endswith("locked.jpg"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    got = {f.path: f for f in check_dataset(torture).files}
    assert (got["cat/locked.jpg"].status, got["cat/locked.jpg"].detail) == ("rejected", "unreadable: Permission denied")
    assert got["cat/locked.jpg"].size == -1 and got["cat/good.jpg"].status == "good"


@pytest.mark.slow
def test_a_run_on_the_torture_dataset_completes(torture, tmp_path):
    """Every kind of bad file in the data, and a real run still finishes on the good ones."""

    from tlexp.config import load_config
    from tlexp.experiment import run_experiment

    for cls in ("cat", "dog"):  # enough usable images for train, val and test of both classes
        for i in range(8):
            (torture / cls / f"extra{i}.jpg").write_bytes(_jpeg_bytes(100 + 10 * i + (cls == "dog")))
    before = _snapshot(torture)
    check = check_dataset(torture)
    cfg = load_config(
        None,
        [
            f"data.root={torture}",
            "data.image_size=32",
            "data.val_fraction=0.2",
            "data.test_fraction=0.2",
            "model.weights=none",
            "model.head.dense=[4]",
            "train.epochs=1",
            "train.batch_size=8",
            "forest.n_estimators=3",
            f"output.dir={tmp_path / 'out'}",
            "output.save_model=false",
        ],
    )
    run_dir = run_experiment(cfg)
    m = load_record(run_dir)
    c = m.data.check
    assert c.usable + c.rejected == c.files == len(check.files)
    assert c.usable == len(check.usable()) and sum(c.rejected_by_reason.values()) == c.rejected
    split = read_csv(run_dir / "split.csv")
    rejected = read_csv(run_dir / "rejected.csv")
    assert {r["path"] for r in rejected} == {f.path for f in check.rejected()}
    same = {f.path for g in check.conflicting_duplicates() for f in g}  # one image as cat and as dog
    assert same == {"cat/same.jpg", "dog/same.jpg"} and c.duplicate_files_excluded == 2
    assert {r["path"] for r in split} == {f.path for f in check.usable()} - same  # every usable file, nothing else
    assert not {r["path"] for r in split} & {r["path"] for r in rejected}
    assert sum(m.data.used.values()) == len(split) and m.data.skipped == 0
    assert c.duplicate_groups_with_different_labels == 1
    assert _snapshot(torture) == before  # the user's folder, byte for byte


# --- near-duplicates: resized and recompressed copies ------------------------------------


def _photo(seed: int, size: tuple[int, int] = (160, 120)):
    """A smooth random picture (a few colour regions, mild noise), like a photo at low resolution."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (int(rng.integers(3, 7)), int(rng.integers(3, 7)), 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC), dtype=np.float64)
    return Image.fromarray(np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8))


@pytest.fixture
def near_dups(tmp_path: Path) -> Path:
    """Flat layout: 20 cats and 20 dogs, of which cat.20-23 and dog.20-22 are resized and
    recompressed copies of cat.0-3 and dog.0-2, dog.23 a copy of cat.4 (another label),
    and cat.24 a byte-identical copy of cat.5 (an exact duplicate only)."""
    root = tmp_path / "near"
    root.mkdir()
    for cls in ("cat", "dog"):
        for i in range(20):
            _photo(1000 * (cls == "dog") + i).save(root / f"{cls}.{i}.jpg", quality=90)
    copies = {"cat.20": "cat.0", "cat.21": "cat.1", "cat.22": "cat.2", "cat.23": "cat.3"}
    copies |= {"dog.20": "dog.0", "dog.21": "dog.1", "dog.22": "dog.2", "dog.23": "cat.4"}
    for k, (dst, src) in enumerate(copies.items()):
        from PIL import Image

        with Image.open(root / f"{src}.jpg") as img:
            scale = (0.5, 0.75, 0.6, 1.3)[k % 4]
            img.resize((int(160 * scale), int(120 * scale)), Image.Resampling.LANCZOS).save(
                root / f"{dst}.jpg", quality=(60, 75, 85)[k % 3]
            )
    (root / "cat.24.jpg").write_bytes((root / "cat.5.jpg").read_bytes())
    return root


NEAR_GROUPS = [
    ["cat.0.jpg", "cat.20.jpg"],
    ["cat.1.jpg", "cat.21.jpg"],
    ["cat.2.jpg", "cat.22.jpg"],
    ["cat.23.jpg", "cat.3.jpg"],
    ["cat.4.jpg", "dog.23.jpg"],
    ["dog.0.jpg", "dog.20.jpg"],
    ["dog.1.jpg", "dog.21.jpg"],
    ["dog.2.jpg", "dog.22.jpg"],
]


def test_near_duplicates_found_reported_and_cached(near_dups, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    res = check_dataset(near_dups, cache_dir=cache)
    assert all(len(f.phash) == 16 for f in res.usable())
    assert [[f.path for f in g] for g in res.near_duplicates()] == NEAR_GROUPS  # cat.5 = cat.24: exact only
    assert [[f.path for f in g] for g in res.duplicates()] == [["cat.24.jpg", "cat.5.jpg"]]
    # Unrelated pictures are far apart: the threshold has room on both sides.
    far = [int(a.phash, 16) ^ int(b.phash, 16) for a, b in zip(res.usable()[:20], res.usable()[1:21], strict=True)]
    assert min(x.bit_count() for x in far) > 2 * HASH_BITS

    text = format_summary(res)
    assert (
        "near-duplicates: 8 group(s) of near-identical images (16 files; pixel difference to the group's first "
        "file at most 0.1), 1 with different labels; see near_duplicates.csv"
    ) in text
    assert "  different labels: cat.4.jpg (cat) ~ dog.23.jpg (dog)\n  e.g.: cat.0.jpg (cat) ~ cat.20.jpg (cat)" in text

    paths = checkreport.write_check(res, tmp_path / "out")
    rows = read_csv(paths["near_duplicates"])
    assert list(rows[0]) == ["group", "path", "label", "sha256", "phash", "hash_bits", "difference"]
    assert [(r["group"], r["path"]) for r in rows] == [(str(i), p) for i, g in enumerate(NEAR_GROUPS, 1) for p in g]
    assert {r["path"]: (r["hash_bits"], r["difference"]) for r in rows}["cat.0.jpg"] == ("0", "0.0000")
    assert all(0 <= int(r["hash_bits"]) <= HASH_BITS and 0 <= float(r["difference"]) <= 0.1 for r in rows)
    manifest = {r["path"]: r["phash"] for r in read_csv(paths["manifest"])}
    assert manifest["cat.5.jpg"] == manifest["cat.24.jpg"] == next(f.phash for f in res.files if f.path == "cat.5.jpg")

    def must_not_run(*args):
        raise AssertionError("a file was opened although its verdict is cached")

    monkeypatch.setattr(datacheck, "check_file", must_not_run)  # the hash is cached with the verdict
    again = check_dataset(near_dups, cache_dir=cache)
    assert again.reused == len(res.files)
    assert [f.phash for f in again.files] == [f.phash for f in res.files]
    assert [[f.path for f in g] for g in again.near_duplicates()] == NEAR_GROUPS


def test_near_duplicates_share_a_split_unless_switched_off(near_dups, tmp_path, caplog):
    from tlexp.config import load_config
    from tlexp.data import prepare_data, write_run_check

    def split(seed, *overrides):
        cfg = load_config(
            None,
            [f"data.root={near_dups}", f"data.cache_dir={tmp_path / 'cache'}", f"data.split_seed={seed}", *overrides],
        )
        ds, check = prepare_data(cfg)
        of = dict(zip(ds.paths, ds.split, strict=True))
        return ds, check, [{of[p] for p in g} for g in NEAR_GROUPS]

    for seed in range(4):
        _, _, spans = split(seed)  # data.group_near_duplicates: true, the default
        assert all(len(s) == 1 for s in spans), seed
    ds, check, spans = split(0, "data.group_near_duplicates=false")
    leaks = sum(len(s) > 1 for s in spans)
    assert leaks >= 1  # what a split that only knows identical bytes does with these files
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with caplog.at_level(logging.WARNING, logger="tlexp"):
        info = write_run_check(run_dir, check, ds, 0.1)
    assert {k: v for k, v in info.items() if k.startswith("near_")} == {
        "near_duplicate_groups": 8,
        "near_duplicate_files": 16,
        "near_duplicate_groups_across_splits": leaks,
        "near_duplicate_groups_with_different_labels": 1,
        "near_duplicate_max_distance": 6,
        "near_duplicate_threshold": 0.1,
    }
    assert [r.getMessage() for r in caplog.records] == [
        f"data: {leaks} group(s) of near-identical images sit in more than one split (a train/test leak); "
        "see near_duplicates.csv"
    ]
    rows = read_csv(run_dir / "near_duplicates.csv")
    assert list(rows[0]) == ["group", "path", "label", "split", "sha256", "phash", "hash_bits", "difference"]
    assert {r["path"]: r["split"] for r in rows} == {
        p: s for p, s in zip(ds.paths, ds.split, strict=True) if any(p in g for g in NEAR_GROUPS)
    }


def test_check_cache_of_another_numpy_or_pillow_is_not_reused(flat_dataset, tmp_path, monkeypatch):
    import PIL

    cache = tmp_path / "cache"
    assert check_dataset(flat_dataset, cache_dir=cache).reused == 0
    assert check_dataset(flat_dataset, cache_dir=cache).reused == 24
    monkeypatch.setattr(np, "__version__", "0.0.1")  # the hash is NumPy arithmetic
    assert check_dataset(flat_dataset, cache_dir=cache).reused == 0
    monkeypatch.setattr(PIL, "__version__", "0.0.1")
    assert check_dataset(flat_dataset, cache_dir=cache).reused == 0
    header = json.loads(next((cache / "checks").glob("*.json")).read_text())["header"]
    assert (header["numpy"], header["pillow"], header["version"]) == ("0.0.1", "0.0.1", 3)
