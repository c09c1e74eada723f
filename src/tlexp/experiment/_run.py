"""One experiment, read top-down as its phases.

:func:`run_experiment`: check the inputs (weights, classifiers) -> find, check and split
the data -> decode it (the decoded-image cache) -> build the backbone, freeze it, put
the head on -> open the run folder -> pick the feed (images through the whole model, or
the cached frozen prefix through the rest) -> train -> one prediction pass per split
(the head's logits and the penultimate features) -> fit the forest and the other
classifiers on those features -> write predictions, models, plots -> write the run
record (``metrics.json``) last.

:func:`plan_experiment` does everything that needs no decoded image and no weights
(what ``tlexp plan`` prints).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from tlexp import files, runfolder
from tlexp.config import Config
from tlexp.data import SPLITS, Dataset, data_summary, make_decoder, prepare_data, write_run_check
from tlexp.errors import DataError, UserError
from tlexp.experiment._outputs import write_predictions, write_skipped
from tlexp.logs import PhaseClock, RunLog, show_progress
from tlexp.results import RunRecord

log = logging.getLogger("tlexp")


def plan_experiment(cfg: Config, cache: dict[Any, Any] | None = None) -> dict[str, Any]:
    """What a run would do, without decoding an image or loading weights.

    Args:
        cfg: the config.
        cache: pass the same dict to plan many configs (a sweep's cells): the dataset and
            each backbone are then found / built once.

    Returns:
        ``{"config", "data", "freeze", "model"}``: the resolved config, the dataset found
        (layout, classes, counts per split), the freeze plan (with backbone parameter
        counts) and the whole model's parameter counts.
    """
    from tlexp.model import import_backend

    cache = {} if cache is None else cache
    data_key = ("data", json.dumps(cfg.data.model_dump(mode="json"), sort_keys=True), cfg.seed)
    if data_key not in cache:
        cache[data_key] = prepare_data(cfg, check=False)[0]
    ds = cache[data_key]
    import_backend()
    from tlexp.model import apply_freeze, build_backbone, build_model, param_counts, plan_freeze

    model_key = ("backbone", cfg.model.backbone, cfg.data.image_size)
    if model_key not in cache:
        cache[model_key] = build_backbone(cfg.model.backbone, cfg.data.image_size, None)
    backbone = cache[model_key]
    plan = apply_freeze(backbone, plan_freeze(backbone, cfg.model.freeze, cfg.model.batchnorm))
    whole = build_model(backbone, cfg, len(ds.class_names))
    return {
        "config": cfg.to_dict(),
        "data": data_summary(ds),
        "freeze": plan.to_dict(),
        "model": param_counts(whole.model),
    }


def run_experiment(cfg: Config, run_dir: str | os.PathLike | None = None, *, mlflow_parent: str | None = None) -> Path:
    """Run one experiment end to end and write its run folder.

    Order matters for the user: weights and data problems fail in seconds, before a run
    folder exists; the resolved config is the first file written; ``metrics.json`` is
    the last, so its presence means the run finished.

    Args:
        cfg: a validated config without a sweep.
        run_dir: the exact folder to create (it must not exist; sweeps use this);
            default ``<output.dir>/<name>``, or ``<name>2``, ... if taken.
        mlflow_parent: MLflow run id to nest this run under (a sweep's parent run).

    Returns:
        The run folder.
    """
    if cfg.sweep:
        raise UserError(
            f"This config defines a sweep over {', '.join(cfg.sweep)}; run it with 'tlexp sweep', "
            "or add sweep={} to run its base config once."
        )
    clock = PhaseClock()
    with RunLog() as run_log, contextlib.ExitStack() as on_devices:
        with clock("weights"):
            weights_path, classifiers = _check_inputs(cfg)
        with clock("data"):
            ds, check = prepare_data(cfg)
        with clock("decode"):  # before the run folder: a full cache disk fails a run that left nothing
            decoder = make_decoder(cfg, ds, check)
        with clock("build"):
            built = _build(cfg, len(ds.class_names), weights_path, on_devices)
        run_dir = _open_run_dir(cfg, run_dir, run_log)
        try:  # from here on, whatever stops the run says so in its run.log
            files.write_yaml(run_dir / runfolder.CONFIG_FILE, cfg.to_dict())
            files.write_csv(
                run_dir / runfolder.SPLIT_FILE,
                ["path", "label", "split"],
                ((p, ds.class_names[y], s) for p, y, s in zip(ds.paths, ds.labels, ds.split, strict=True)),
            )
            check_info = write_run_check(run_dir, check, ds, cfg.data.near_duplicate_threshold)
            with clock("prefix"):
                from tlexp.pipeline import open_feed

                feed = open_feed(cfg, ds, built.whole, built.plan, built.accel, check, decoder)
            with clock("train"):
                history = _train(cfg, feed, run_dir)
            with clock("predict"):
                out = _predict(feed, run_dir)
            results, probas = _classify(out, ds, classifiers, clock)
            write_predictions(run_dir, ds, out, probas)
            if cfg.output.save_model:
                _save_models(run_dir, built.whole.model, classifiers)
            with clock("plots"):
                _plot(run_dir, history, results, out, probas, ds)
        except UserError as e:
            run_log.file_only(logging.ERROR, "run: stopped: %s", e)  # the CLI prints it, without a traceback
            log.error("run: %s holds what was written so far (no %s)", run_dir, runfolder.METRICS_FILE)
            raise
        except KeyboardInterrupt:
            log.error("run: interrupted; %s is incomplete (no %s)", run_dir, runfolder.METRICS_FILE)
            raise
        except OSError as e:
            if not files.is_disk_full(e):
                log.exception("run: failed; %s holds what was written so far (no %s)", run_dir, runfolder.METRICS_FILE)
                raise
            run_log.file_only(logging.ERROR, "run: stopped: %s", files.disk_full_message(e))  # the CLI prints it
            log.error("run: %s holds what was written so far (no %s)", run_dir, runfolder.METRICS_FILE)
            raise
        except Exception:
            log.exception("run: failed; %s holds what was written so far (no %s)", run_dir, runfolder.METRICS_FILE)
            raise
        record = RunRecord(
            run={"name": run_dir.name, "dir": str(run_dir), "started": clock.started, "finished": _now()},
            config=cfg.to_dict(),
            data={
                **data_summary(ds),
                "used": {s: len(out[s]["labels"]) for s in SPLITS},
                "skipped": len(feed.failed),
                "check": check_info,
                "decoded_cache": str(decoder.cache.folder) if hasattr(decoder, "cache") else None,
            },
            freeze=built.plan.to_dict(),
            params=built.counts,
            classifiers=results,
            history={
                k: v for k, v in history.items() if k in ("loss", "accuracy", "val_loss", "val_accuracy", "seconds")
            },
            prefix_cache=feed.prefix_cache,
            timings_s=clock.seconds(),
            accelerator=built.accel.to_dict(),
            environment=_environment(),
        )
        record.save(run_dir)
        for name, result in record.classifiers.items():
            t = result.test
            f1, auc = (f"{v:.4f}" if v is not None else "n/a" for v in (t.f1, t.roc_auc))
            log.info("result: %-8s test accuracy %.4f  F1 %s  ROC-AUC %s  (n=%d)", name, t.accuracy, f1, auc, t.n)
        if cfg.tracking.mlflow.uri:
            _track(run_dir, cfg, mlflow_parent)
        log.info("run: done in %.1fs; results in %s", record.timings_s["total"], run_dir)
    return run_dir


# --------------------------------------------------------------------------- phases


def _check_inputs(cfg: Config) -> tuple[Path | None, dict[str, Any]]:
    """The weights file and the unfitted classifiers; missing weights, a bad classifier
    or a missing MLflow fail here, in seconds, before any data work (and so does a
    Keras backend that is not installed)."""
    from tlexp.classifiers import build_classifiers
    from tlexp.model import check_backend, resolve_weights

    check_backend()
    weights_path = resolve_weights(cfg.model.backbone, cfg.model.weights, cfg.model.download)
    classifiers = build_classifiers(cfg)
    if cfg.tracking.tensorboard:  # Keras' TensorBoard callback writes with tf.summary
        from tlexp.model import require_tensorflow

        require_tensorflow("tracking.tensorboard (Keras' TensorBoard callback)")
    if cfg.tracking.mlflow.uri:
        from tlexp.results import require_mlflow

        require_mlflow(cfg.tracking.mlflow.uri)
    return weights_path, classifiers


@dataclass
class _Built:
    """The model of a run and what it was built from."""

    whole: Any  # tlexp.model._head.TransferModel: image in, class probabilities out
    plan: Any  # tlexp.model._freeze.FreezePlan
    accel: Any  # tlexp.model._accel.Accel
    counts: dict[str, int]


def _build(cfg: Config, n_classes: int, weights_path: Path | None, on_devices: contextlib.ExitStack) -> _Built:
    """Backbone with weights, frozen per plan, head on top, compiled; logs the counts.

    ``on_devices`` gets the run's device context (JAX's data parallel distribution), which
    must hold from the first variable made to the last prediction: the caller's stack
    closes it when the run ends.
    """
    from tlexp.model import import_backend

    import_backend()
    import keras

    from tlexp.model import _accel as accel_mod
    from tlexp.model import apply_freeze, build_backbone, build_model, compile_model, param_counts, plan_freeze

    keras.utils.set_random_seed(cfg.seed)
    accel_mod.set_determinism(cfg.train.deterministic)
    accel = accel_mod.resolve(cfg.train)
    on_devices.enter_context(accel_mod.devices(accel))
    with accel_mod.scope(accel):
        backbone = build_backbone(cfg.model.backbone, cfg.data.image_size, weights_path)
        plan = apply_freeze(backbone, plan_freeze(backbone, cfg.model.freeze, cfg.model.batchnorm))
        whole = build_model(backbone, cfg, n_classes)
        compile_model(whole.trainer, cfg, n_classes)
    accel.jit_compile = bool(whole.trainer.jit_compile)  # what Keras resolved "auto" to
    log.info(
        "model: %s, precision %s, XLA %s, distribution %s",
        ", ".join(accel.gpus) or "CPU",
        accel.precision,
        "on" if accel.jit_compile else "off",
        accel.distribute if accel.distribute == "none" else f"{accel.distribute} over {accel.replicas} devices",
    )
    counts = param_counts(whole.model)
    log.info(
        "model: %s, frozen %d/%d layers through %s = %.1f %% of backbone parameters (asked %s); "
        "trainable %s, non-trainable %s",
        cfg.model.backbone,
        plan.layers_frozen,
        plan.layers_total,
        plan.last_frozen_layer,
        100 * plan.frozen_share,
        plan.requested,
        f"{counts['trainable']:,}",
        f"{counts['non_trainable']:,}",
    )
    return _Built(whole, plan, accel, counts)


def _open_run_dir(cfg: Config, run_dir: str | os.PathLike | None, run_log: RunLog) -> Path:
    """Create the run folder (never an existing one) and start its run.log."""
    if run_dir is None:
        run_dir = runfolder.new_run_dir(cfg.output.dir, cfg.run_name())
    else:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True)  # never into an existing folder
    run_log.write_to(run_dir / runfolder.LOG_FILE)
    log.info("run: folder %s", run_dir)
    return run_dir


def _train(cfg: Config, feed, run_dir: Path) -> dict[str, list[float]]:
    """Fit the feed's network; history.csv; an error if not one training image decoded."""
    from tlexp.model import fit

    log.info(
        "train: %d epoch(s), batch %d, %s lr=%g",
        cfg.train.epochs,
        cfg.train.batch_size,
        cfg.train.optimizer,
        cfg.train.learning_rate,
    )
    history = fit(
        feed.network.trainer,
        feed.fit_batches("train", shuffle=True),
        feed.fit_batches("val", shuffle=False),
        cfg.train.epochs,
        verbose=1 if show_progress() else 0,
        tensorboard_dir=run_dir / runfolder.TENSORBOARD_DIR if cfg.tracking.tensorboard else None,
    )
    if not history.get("loss"):  # every training image failed to decode: fit() ran no step
        write_skipped(run_dir, feed.dataset, feed.failed)
        raise DataError(
            f"None of the {len(feed.dataset.indices('train'))} training images could be decoded; "
            f"see {run_dir / runfolder.SKIPPED_FILE} for the reasons."
        )
    keys = [k for k in ("loss", "accuracy", "val_loss", "val_accuracy", "seconds") if k in history]
    files.write_csv(
        run_dir / runfolder.HISTORY_FILE,
        ["epoch", *keys],
        ([e + 1, *(history[k][e] for k in keys)] for e in range(len(history["loss"]))),
    )
    return history


def _predict(feed, run_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    """One pass per split: the head's probabilities and the penultimate features together."""
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
    empty = [s for s in SPLITS if len(out[s]["labels"]) == 0]
    if empty:
        raise DataError(f"No decodable image left in split(s) {empty}; see {run_dir / runfolder.SKIPPED_FILE}.")
    return out


def _classify(out: dict, ds: Dataset, classifiers: dict[str, Any], clock: PhaseClock):
    """Score the head, then fit and score every classical classifier on the same
    penultimate features of the same images.

    Returns:
        ``(results, probas)``: the record's ``classifiers`` (head first) and each one's
        class probabilities per split, shape (n, k).
    """
    from tlexp.classifiers import class_proba, describe
    from tlexp.results import classification_metrics

    def scores(probas: dict[str, np.ndarray], logits: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            s: classification_metrics(out[s]["labels"], probas[s], ds.class_names, logits=(logits or {}).get(s))
            for s in SPLITS
        }

    probas = {"head": {s: out[s]["proba"] for s in SPLITS}}
    # The head's log loss comes from its logits: exact, however confident it is.
    head = scores(probas["head"], {s: out[s]["logits"] for s in SPLITS})
    results = {"head": {"kind": "head", "estimator": "dense head", **head}}
    log.info(
        "head: val acc %.4f, test acc %.4f", results["head"]["val"]["accuracy"], results["head"]["test"]["accuracy"]
    )
    feats = out["train"]["features"]
    for name, estimator in classifiers.items():
        with clock(f"fit_{name}"):
            log.info("%s: fitting %s on %d x %d penultimate activations", name, describe(estimator), *feats.shape)
            estimator.fit(feats, out["train"]["labels"])
            probas[name] = {s: class_proba(estimator, out[s]["features"], len(ds.class_names)) for s in SPLITS}
        results[name] = {
            "kind": "forest" if name == "forest" else "sklearn",
            "estimator": describe(estimator),
            "n_features": int(feats.shape[1]),
            **scores(probas[name]),
        }
        log.info(
            "%s: val acc %.4f, test acc %.4f", name, results[name]["val"]["accuracy"], results[name]["test"]["accuracy"]
        )
    return results, probas


def _plot(run_dir: Path, history, results: dict[str, Any], out: dict, probas: dict, ds: Dataset) -> None:
    from tlexp.results import _plots as plots

    plots.plot_history(history, run_dir / runfolder.CURVES_PLOT)
    matrices = {name: r["test"]["confusion"] for name, r in results.items()}
    plots.plot_confusions(matrices, ds.class_names, run_dir / runfolder.CONFUSION_PLOT, title="Test split")
    if len(ds.class_names) == 2:
        y = out["test"]["labels"]
        plots.plot_roc({name: (y, p["test"][:, 1]) for name, p in probas.items()}, run_dir / runfolder.ROC_PLOT)


# --------------------------------------------------------------------------- files


def _save_models(run_dir: Path, model, classifiers: dict[str, Any]) -> None:
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


def _track(run_dir: Path, cfg: Config, parent: str | None) -> None:
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


def _environment() -> dict[str, Any]:
    from tlexp.model import describe_environment

    return describe_environment()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
