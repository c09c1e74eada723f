"""Files that other processes read appear whole or not at all. No TensorFlow.

Every write a reader may see (metrics, tables, manifests, caches, saved models) goes
through this module: a file is written under a temporary name in the same folder and
renamed into place (:func:`atomic_path`); a folder of files is built in a temporary
sibling folder and renamed (:func:`build_folder`). A crash leaves at most a hidden
temporary that nobody reads and that is removed on the way out (or, after a hard kill,
swept once it is a day old).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import glob
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

_STALE_TMP_SECONDS = 24 * 3600


def cache_root() -> Path:
    """tlexp's cache folder: ``$TLEXP_CACHE_DIR``, else ``$XDG_CACHE_HOME/tlexp``, else ``~/.cache/tlexp``."""
    if os.environ.get("TLEXP_CACHE_DIR"):
        return Path(os.environ["TLEXP_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "tlexp"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it into place atomically.

    Readers never see a half-written file: either the old content (or nothing) or the
    complete new file. On error the temporary file is removed and ``path`` is untouched.

    Args:
        suffix: of the temporary name, for writers that insist on one (Keras: ``.keras``).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write ``text`` to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Atomically write ``data`` as indented JSON (NaN is written as null)."""
    write_text(path, json.dumps(_jsonable(data), indent=2, allow_nan=False) + "\n")


def write_yaml(path: str | os.PathLike, data: Any) -> None:
    """Atomically write ``data`` as block-style YAML, keys in their given order."""
    write_text(path, yaml.safe_dump(data, sort_keys=False, default_flow_style=False))


def write_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Atomically write a CSV file with a header row."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    """Read a CSV file written by :func:`write_csv` into a list of dicts."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _jsonable(x: Any) -> Any:
    """Convert numpy scalars/arrays and non-finite floats into plain JSON values."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "tolist"):  # numpy arrays and scalars
        return _jsonable(x.tolist())
    if isinstance(x, float) and (x != x or x in (float("inf"), float("-inf"))):
        return None
    return x


@contextlib.contextmanager
def build_folder(final: Path, marker: str) -> Iterator[Path]:
    """A private temporary folder beside ``final`` that becomes ``final`` when the block ends.

    The block writes everything into the yielded folder, ``marker`` last (readers trust a
    folder that has it). The rename is atomic; if another process finished ``final``
    first, its folder is kept and this one removed. An error or interrupt removes the
    temporary folder, and builds killed harder are swept away once a day old.
    """
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    # Only leftovers of this very folder: the parent may be the user's (the demo dataset's).
    _remove_stale_builds(parent, final.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".build-{final.name}-", dir=parent))
    try:
        yield tmp
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / marker).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _remove_stale_builds(parent: Path, name: str | None = None) -> None:
    """Temporary folders of builds (of ``name``, else of any folder) killed long ago: nobody reads them;
    free the disk."""
    now = time.time()
    for d in parent.glob(".build-*" if name is None else f".build-{glob.escape(name)}-*"):
        try:
            if now - d.stat().st_mtime > _STALE_TMP_SECONDS:
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            pass


@contextlib.contextmanager
def private_tempdir(folder: Path) -> Iterator[None]:
    """Point Python's temp folder into ``folder`` for the block (Keras' saving stages files there).

    Keras stages a model's assets in ``tempfile.mkdtemp()``; a process killed mid-save
    left that folder in /tmp for good. Inside the run folder, a leftover of a killed save
    stays with the unfinished run it belongs to, and a normal exit removes it here.
    Process-wide, but nothing else makes temp files while a run saves its model.
    """
    private = Path(tempfile.mkdtemp(prefix=".saving-", dir=folder))
    previous, tempfile.tempdir = tempfile.tempdir, str(private)
    try:
        yield
    finally:
        tempfile.tempdir = previous
        shutil.rmtree(private, ignore_errors=True)


class DiskFullError(OSError):
    """Not enough disk space for something tlexp was about to write; the message says what to do.

    An ``OSError`` (errno ``ENOSPC``), so code that handles I/O errors handles it too; the
    CLI prints it like a user error (exit code 2, no traceback).
    """

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(errno.ENOSPC, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def reserve(path: Path, nbytes: int, *, what: str, fix: str, where: Path | None = None) -> None:
    """Allocate ``nbytes`` on disk for the file ``path`` (created, or grown) before it is written.

    A memory map over a sparse file faults (SIGBUS: the process dies without a word) when
    the disk fills up while pages are written; with the blocks allocated up front, a full
    disk is an error here, with the numbers, instead. The free space is checked first, so
    the common case fails before anything is allocated.

    Args:
        what: what the file is, for the message (``"the decoded-image cache"``).
        fix: what the user can do besides freeing space (``"set data.cache_dir=..."``).
        where: the folder to name in the message (default: the file's folder; a build's
            temporary folder means nothing to the user).

    Raises:
        DiskFullError: the disk has less free space than ``nbytes``, or ran out meanwhile.
    """
    where = where or path.parent
    free = shutil.disk_usage(path.parent).free
    if nbytes > free:
        raise DiskFullError(_full_message(where, nbytes, free, what, fix))
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise DiskFullError(_full_message(where, nbytes, shutil.disk_usage(path.parent).free, what, fix)) from None
    finally:
        os.close(fd)


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` is the file system saying it is full (or the user's quota is)."""
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


def disk_full_message(error: OSError) -> str:
    """What to tell the user about a full disk met anywhere (a run folder, a cache, a log)."""
    if isinstance(error, DiskFullError):
        return error.message
    where = Path(error.filename).parent if error.filename else None
    free = f", {_size(shutil.disk_usage(where).free)} free" if where is not None and where.is_dir() else ""
    writing = f" (writing {error.filename}{free})" if error.filename else ""
    return (
        f"The disk is full{writing}. Free some space, or point output.dir (run folders) and data.cache_dir "
        "(caches) at a disk with room. Nothing written before was changed: the unfinished run folder keeps what "
        "it holds (no metrics.json), and re-running a sweep redoes that cell."
    )


def _full_message(folder: Path, need: int, free: int, what: str, fix: str) -> str:
    return (
        f"Not enough disk space for {what} in '{folder}': it needs {_size(need)}, {_size(free)} are free. "
        f"Free some space there, or {fix}."
    )


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"
