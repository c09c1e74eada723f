"""tlexp weights: status of the Keras cache, importing files downloaded elsewhere (no TF).

The registry is injected: its MD5s are those of small files the tests write, so no real
ImageNet file is needed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path

import pytest

import tlexp.model._weights
from tlexp.errors import WeightsError
from tlexp.model import REGISTRY, format_weights_status, import_weights, resolve_weights, weights_status

NAMES = ("vgg16", "resnet50", "densenet121")  # three real specs stand for all of them
CONTENT = {name: f"fake {name} no-top weights ".encode() * 50 for name in NAMES}


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture
def registry():
    """Three real specs, with the MD5s of the fake files in CONTENT."""
    return {name: dataclasses.replace(REGISTRY[name], weights_hash=md5(CONTENT[name])) for name in NAMES}


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    return tmp_path / "kh"


def put(folder: Path, name: str, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / REGISTRY[name].weights_file
    path.write_bytes(data)
    return path


def download(tmp_path: Path, name: str, filename: str = "download.h5", data: bytes | None = None) -> Path:
    """A file 'downloaded' by the user, deliberately not named as Keras expects."""
    path = tmp_path / "downloads" / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(CONTENT[name] if data is None else data)
    return path


# --------------------------------------------------------------------------- status


def test_status_defaults_to_keras_home_and_reports_each_state(keras_home, registry):
    cache = keras_home / "models"
    put(cache, "vgg16", CONTENT["vgg16"])
    put(cache, "resnet50", b"truncated")
    rows = {r["backbone"]: r for r in weights_status(registry)}

    assert list(rows) == list(NAMES)
    vgg, resnet, dense = rows["vgg16"], rows["resnet50"], rows["densenet121"]
    assert vgg["checksum"] == "ok" and vgg["present"] and vgg["hash"] == md5(CONTENT["vgg16"])
    assert vgg["size"] == len(CONTENT["vgg16"]) and vgg["path"] == cache / REGISTRY["vgg16"].weights_file
    assert resnet["checksum"] == "mismatch" and resnet["present"] and resnet["hash"] == md5(b"truncated")
    assert resnet["size"] == len(b"truncated")
    assert dense["checksum"] == "missing" and not dense["present"]
    assert dense["hash"] is None and dense["size"] is None
    assert dense["url"] == REGISTRY["densenet121"].weights_url
    assert dense["file"] == REGISTRY["densenet121"].weights_file


def test_status_with_explicit_cache_dir(tmp_path, registry):
    put(tmp_path / "elsewhere", "densenet121", CONTENT["densenet121"])
    rows = {r["backbone"]: r["checksum"] for r in weights_status(registry, cache_dir=tmp_path / "elsewhere")}
    assert rows == {"vgg16": "missing", "resnet50": "missing", "densenet121": "ok"}


def test_real_registry_reports_fake_files_as_corrupt(tmp_path):
    put(tmp_path, "vgg16", b"not the real file")
    rows = {r["backbone"]: r for r in weights_status(cache_dir=tmp_path)}
    assert list(rows) == list(REGISTRY) and rows["vgg16"]["checksum"] == "mismatch"
    assert {r["checksum"] for n, r in rows.items() if n != "vgg16"} == {"missing"}


def test_formatted_table_names_each_state_path_and_how_to_fix(tmp_path, registry):
    put(tmp_path, "vgg16", CONTENT["vgg16"])
    put(tmp_path, "resnet50", b"truncated")
    text = format_weights_status(weights_status(registry, cache_dir=tmp_path))

    lines = text.splitlines()
    assert lines[0].split() == ["backbone", "status", "path"]
    vgg, resnet, dense = lines[1:4]
    assert vgg.split()[:2] == ["vgg16", "ok"] and str(tmp_path / REGISTRY["vgg16"].weights_file) in vgg
    assert f"CORRUPT (md5 {md5(b'truncated')[:8]}" in resnet and "9 B" in resnet
    assert "MISSING" in dense and str(tmp_path / REGISTRY["densenet121"].weights_file) in dense
    # Download links only for the files that need one.
    assert REGISTRY["resnet50"].weights_url in text and REGISTRY["densenet121"].weights_url in text
    assert REGISTRY["vgg16"].weights_url not in text
    assert "tlexp weights import FILE" in text and "$KERAS_HOME" in text and str(tmp_path) in text


def test_formatted_table_when_all_is_well(tmp_path, registry):
    for name in NAMES:
        put(tmp_path, name, CONTENT[name])
    text = format_weights_status(weights_status(registry, cache_dir=tmp_path))
    assert "MISSING" not in text and "CORRUPT" not in text and "tlexp weights import" not in text
    assert "in place" in text and "$KERAS_HOME" in text


# --------------------------------------------------------------------------- import


def test_import_identifies_by_content_and_copies_atomically(tmp_path, registry):
    # Named like the vgg16 file, but holds the resnet50 weights: the content decides.
    src = download(tmp_path, "resnet50", filename=REGISTRY["vgg16"].weights_file)
    cache = tmp_path / "new" / "models"  # does not exist yet
    name, dest = import_weights(src, registry, cache_dir=cache)

    assert name == "resnet50"
    assert dest == cache / REGISTRY["resnet50"].weights_file
    assert md5(dest.read_bytes()) == registry["resnet50"].weights_hash
    assert src.read_bytes() == CONTENT["resnet50"]  # copied, not moved
    assert sorted(p.name for p in cache.iterdir()) == [dest.name]  # no temp file left
    assert dest.stat().st_mode & 0o777 == 0o644


def test_import_defaults_to_keras_home(keras_home, registry):
    name, dest = import_weights(download(keras_home.parent, "densenet121"), registry)
    assert (name, dest) == ("densenet121", keras_home / "models" / REGISTRY["densenet121"].weights_file)
    assert weights_status(registry)[2]["checksum"] == "ok"


def test_import_leaves_a_good_cached_file_alone(tmp_path, registry, caplog):
    cached = put(tmp_path / "cache", "vgg16", CONTENT["vgg16"])
    before = cached.stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="tlexp"):
        name, dest = import_weights(download(tmp_path, "vgg16"), registry, cache_dir=tmp_path / "cache")
    assert (name, dest) == ("vgg16", cached)
    assert cached.stat().st_mtime_ns == before
    assert "already in place" in caplog.text


def test_import_replaces_a_corrupt_cached_file_with_a_warning(tmp_path, registry, caplog):
    cached = put(tmp_path / "cache", "vgg16", b"half a download")
    with caplog.at_level(logging.INFO, logger="tlexp"):
        import_weights(download(tmp_path, "vgg16"), registry, cache_dir=tmp_path / "cache")
    assert cached.read_bytes() == CONTENT["vgg16"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(cached) in warnings[0].getMessage()
    assert sorted(p.name for p in cached.parent.iterdir()) == [cached.name]


def test_unknown_file_is_refused_with_expected_names_and_md5s(tmp_path, registry):
    src = download(tmp_path, "vgg16", data=b"some other model")
    with pytest.raises(WeightsError) as info:
        import_weights(src, registry, cache_dir=tmp_path / "cache")
    msg = str(info.value)
    assert md5(b"some other model") in msg and "16 bytes" in msg
    for name, spec in registry.items():
        assert f"{name}: {spec.weights_file} (MD5 {spec.weights_hash})" in msg
    assert "truncated" in msg and "_notop" in msg and "another backbone or framework" in msg
    assert not (tmp_path / "cache").exists()  # nothing written


def test_truncated_download_is_refused_and_named_as_such(tmp_path, registry):
    src = download(tmp_path, "resnet50", filename=REGISTRY["resnet50"].weights_file, data=CONTENT["resnet50"][:100])
    with pytest.raises(WeightsError, match=r"name is that of the resnet50 file, so it is most likely a truncated"):
        import_weights(src, registry, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_missing_path_and_folder_are_refused(tmp_path, registry):
    with pytest.raises(WeightsError, match=r"'.*nope\.h5' does not exist\. Give the path"):
        import_weights(tmp_path / "nope.h5", registry, cache_dir=tmp_path / "cache")
    with pytest.raises(WeightsError, match=r"is a folder, not a weights file"):
        import_weights(tmp_path, registry, cache_dir=tmp_path / "cache")


def test_a_folder_in_the_way_is_refused(tmp_path, registry):
    (tmp_path / "cache" / REGISTRY["vgg16"].weights_file).mkdir(parents=True)
    with pytest.raises(WeightsError, match=r"exists but is not a file"):
        import_weights(download(tmp_path, "vgg16"), registry, cache_dir=tmp_path / "cache")


def test_failed_copy_leaves_no_temp_file_and_no_destination(tmp_path, registry, monkeypatch):
    def broken_copy(src, dst):
        Path(dst).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tlexp.model._weights.shutil, "copyfile", broken_copy)
    with pytest.raises(WeightsError, match=r"No space left on device.*\$KERAS_HOME"):
        import_weights(download(tmp_path, "vgg16"), registry, cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_resolve_weights_finds_an_imported_file_offline(keras_home, registry, monkeypatch):
    # resolve_weights reads the module's REGISTRY; it takes no registry argument.
    monkeypatch.setattr(tlexp.model._weights, "REGISTRY", registry)
    with pytest.raises(WeightsError, match="not cached"):
        resolve_weights("resnet50", "imagenet", download=False)
    _, dest = import_weights(download(keras_home.parent, "resnet50"))
    assert resolve_weights("resnet50", "imagenet", download=False) == dest


# --------------------------------------------------------------------------- every backbone, every kind of hash


def test_status_names_the_file_of_every_backbone(tmp_path):
    text = format_weights_status(weights_status(cache_dir=tmp_path))
    for name, spec in REGISTRY.items():
        assert name in text and str(tmp_path / spec.weights_file) in text and spec.weights_url in text
    assert len(REGISTRY) >= 40


def test_sha256_files_and_files_without_a_published_hash(tmp_path, caplog):
    """ConvNeXt's files are checked by SHA-256, as Keras does; MobileNet's have no hash: imported
    by their exact name, reported unchecked."""
    sha = hashlib.sha256(b"convnext").hexdigest()
    registry = {
        "convnexttiny": dataclasses.replace(REGISTRY["convnexttiny"], weights_hash=sha),
        "mobilenet": REGISTRY["mobilenet"],
    }
    assert len(REGISTRY["convnexttiny"].weights_hash) == 64 and REGISTRY["mobilenet"].weights_hash is None
    cache = tmp_path / "cache"
    src = tmp_path / "downloads" / "renamed.h5"
    src.parent.mkdir()
    src.write_bytes(b"convnext")
    assert import_weights(src, registry, cache_dir=cache)[0] == "convnexttiny"

    unnamed = tmp_path / "downloads" / "mobilenet.h5"
    unnamed.write_bytes(b"mobilenet")
    with pytest.raises(WeightsError, match=r"mobilenet: mobilenet_1_0_224_tf_no_top.h5 \(no hash published"):
        import_weights(unnamed, registry, cache_dir=cache)
    named = tmp_path / "downloads" / REGISTRY["mobilenet"].weights_file
    named.write_bytes(b"mobilenet")
    with caplog.at_level(logging.WARNING, logger="tlexp"):
        assert import_weights(named, registry, cache_dir=cache)[0] == "mobilenet"
    assert "imported unchecked" in caplog.text

    rows = {r["backbone"]: r for r in weights_status(registry, cache_dir=cache)}
    assert rows["convnexttiny"]["checksum"] == "ok" and rows["convnexttiny"]["hash"] == sha
    assert rows["mobilenet"]["checksum"] == "unchecked"
    text = format_weights_status(list(rows.values()))
    assert "present (Keras publishes no hash to check)" in text and "in place and intact" in text
    (cache / REGISTRY["convnexttiny"].weights_file).write_bytes(b"damaged")
    assert "CORRUPT (sha256 " in format_weights_status(weights_status(registry, cache_dir=cache))
