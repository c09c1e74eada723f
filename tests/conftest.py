"""Shared test helpers: tiny real image datasets written to tmp_path."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

# TensorFlow's C++ start-up notes are noise in test output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session", autouse=True)
def _private_cache_dir(tmp_path_factory: pytest.TempPathFactory):
    """Data checks and decoded-image caches of the tests go to a private folder, not
    ~/.cache (subprocesses inherit it through TLEXP_CACHE_DIR), removed when the session
    ends, passed or failed. It lies under pytest's own temp folder, so even a run killed
    outright (the "thread" timeout) leaves it only where pytest prunes old runs itself."""
    folder = tmp_path_factory.mktemp("tlexp-cache")
    previous = os.environ.get("TLEXP_CACHE_DIR")
    os.environ["TLEXP_CACHE_DIR"] = str(folder)
    yield folder
    if previous is None:
        del os.environ["TLEXP_CACHE_DIR"]
    else:
        os.environ["TLEXP_CACHE_DIR"] = previous
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(autouse=True)
def _fast_tests_start_no_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """The fast leg (``pytest -m "not slow"``) stays fast: starting a process costs seconds
    (a Python with tlexp's imports, a browser, a Ray runtime), so a test that starts one is
    slow by definition. One not marked ``slow`` fails here, saying what to do."""
    if request.node.get_closest_marker("slow") is not None:
        return
    start = subprocess.Popen.__init__

    def refuse(self, args, *more, **kwargs):
        if list(args)[:1] == ["uname"]:  # Python's platform module asking for the CPU, e.g. while TensorFlow imports
            return start(self, args, *more, **kwargs)
        raise AssertionError(f"{request.node.nodeid} starts a process ({args!r}): mark it @pytest.mark.slow")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


def write_image(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (40, 36), seed: int = 0) -> Path:
    """A small JPEG of one colour plus noise (so classes are learnable by colour)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(color) + rng.normal(0, 20, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, "RGB").save(path, quality=90)
    return path


COLORS = {"cat": (200, 60, 40), "dog": (40, 80, 200), "bird": (60, 190, 60)}


@pytest.fixture
def flat_dataset(tmp_path: Path) -> Path:
    """Kaggle flat layout: cat.N.jpg / dog.N.jpg, 12 per class."""
    root = tmp_path / "train"
    for cls in ("cat", "dog"):
        for i in range(12):
            write_image(root / f"{cls}.{i}.jpg", COLORS[cls], seed=i)
    return root


@pytest.fixture
def folder_dataset(tmp_path: Path) -> Path:
    """Class folders (PetImages style), three classes of different sizes."""
    root = tmp_path / "PetImages"
    for cls, n in (("Cat", 10), ("Dog", 8), ("Bird", 6)):
        for i in range(n):
            write_image(root / cls / f"{i}.jpg", COLORS[cls.lower()], seed=i)
    (root / "Cat" / "Thumbs.db").write_bytes(b"not an image")  # ignored: not an image extension
    return root


# The smallest real experiment, where every test that runs tlexp starts: VGG16 from random
# weights on 32 px images, a head of 8 units, one epoch, a forest of 5 trees, results under
# the test's tmp_path. A test states only what it changes (tiny_overrides' ``more``, or
# tiny_config_file's sections), so what a test is about stands out.
TINY: dict = {
    "data": {"image_size": 32, "val_fraction": 0.25, "test_fraction": 0.25},
    "model": {"backbone": "vgg16", "weights": "none", "head": {"dense": [8]}},
    "train": {"epochs": 1, "batch_size": 8, "learning_rate": 0.001},
    "forest": {"n_estimators": 5, "n_jobs": 1},
}


def tiny_overrides(tmp_path: Path, root: Path, *more: str) -> list[str]:
    """:data:`TINY` on the data at ``root``, results in ``tmp_path/out``, as ``key=value``
    overrides; ``more`` come last, so they win."""
    flat = {f"{section}.{key}": value for section, values in TINY.items() for key, value in _flat(values).items()}
    base = {**flat, "data.root": root, "output.dir": tmp_path / "out"}
    return [f"{k}={v}" for k, v in base.items()] + list(more)


def tiny_config(tmp_path: Path, root: Path, *more: str):
    """:func:`tiny_overrides` loaded as a :class:`tlexp.config.Config`."""
    from tlexp.config import load_config

    return load_config(None, tiny_overrides(tmp_path, root, *more))


def tiny_config_file(tmp_path: Path, root: Path, name: str | None = None, **sections: dict) -> Path:
    """:data:`TINY` as a config file ``tmp_path/<name or tiny>.yaml`` (results in
    ``tmp_path/results``; ``name`` also names the run); each of ``sections`` is merged into
    its section (``train={"epochs": 2}``), or set (``seed=3``, ``sweep={...}``)."""
    import yaml

    cfg = {
        **({"name": name} if name else {}),
        **{k: dict(v) for k, v in TINY.items()},
        "output": {"dir": str(tmp_path / "results")},
    }
    cfg["data"]["root"] = str(root)
    for section, values in sections.items():
        cfg[section] = {**cfg.get(section, {}), **values} if isinstance(values, dict) and section != "sweep" else values
    path = tmp_path / f"{name or 'tiny'}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def sweep_config(tmp_path: Path, root: Path, grid: dict, name: str = "mini", **sections: dict) -> Path:
    """:func:`tiny_config_file` with a sweep grid (batches of 8, 1 epoch)."""
    return tiny_config_file(tmp_path, root, name, sweep=grid, **sections)


def _flat(values: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def own_tmpdir(tmp_path: Path) -> dict[str, str]:
    """The environment for a tlexp process that a test kills (SIGKILL): its temporary files
    (TensorFlow's autograph writes ``__autograph_generated_file*.py`` and removes them only
    at a normal exit) go to a folder under ``tmp_path`` instead of the machine's /tmp.
    Not for Ray's processes: their unix socket paths must stay short (under 107 characters)."""
    folder = tmp_path / "tmp"
    folder.mkdir(exist_ok=True)
    return {**os.environ, "TMPDIR": str(folder)}


def start_sweep(cfg: Path, *extra: str, cwd: Path, started: Path, **popen) -> subprocess.Popen:
    """``tlexp sweep CFG EXTRA...`` in the background, returned once ``started`` (a cell's
    ``config.yaml``: that cell is running) exists. Output is discarded unless ``popen``
    says otherwise. The sweep leads a session of its own, so that :func:`end_session`
    finds everything it started (a Ray runtime's processes too); if ``started`` never
    appears, the sweep and all of that is ended before the failure is raised."""
    popen = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "start_new_session": True, **popen}
    proc = subprocess.Popen([sys.executable, "-m", "tlexp", "sweep", str(cfg), *extra], cwd=cwd, **popen)
    deadline = time.time() + 300
    try:
        while not started.exists():
            assert proc.poll() is None, f"the sweep ended before {started} appeared"
            assert time.time() < deadline, f"{started} did not appear within 300 s"
            time.sleep(0.05)
    except BaseException:
        proc.kill()
        proc.wait()
        if popen["start_new_session"]:
            end_session(proc)
        raise
    return proc


def tlexp_here(capsys: pytest.CaptureFixture, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``tlexp ARGS`` run in ``cwd`` in this process (:func:`tlexp.cli.main`), its exit code
    and output (from ``capsys``) as ``subprocess.run(..., capture_output=True, text=True)``
    returns them: for a test about what a command does, not about its process, which would
    only import TensorFlow again (seconds each). The "tlexp" logger is left as it was found:
    the CLI's terminal handler (on capsys' stream, closed after the test), its level and
    propagation would otherwise reach later tests (caplog sees nothing that does not propagate)."""
    from tlexp.cli import main

    capsys.readouterr()  # what came before is not this command's
    with tlexp_logger_kept(), contextlib.chdir(cwd):
        code = main(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["tlexp", *args], code, out, err)


@contextlib.contextmanager
def tlexp_logger_kept():
    """The "tlexp" logger's handlers, level and propagation as they were, afterwards: an
    in-process :func:`tlexp.cli.main` adds its terminal handler (on the test's captured
    stream) and sets the level."""
    import logging

    log = logging.getLogger("tlexp")
    handlers, level, propagate = list(log.handlers), log.level, log.propagate
    try:
        yield
    finally:
        for handler in log.handlers[:]:
            log.removeHandler(handler)
        for handler in handlers:
            log.addHandler(handler)
        log.setLevel(level)
        log.propagate = propagate


def session_processes(sid: int) -> dict[int, str]:
    """Running processes of session ``sid``, pid -> command line (Linux: read from /proc;
    elsewhere none are found).

    A process started with ``start_new_session=True`` leads a new session whose id is its
    pid, and all it starts stays in that session (Ray's workers move to process groups of
    their own, but not out of the session), also once reparented to init.
    """
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, _, session = stat.read_text().rsplit(")", 1)[1].split()[:4]
            if int(session) == sid and state not in ("Z", "X"):  # zombies have ended
                found[int(stat.parent.name)] = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue  # ended while we looked
    return found


def end_session(proc: subprocess.Popen, grace_s: float = 0.0) -> dict[int, str]:
    """End what ``proc`` (started with ``start_new_session=True``, ended and waited for) left
    running: the processes still in its session after up to ``grace_s`` seconds, each by
    its pid (without /proc: the leader's process group). Tests end only what they started.

    Returns:
        The processes that were still running and had to be ended, pid -> command line.
    """
    assert proc.returncode is not None, "end the session's leader first (and wait for it)"
    deadline = time.time() + grace_s
    left = session_processes(proc.pid)
    while left and time.time() < deadline:
        time.sleep(0.2)
        left = session_processes(proc.pid)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if not Path("/proc/self/stat").exists():
        # No session to read: the leader's group, i.e. all that did not move to a group of its own.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    return left
