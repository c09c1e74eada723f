"""The phases of a run after its model is built: train, predict, classify, plot, save, track.

Each takes what the phase before it produced, as typed values: the feed
(:class:`tlexp.pipeline.Feed`), each split's :class:`tlexp.model.Predictions`, each
classifier's :class:`Scored` result.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tlexp import files, runfolder
from tlexp.config import Config
from tlexp.data import SPLITS, Dataset
from tlexp.errors import DataError
from tlexp.experiment._outputs import write_skipped
from tlexp.logs import PhaseClock, show_progress

log = logging.getLogger("tlexp")


@dataclass
class Scored:
    """One classifier of a run: its record entry and its class probabilities per split.

    Attributes:
        result: what ``metrics.json`` holds of it (:class:`tlexp.results.ClassifierResult`).
        proba: split -> class probabilities, shape (n, k), rows as in the split's predictions.
    """

    result: Any
    proba: dict[str, np.ndarray]


def train(cfg: Config, feed, built, run_dir: Path) -> tuple[dict[str, list], list[dict]]:
    """Fit the feed's network, stage by stage (``train.schedule``); history.csv; an error if
    not one training image decoded.

    Returns:
        The per-epoch history of all stages (with each epoch's ``stage``), and the stages
        run as the run record keeps them.
    """
    from tlexp.experiment._schedule import run_schedule
    from tlexp.model import fit

    t = cfg.train
    log.info(
        "train: %s, %d epoch(s), batch %d, %s lr=%g", t.schedule, t.epochs, t.batch_size, t.optimizer, t.learning_rate
    )
    train_in, val_in = feed.fit_input("train", shuffle=True), feed.fit_input("val", shuffle=False)

    def fit_stage(epochs: int, initial_epoch: int) -> dict[str, list[float]]:
        return fit(
            feed.network.trainer,
            train_in.data,
            val_in.data,
            epochs,
            verbose=1 if show_progress() else 0,
            callbacks=train_in.callbacks,
            tensorboard_dir=run_dir / runfolder.TENSORBOARD_DIR if cfg.tracking.tensorboard else None,
            initial_epoch=initial_epoch,
        )

    history, stages = run_schedule(cfg, feed, built, fit_stage)
    if not history.get("loss"):  # every training image failed to decode: fit() ran no step
        write_skipped(run_dir, feed.dataset, feed.failed)
        raise DataError(
            f"None of the {len(feed.dataset.indices('train'))} training images could be decoded; "
            f"see {run_dir / runfolder.SKIPPED_FILE} for the reasons."
        )
    keys = [k for k in ("stage", "loss", "accuracy", "val_loss", "val_accuracy", "seconds") if k in history]
    files.write_csv(
        run_dir / runfolder.HISTORY_FILE,
        ["epoch", *keys],
        ([e + 1, *(history[k][e] for k in keys)] for e in range(len(history["loss"]))),
    )
    return history, stages


def predict(feed, run_dir: Path) -> dict[str, Any]:
    """One pass per split: the head's probabilities and the penultimate features together.

    Returns:
        split -> :class:`tlexp.model.Predictions`.
    """
    from tlexp.model import predict_with_features

    n_classes = len(feed.dataset.class_names)
    out = {
        s: predict_with_features(
            feed.network, feed.batches(s), n_classes, progress=f"predict {s}" if show_progress() else None
        )
        for s in SPLITS
    }
    skipped = write_skipped(run_dir, feed.dataset, feed.failed)
    if skipped:
        log.warning(
            "data: %d file(s) could not be decoded and were skipped; see %s", len(skipped), runfolder.SKIPPED_FILE
        )
    empty = [s for s in SPLITS if len(out[s].labels) == 0]
    if empty:
        raise DataError(f"No decodable image left in split(s) {empty}; see {run_dir / runfolder.SKIPPED_FILE}.")
    return out


def classify(out: dict[str, Any], ds: Dataset, classifiers: dict[str, Any], clock: PhaseClock) -> dict[str, Scored]:
    """Score the head, then fit and score every classical classifier on the same
    penultimate features of the same images.

    Returns:
        name -> :class:`Scored`, the head first.
    """
    from tlexp.classifiers import class_proba, describe
    from tlexp.results import ClassifierResult, classification_metrics

    def scores(proba: dict[str, np.ndarray], logits: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            s: classification_metrics(out[s].labels, proba[s], ds.class_names, logits=(logits or {}).get(s))
            for s in SPLITS
        }

    proba = {s: out[s].proba for s in SPLITS}
    # The head's log loss comes from its logits: exact, however confident it is.
    head = scores(proba, {s: out[s].logits for s in SPLITS})
    scored = {"head": Scored(ClassifierResult(kind="head", estimator="dense head", **head), proba)}
    _log_scores("head", scored["head"])
    feats = out["train"].features
    for name, estimator in classifiers.items():
        with clock(f"fit_{name}"):
            log.info("%s: fitting %s on %d x %d penultimate activations", name, describe(estimator), *feats.shape)
            estimator.fit(feats, out["train"].labels)
            proba = {s: class_proba(estimator, out[s].features, len(ds.class_names)) for s in SPLITS}
        kind = "forest" if name == "forest" else "sklearn"
        result = ClassifierResult(
            kind=kind, estimator=describe(estimator), n_features=int(feats.shape[1]), **scores(proba)
        )
        scored[name] = Scored(result, proba)
        _log_scores(name, scored[name])
    return scored


def _log_scores(name: str, scored: Scored) -> None:
    log.info("%s: val acc %.4f, test acc %.4f", name, scored.result.val.accuracy, scored.result.test.accuracy)


def plot(run_dir: Path, history, scored: dict[str, Scored], out: dict[str, Any], ds: Dataset) -> None:
    from tlexp.results import plot_confusions, plot_history, plot_roc

    plot_history(history, run_dir / runfolder.CURVES_PLOT)
    matrices = {name: s.result.test.confusion for name, s in scored.items()}
    plot_confusions(matrices, ds.class_names, run_dir / runfolder.CONFUSION_PLOT, title="Test split")
    if len(ds.class_names) == 2:
        y = out["test"].labels
        plot_roc({name: (y, s.proba["test"][:, 1]) for name, s in scored.items()}, run_dir / runfolder.ROC_PLOT)


def save_models(run_dir: Path, model, classifiers: dict[str, Any]) -> None:
    """model.keras and <name>.joblib, each written to a temp name and renamed into place."""
    import joblib

    from tlexp.model import plain_model

    # A fresh functional model over the same layers: the file gets the weights and the
    # architecture but not the optimizer state, which would more than double its size; and
    # standard Keras layers only (no InferenceMode wrapper), so plain Keras loads it anywhere.
    inference = plain_model(model)
    with files.private_tempdir(run_dir), files.atomic_path(run_dir / runfolder.MODEL_FILE, suffix=".keras") as tmp:
        inference.save(tmp)  # Keras insists on the .keras suffix
    for name, estimator in classifiers.items():
        with files.atomic_path(run_dir / f"{name}.joblib") as path:
            joblib.dump(estimator, path)
    log.info(
        "run: saved %s and %s", runfolder.MODEL_FILE, ", ".join(f"{n}.joblib" for n in classifiers) or "no classifier"
    )


def track(run_dir: Path, cfg: Config, parent: str | None) -> None:
    """Log the finished run folder to MLflow. A tracking failure does not fail the run:
    the folder is complete, and a later sweep re-run or 'tlexp' call logs it again."""
    from tlexp.results import TrackingError, log_run

    try:
        log_run(
            run_dir,
            cfg.tracking.mlflow.uri,
            cfg.tracking.mlflow.experiment,
            parent_run_id=parent,
            run_name=run_dir.name,
        )  # logs "mlflow: logged ..." itself
    except TrackingError as e:
        log.warning("mlflow: could not log %s: %s (the run folder itself is complete)", run_dir, e)
