"""Run folders: fixed file names, never-overwritten folders, atomic writes. No TensorFlow.

Every file a run writes has a fixed name (documented in the README, section "The run
folder"), so tools that read run folders (sweeps, reports) never have to guess.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import yaml

# Fixed file names inside a run folder.
CONFIG_FILE = "config.yaml"  # resolved config; the first file written
SPLIT_FILE = "split.csv"  # path,label,split for every image used
SKIPPED_FILE = "skipped.csv"  # images that passed the data check but failed to decode later: path,label,split,reason
REJECTED_FILE = "rejected.csv"  # files the data check rejected: path,label,reason
DUPLICATES_FILE = "duplicates.csv"  # groups of byte-identical usable images: group,path,label,split,sha256
PREDICTIONS_FILE = "predictions.csv"  # per decoded image: split, label, each classifier's prediction
HISTORY_FILE = "history.csv"  # one row per epoch: loss, accuracy, val_loss, val_accuracy
METRICS_FILE = "metrics.json"  # the results; written last, so its presence means "finished"
LOG_FILE = "run.log"  # everything logged during the run
MODEL_FILE = "model.keras"  # the fine-tuned model (output.save_model); classifiers: <name>.joblib
TENSORBOARD_DIR = "tensorboard"  # TensorBoard logs (tracking.tensorboard)
CURVES_PLOT = "curves.png"  # loss and accuracy per epoch, train and val
CONFUSION_PLOT = "confusion.png"  # confusion matrices (test split), head and forest
ROC_PLOT = "roc.png"  # ROC curves (test split), head and forest; two-class tasks only

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str) -> str:
    """Turn a free-form run name into a folder name (letters, digits, ``._-``)."""
    cleaned = _SAFE_NAME.sub("_", name).strip("._")
    return cleaned or "run"


def new_run_dir(parent: str | os.PathLike, name: str) -> Path:
    """Create and return a fresh run folder ``parent/name``, never reusing an existing one.

    If ``name`` is taken, ``name2``, ``name3``, ... are tried (as ultralytics does with
    ``runs/exp2``). Creation uses ``mkdir`` without ``exist_ok``, so two processes
    racing for the same name cannot end up sharing a folder.
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    base = safe_name(name)
    for i in range(1, 10_000):
        candidate = parent / (base if i == 1 else f"{base}{i}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise RuntimeError(f"Could not find a free run folder name for {base!r} in {parent}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it into place atomically.

    Readers never see a half-written file: either the old content (or nothing) or the
    complete new file. On error the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
