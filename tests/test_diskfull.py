"""A full disk is one clear error, never a crash: caches are reserved before they are
written, partial builds are removed, the dataset and earlier runs are untouched."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest

from tlexp import files
from tlexp.data import ensure_image_cache

from conftest import write_image

Usage = namedtuple("Usage", "total used free")


def _tiny_disk(monkeypatch, free: int) -> None:
    """Make every free-space check see ``free`` bytes."""
    monkeypatch.setattr(files.shutil, "disk_usage", lambda path: Usage(10**12, 10**12 - free, free))


def _images(tmp_path: Path, n: int = 6) -> tuple[Path, list[tuple[str, str]]]:
    root = tmp_path / "imgs"
    for i in range(n):
        write_image(root / f"cat.{i}.jpg", (200, 60, 40), seed=i)
    return root, [(p.name, f"sha{i}") for i, p in enumerate(sorted(root.iterdir()))]


def test_reserve_allocates_or_refuses_with_the_numbers(tmp_path, monkeypatch):
    files.reserve(tmp_path / "a.bin", 1_000_000, what="the thing", fix="do X")
    assert (tmp_path / "a.bin").stat().st_blocks * 512 >= 1_000_000  # blocks allocated, not a sparse file
    _tiny_disk(monkeypatch, 2_500_000)
    with pytest.raises(files.DiskFullError) as e:
        files.reserve(tmp_path / "b.bin", 120_400_000, what="the thing", fix="do X", where=tmp_path / "shown")
    assert str(e.value) == (
        f"Not enough disk space for the thing in '{tmp_path / 'shown'}': it needs 120.4 MB, "
        "2.5 MB are free. Free some space there, or do X."
    )
    assert e.value.errno == errno.ENOSPC and isinstance(e.value, OSError)


def test_a_disk_filling_up_during_allocation_is_the_same_error(tmp_path, monkeypatch):
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "posix_fallocate", full)
    with pytest.raises(files.DiskFullError, match=r"Not enough disk space for the thing .* it needs 1.0 MB"):
        files.reserve(tmp_path / "a.bin", 1_000_000, what="the thing", fix="do X")


def test_decoded_image_cache_on_a_full_disk_leaves_no_partial_build(tmp_path, monkeypatch):
    root, listed = _images(tmp_path)
    before = {p: p.read_bytes() for p in root.iterdir()}
    _tiny_disk(monkeypatch, 1000)  # 6 images at 32 px need 18,432 bytes
    cache = tmp_path / "cache"
    with pytest.raises(files.DiskFullError) as e:
        ensure_image_cache(root, listed, 32, cache)
    assert f"for the decoded-image cache in '{cache / 'images'}': it needs 18.4 kB, 1.0 kB are free" in str(e.value)
    assert "set data.decoded_cache=false" in str(e.value)
    assert list((cache / "images").iterdir()) == []  # the temporary build folder is gone
    assert {p: p.read_bytes() for p in root.iterdir()} == before  # the dataset untouched


def test_activation_cache_entry_is_reserved_or_refused(tmp_path, monkeypatch):
    import numpy as np

    from tlexp.pipeline import ActivationStore

    store = ActivationStore(tmp_path / "cache", max_bytes=10**9)
    store.root.mkdir(parents=True)
    arr = store._allocate(store.root / "f.npy", np.dtype("float32"), (4, 8))
    assert arr.shape == (4, 8) and (store.root / "f.npy").stat().st_blocks * 512 >= 128 + 4 * 8 * 4
    _tiny_disk(monkeypatch, 10)
    with pytest.raises(files.DiskFullError, match=r"activation cache in '.*cache': .*train.prefix_cache.enabled=false"):
        store._allocate(store.root / "g.npy", np.dtype("float32"), (1000, 1000))


def test_run_log_on_a_full_disk_says_so_once_without_tracebacks(tmp_path, capsys):
    from tlexp.logs import RunLog

    log = logging.getLogger("tlexp")
    with RunLog() as run_log:
        run_log.write_to(tmp_path / "run.log")

        class Full:
            def write(self, text):
                raise OSError(errno.ENOSPC, "No space left on device")

            def flush(self):
                pass

        run_log.file.stream = Full()
        for i in range(5):
            log.info("line %d", i)
    err = capsys.readouterr().err
    assert err.count("tlexp: run.log stopped: the disk is full") == 1
    assert "Logging error" not in err and "Traceback" not in err


def test_disk_full_message_for_any_write(tmp_path):
    e = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "model.keras"))
    msg = files.disk_full_message(e)
    assert msg.startswith(f"The disk is full (writing {tmp_path / 'model.keras'}, ")
    assert "point output.dir (run folders) and data.cache_dir (caches) at a disk with room" in msg
    assert files.is_disk_full(e) and not files.is_disk_full(OSError(errno.EACCES, "denied"))


def _can_mount() -> bool:
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("mount"):
        return False
    probe = Path("/tmp") / f"tlexp-mount-probe-{os.getpid()}"
    probe.mkdir(exist_ok=True)
    try:
        ok = (
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)], capture_output=True
            ).returncode
            == 0
        )
        if ok:
            subprocess.run(["umount", str(probe)], check=True)
        return ok
    finally:
        probe.rmdir()


@pytest.mark.slow
@pytest.mark.skipif(not _can_mount(), reason="needs root and a mountable tmpfs for a real 3 MB file system")
def test_a_run_with_its_cache_on_a_3_mb_file_system(tmp_path):
    """The issue's case, for real: data.cache_dir on a 3 MB file system; the decoded-image
    cache needs 8 MB. One message, exit code 2, no run folder, nothing left on the disk."""
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(small)], check=True)
    try:
        empty = tmp_path / "empty.yaml"
        empty.write_text("{}\n")
        root, _ = _images(tmp_path, 12)
        for i in range(12):
            write_image(root / f"dog.{i}.jpg", (40, 80, 200), seed=i)
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "tlexp",
                "run",
                str(empty),
                f"data.root={root}",
                f"data.cache_dir={small}",
                "data.image_size=480",
                "model.weights=none",
                f"output.dir={tmp_path / 'out'}",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
        )
        assert proc.returncode == 2, proc.stderr
        err = proc.stderr.strip().splitlines()
        want = f"tlexp: error: Not enough disk space for the decoded-image cache in '{small}/images'"
        assert err[-1].startswith(want)
        assert "it needs 16.6 MB" in err[-1]
        assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()
        assert [p.name for p in (small / "images").iterdir()] == []
    finally:
        subprocess.run(["umount", str(small)], check=True)
