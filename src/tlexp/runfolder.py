"""Run folders: fixed file names, never-overwritten folders, the per-image CSV files. No TensorFlow.

Every file a run writes has a fixed name (documented in the docs: docs/reference/files.md, generated from
these constants), so tools that read run folders (sweeps, reports) never have to guess.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

SPLITS = ("train", "val", "test")

# Fixed file names inside a run folder.
CONFIG_FILE = "config.yaml"  # resolved config; the first file written after run.log is opened
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

# Fixed file names of a depth probe's folder ('tlexp probe'; <sweep>/probes/<backbone>/ with probe.enabled).
PROBES_DIR = "probes"  # in a sweep folder: one probe folder per backbone
PROBE_FILE = "probe.json"  # every depth's scores; written last, so its presence means "finished"
PROBE_CSV = "probe.csv"  # one row per depth and classifier
PROBE_PLOT = "probe.png"  # test accuracy against depth, one line per classifier
PROBE_LOG = "probe.log"  # everything logged during the probe

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
