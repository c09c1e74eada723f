"""Classify new images with a finished run: its saved model and classifiers (``tlexp predict``).

Images get exactly the run's preprocessing (same decoder, size and ``preprocess_input``);
the forest and the other classifiers see the same penultimate activations they were
trained on.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tlexp import files, runfolder
from tlexp.data import IMAGE_EXTENSIONS, is_image_name
from tlexp.errors import UserError

log = logging.getLogger("tlexp")


def find_images(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Image files named directly, or found recursively in folders (sorted, no duplicates).

    Raises:
        UserError: a path does not exist, or no image was found.
    """
    found: dict[Path, None] = {}
    for p in map(Path, paths):
        if p.is_dir():
            for dirpath, dirnames, files in os.walk(p):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for f in sorted(files):
                    if is_image_name(f):
                        found[Path(dirpath) / f] = None
        elif p.is_file():
            found[p] = None
        else:
            raise UserError(f"Not a file or folder: '{p}'. Give image files or folders of images.")
    if not found:
        raise UserError(f"No images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {', '.join(map(str, paths))}.")
    return list(found)


def predict_images(
    run_dir: str | os.PathLike, images: Sequence[Path], classifier: str = "head", batch_size: int = 64
) -> tuple[list[str], list[dict[str, Any]]]:
    """Class probabilities of ``images`` from one classifier of a finished run.

    Args:
        run_dir: a run folder written with ``output.save_model: true``.
        images: image files.
        classifier: ``head``, ``forest``, or the name of another classifier of the run.

    Returns:
        ``(class_names, rows)``; one row per image, in input order: ``path``,
        ``prediction`` (class name, empty if the file could not be decoded),
        ``proba`` (n_classes floats or None) and ``error`` (None or why it failed).

    Raises:
        UserError: not a finished run, no saved model, or an unknown classifier.
    """
    run_dir = Path(run_dir)
    record, available = _finished_run(run_dir)
    if classifier not in available:
        raise UserError(f"The run in '{run_dir}' has no classifier {classifier!r}; it has: {', '.join(available)}.")
    cfg, class_names = record.config, record.data.class_names
    out, failed = _head_pass(
        run_dir, images, cfg["data"]["image_size"], cfg["model"]["backbone"], len(class_names), batch_size
    )
    proba = out.proba
    if classifier != "head":
        import joblib

        from tlexp.classifiers import class_proba

        estimator = joblib.load(run_dir / f"{classifier}.joblib")
        proba = class_proba(estimator, out.features, len(class_names))
    by_index = {int(i): p for i, p in zip(out.indices, proba, strict=True)}
    rows = []
    for k, path in enumerate(images):
        p = by_index.get(k)
        rows.append(
            {
                "path": str(path),
                "prediction": class_names[int(np.argmax(p))] if p is not None else "",
                "proba": p.tolist() if p is not None else None,
                "error": failed.get(k),
            }
        )
    bad = sum(r["error"] is not None for r in rows)
    if bad:
        log.warning("predict: %d of %d file(s) could not be decoded; their rows say why", bad, len(rows))
    return class_names, rows


def _finished_run(run_dir: Path):
    """The run's record and the classifiers it saved (the head first).

    Raises:
        UserError: not a finished run folder, or one without a saved model.
    """
    if not (run_dir / runfolder.METRICS_FILE).is_file():
        raise UserError(f"'{run_dir}' is not a finished run folder (no {runfolder.METRICS_FILE}).")
    if not (run_dir / runfolder.MODEL_FILE).is_file():
        raise UserError(
            f"'{run_dir}' has no saved model ({runfolder.MODEL_FILE}): it ran with output.save_model=false. "
            "Run it again with output.save_model=true."
        )
    from tlexp.results import load_record

    return load_record(run_dir), ["head"] + sorted(p.stem for p in run_dir.glob("*.joblib"))


def _head_pass(run_dir: Path, images: Sequence[Path], image_size: int, backbone: str, n_classes: int, batch_size: int):
    """The saved model over ``images``: ``(Predictions, failed)``, ``failed`` mapping the
    index of each image that could not be decoded to why."""
    from tlexp.model import import_backend

    import_backend()
    import keras

    from tlexp.data import Decoder
    from tlexp.model import (
        InferenceMode,  # noqa: F401 - registers the layer, which older run folders' models hold
        Network,
        predict_with_features,
        preprocess_fn,
    )
    from tlexp.pipeline import BatchPlan, ImageSource, stream

    model = keras.saving.load_model(run_dir / runfolder.MODEL_FILE, compile=False)
    decoder = Decoder(Path("/"), [str(p.resolve()) for p in images], image_size)
    source = ImageSource(decoder, preprocess_fn(backbone), np.zeros(len(images), np.int64))
    batches = stream(source, np.arange(len(images)), BatchPlan(batch_size))
    return predict_with_features(Network.of_saved(model), batches, n_classes), decoder.failed


def write_predictions(path: str | os.PathLike | None, class_names: list[str], rows: list[dict[str, Any]]) -> None:
    """CSV ``path,prediction,p_<class>...,error``; to stdout when ``path`` is None."""
    header = ["path", "prediction", *(f"p_{c}" for c in class_names), "error"]
    lines = [
        [r["path"], r["prediction"], *(_fmt(r["proba"], i) for i in range(len(class_names))), r["error"] or ""]
        for r in rows
    ]
    _emit(path, header, lines)


def write_submission(
    path: str | os.PathLike | None, class_names: list[str], rows: list[dict[str, Any]], positive: str
) -> None:
    """Kaggle dogs-vs-cats submission: ``id,label`` with label = P(``positive``), sorted by id.

    The id is the file name's number (``test1/123.jpg`` -> 123).

    Raises:
        UserError: ``positive`` is not a class of the run, a file name has no number, or
            an image could not be decoded (a submission needs every id).
    """
    if positive not in class_names:
        raise UserError(f"--positive must be one of the run's classes {class_names}. Got {positive!r} instead.")
    k = class_names.index(positive)
    bad = [r["path"] for r in rows if r["proba"] is None]
    if bad:
        raise UserError(f"{len(bad)} image(s) could not be decoded (e.g. '{bad[0]}'); a submission needs every id.")
    out = []
    for r in rows:
        m = re.fullmatch(r"(\d+)", Path(r["path"]).stem)
        if not m:
            raise UserError(f"Submission ids come from file names like '123.jpg'; '{r['path']}' has none.")
        out.append((int(m.group(1)), f"{r['proba'][k]:.6f}"))
    _emit(path, ["id", "label"], sorted(out))


def _fmt(proba: list[float] | None, i: int) -> str:
    return "" if proba is None else f"{proba[i]:.6f}"


def _emit(path: str | os.PathLike | None, header: list[str], lines: list[list[Any]]) -> None:
    if path is None:
        import csv
        import sys

        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(header)
        w.writerows(lines)
    else:
        files.write_csv(path, header, lines)
