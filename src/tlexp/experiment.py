"""One experiment: config -> data -> backbone -> freeze -> head -> train -> forest -> metrics -> plots.

``plan_experiment`` does everything that needs no decoded image and no weights (what
``tlexp plan`` prints); ``run_experiment`` does the whole run and returns its folder.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import platform
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from tlexp import runs
from tlexp.config import Config
from tlexp.data import SPLITS, Dataset
from tlexp.dataprep import cache_dir, data_summary, make_decoder, prepare_data, show_progress, write_run_check
from tlexp.errors import DataError, UserError
from tlexp.tfquiet import import_tensorflow

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
    cache = {} if cache is None else cache
    data_key = ("data", json.dumps(cfg.data.model_dump(mode="json"), sort_keys=True), cfg.seed)
    if data_key not in cache:
        cache[data_key] = prepare_data(cfg, check=False)[0]
    ds = cache[data_key]
    import_tensorflow()
    from tlexp.backbones import apply_freeze, build_backbone, plan_freeze
    from tlexp.train import build_model, param_counts

    model_key = ("backbone", cfg.model.backbone, cfg.data.image_size)
    if model_key not in cache:
        cache[model_key] = build_backbone(cfg.model.backbone, cfg.data.image_size, None)
    backbone = cache[model_key]
    plan = apply_freeze(backbone, plan_freeze(backbone, cfg.model.freeze, cfg.model.batchnorm))
    model = build_model(backbone, cfg, len(ds.class_names))
    return {
        "config": cfg.to_dict(),
        "data": data_summary(ds),
        "freeze": plan.to_dict(),
        "model": param_counts(model),
    }


def run_experiment(cfg: Config, run_dir: str | os.PathLike | None = None, *,
                   mlflow_parent: str | None = None) -> Path:
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
    with _RunLog() as run_log:
        t_start = time.perf_counter()
        timings: dict[str, float] = {}
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")

        with _timed(timings, "weights"):
            from tlexp.weights import resolve_weights

            weights_path = resolve_weights(cfg.model.backbone, cfg.model.weights, cfg.model.download)
            from tlexp.forest import build_classifiers

            classifiers = build_classifiers(cfg)  # a bad class name fails here, before data work
            if cfg.tracking.mlflow.uri:
                from tlexp.tracking import require_mlflow

                require_mlflow(cfg.tracking.mlflow.uri)
        with _timed(timings, "data"):
            ds, check = prepare_data(cfg)

        with _timed(timings, "build"):
            model, backbone, plan, counts, accel = _build_model(cfg, len(ds.class_names), weights_path)

        if run_dir is None:
            run_dir = runs.new_run_dir(cfg.output.dir, cfg.run_name())
        else:
            run_dir = Path(run_dir)
            run_dir.mkdir(parents=True)  # never into an existing folder
        run_log.write_to(run_dir / runs.LOG_FILE)
        log.info("run: folder %s", run_dir)
        runs.write_yaml(run_dir / runs.CONFIG_FILE, cfg.to_dict())
        runs.write_csv(
            run_dir / runs.SPLIT_FILE, ["path", "label", "split"],
            ((p, ds.class_names[y], s) for p, y, s in zip(ds.paths, ds.labels, ds.split)),
        )
        check_info = write_run_check(run_dir, check, ds)
        try:
            with _timed(timings, "decode"):
                decoder = make_decoder(cfg, ds, check)
            result = _train_and_evaluate(cfg, ds, _Model(model, backbone, plan, accel), classifiers, decoder, check,
                                         run_dir, timings)
        except UserError as e:
            # The CLI prints the message itself (no traceback); run.log keeps a copy.
            run_log.file.emit(log.makeRecord(log.name, logging.ERROR, __file__, 0, "run: stopped: %s", (e,), None))
            log.error("run: %s holds what was written so far (no %s)", run_dir, runs.METRICS_FILE)
            raise
        except KeyboardInterrupt:
            log.error("run: interrupted; %s is incomplete (no %s)", run_dir, runs.METRICS_FILE)
            raise
        except Exception:
            log.exception("run: failed; %s holds what was written so far (no %s)", run_dir, runs.METRICS_FILE)
            raise
        timings["total"] = time.perf_counter() - t_start
        metrics = {
            "run": {"name": run_dir.name, "dir": str(run_dir), "started": started,
                    "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")},
            "data": {**data_summary(ds), **result.pop("data"), "check": check_info,
                     "decoded_cache": str(decoder.cache.folder) if hasattr(decoder, "cache") else None},
            "freeze": plan.to_dict(),
            "params": counts,
            **result,
            "timings_s": {k: round(v, 3) for k, v in timings.items()},
            "accelerator": accel.to_dict(),
            "environment": describe_environment(),
        }
        runs.write_json(run_dir / runs.METRICS_FILE, metrics)
        _log_summary(metrics)
        if cfg.tracking.mlflow.uri:
            _track(run_dir, cfg, mlflow_parent)
        log.info("run: done in %.1fs; results in %s", timings["total"], run_dir)
    return run_dir


def _build_model(cfg: Config, n_classes: int, weights_path: Path | None):
    """Backbone with weights, frozen per plan, head on top, compiled; logs the counts."""
    import_tensorflow()
    import keras

    from tlexp.backbones import apply_freeze, build_backbone, plan_freeze
    from tlexp.train import build_model, compile_model, param_counts

    from tlexp import accel as accel_mod

    keras.utils.set_random_seed(cfg.seed)
    accel = accel_mod.resolve(cfg.train)
    with accel_mod.scope(accel):
        backbone = build_backbone(cfg.model.backbone, cfg.data.image_size, weights_path)
        plan = apply_freeze(backbone, plan_freeze(backbone, cfg.model.freeze, cfg.model.batchnorm))
        model = build_model(backbone, cfg, n_classes)
        compile_model(model, cfg, n_classes)
    accel.jit_compile = bool(model.jit_compile)  # what Keras resolved "auto" to
    log.info("model: %s, precision %s, XLA %s, distribution %s", ", ".join(accel.gpus) or "CPU", accel.precision,
             "on" if accel.jit_compile else "off", accel.distribute)
    counts = param_counts(model)
    log.info(
        "model: %s, frozen %d/%d layers through %s = %.1f %% of backbone parameters (asked %s); "
        "trainable %s, non-trainable %s",
        cfg.model.backbone, plan.layers_frozen, plan.layers_total, plan.last_frozen_layer, 100 * plan.frozen_share,
        plan.requested, f"{counts['trainable']:,}", f"{counts['non_trainable']:,}",
    )
    return model, backbone, plan, counts, accel


@dataclass
class _Model:
    """The model of a run and what it was built from."""

    model: Any  # the whole model: image in, class probabilities out
    backbone: Any
    plan: Any  # FreezePlan
    accel: Any  # accel.Accel


def _train_and_evaluate(cfg: Config, ds: Dataset, built: _Model, classifiers: dict[str, Any], decoder, check,
                        run_dir: Path, timings: dict) -> dict[str, Any]:
    from tlexp import plots
    from tlexp.backbones import preprocess_fn
    from tlexp.forest import class_proba
    from tlexp.metrics import classification_metrics
    from tlexp.pipeline import make_dataset, without_index
    from tlexp.train import fit, predict_with_features

    n_classes = len(ds.class_names)
    label_dtype = "float32" if n_classes == 2 else "int32"

    def images(indices: np.ndarray, shuffle: bool):
        return make_dataset(decoder, indices, ds.labels, batch_size=cfg.train.batch_size,
                            preprocess=preprocess_fn(cfg.model.backbone), shuffle=shuffle, seed=cfg.seed,
                            label_dtype=label_dtype)

    with _timed(timings, "prefix"):
        cached, prefix_info = _cached_prefix(cfg, ds, built, check, decoder, images)
    if cached is None:  # the ordinary path: every epoch runs the whole model on images
        model, failed = built.model, decoder.failed

        def stream(split: str, shuffle: bool):
            return images(ds.indices(split), shuffle)
    else:  # the frozen prefix ran once; train and predict with the rest of the model
        from tlexp.pipeline import activation_dataset

        model, acts = cached
        failed = acts.failed
        dtypes = [str(t.dtype) for t in model.inputs]

        def stream(split: str, shuffle: bool):
            return activation_dataset(acts.arrays, acts.ok, ds.indices(split), ds.labels,
                                      batch_size=cfg.train.batch_size, shuffle=shuffle, seed=cfg.seed,
                                      label_dtype=label_dtype, dtypes=dtypes)

    with _timed(timings, "train"):
        log.info("train: %d epoch(s), batch %d, %s lr=%g", cfg.train.epochs, cfg.train.batch_size,
                 cfg.train.optimizer, cfg.train.learning_rate)
        history = fit(model, without_index(stream("train", True)), without_index(stream("val", False)),
                      cfg.train.epochs, verbose=1 if show_progress() else 0,
                      tensorboard_dir=run_dir / runs.TENSORBOARD_DIR if cfg.tracking.tensorboard else None)
    if not history.get("loss"):  # every training image failed to decode: fit() ran no step
        _write_skipped(run_dir, ds, failed)
        raise DataError(f"None of the {len(ds.indices('train'))} training images could be decoded; "
                        f"see {run_dir / runs.SKIPPED_FILE} for the reasons.")
    keys = [k for k in ("loss", "accuracy", "val_loss", "val_accuracy", "seconds") if k in history]
    runs.write_csv(run_dir / runs.HISTORY_FILE, ["epoch", *keys],
                   ([e + 1, *(history[k][e] for k in keys)] for e in range(len(history[keys[0]]))))

    # One pass per split gives the head's predictions and the forest's features together.
    with _timed(timings, "predict"):
        out = {s: predict_with_features(model, stream(s, False), n_classes,
                                        progress=f"predict {s}" if show_progress() else None) for s in SPLITS}
    skipped = _write_skipped(run_dir, ds, failed)
    if skipped:
        log.warning("data: %d file(s) could not be decoded and were skipped; see %s", len(skipped), runs.SKIPPED_FILE)
    empty = [s for s in SPLITS if len(out[s]["labels"]) == 0]
    if empty:
        raise DataError(f"No decodable image left in split(s) {empty}; see {run_dir / runs.SKIPPED_FILE}.")

    result: dict[str, Any] = {
        "data": {"used": {s: int(len(out[s]["labels"])) for s in SPLITS}, "skipped": len(skipped)},
        "history": history,
        "head": {s: classification_metrics(out[s]["labels"], out[s]["proba"], ds.class_names) for s in SPLITS},
        "forest": None,
        "prefix_cache": prefix_info,
    }
    log.info("head: val acc %.4f, test acc %.4f", result["head"]["val"]["accuracy"], result["head"]["test"]["accuracy"])

    # The same penultimate features of the same images go to every classical classifier.
    feats = out["train"]["features"]
    probas: dict[str, dict[str, np.ndarray]] = {"head": {s: out[s]["proba"] for s in SPLITS}}
    result["classifiers"] = {}
    for name, estimator in classifiers.items():
        tag = "rf" if name == "forest" else name  # log prefix
        with _timed(timings, f"fit_{name}"):
            log.info("%s: fitting %s on %d x %d penultimate activations", tag, _describe(estimator), *feats.shape)
            estimator.fit(feats, out["train"]["labels"])
            probas[name] = {s: class_proba(estimator, out[s]["features"], n_classes) for s in SPLITS}
        scores = {s: classification_metrics(out[s]["labels"], probas[name][s], ds.class_names) for s in SPLITS}
        if name == "forest":
            result["forest"] = {"n_features": int(feats.shape[1]), **scores}
        else:
            result["classifiers"][name] = scores
        log.info("%s: val acc %.4f, test acc %.4f", tag, scores["val"]["accuracy"], scores["test"]["accuracy"])
    _write_predictions(run_dir, ds, out, probas)
    if cfg.output.save_model:
        _save_models(run_dir, built.model, classifiers)  # the whole model: images in

    with _timed(timings, "plots"):
        plots.plot_history(history, run_dir / runs.CURVES_PLOT)
        matrices = {name: _scores(result, name)["test"]["confusion"] for name in probas}
        plots.plot_confusions(matrices, ds.class_names, run_dir / runs.CONFUSION_PLOT, title="Test split")
        if n_classes == 2:
            y = out["test"]["labels"]
            curves = {name: (y, p["test"][:, 1]) for name, p in probas.items()}
            plots.plot_roc(curves, run_dir / runs.ROC_PLOT)
    return result


def _cached_prefix(cfg: Config, ds: Dataset, built: _Model, check, decoder, images):
    """The frozen prefix's activations for every image, and the model that takes them.

    Returns:
        ``((suffix model, activations), info)`` when the cached path is taken, else
        ``(None, info)``; ``info`` (for metrics.json) says what was cached, or why not.
    """
    from tlexp import accel as accel_mod
    from tlexp.prefixcache import ActivationStore, Fallback, blocker, image_key, prefix_activations
    from tlexp.train import compile_model, suffix_model

    pc, cut = cfg.train.prefix_cache, built.plan.layers_frozen
    why = blocker(built.backbone, cut, enabled=pc.enabled, batchnorm=cfg.model.batchnorm, distribute=built.accel.distribute)
    if why is None:
        sha = {f.path: f.sha256 for f in check.usable()}
        # The compute dtype is part of the key: mixed precision changes the activations.
        key = f"{image_key(ds.paths, [sha[p] for p in ds.paths], cfg.data.image_size)}|{built.accel.precision}"
        store = ActivationStore(cache_dir(cfg), int(pc.max_gb * 1e9))
        try:
            acts = prefix_activations(built.backbone, cut, store=store,
                                      images=lambda: images(np.arange(len(ds.paths)), False),
                                      failures=lambda: dict(decoder.failed), n_files=len(ds.paths), data_key=key,
                                      dtype=pc.dtype, batch_size=cfg.train.batch_size)
        except Fallback as e:
            why = str(e)
        except OSError as e:  # disk full, no permission: the run still works the ordinary way
            why = f"could not write the activation cache: {e}"
    if why is not None:
        log.info("train: no cached prefix (%s); every epoch runs the whole model", why)
        return None, {"used": False, "reason": why}
    with accel_mod.scope(built.accel):
        suffix = suffix_model(built.model, built.backbone, cut, cfg)
        compile_model(suffix, cfg, len(ds.class_names))
    how = "reused" if acts.source == "reused" else f"computed from {acts.source} in {acts.seconds:.1f}s"
    log.info("train: cached prefix: %s (%s, %s); training %s on it", acts.summary(), acts.dtype, how, suffix.name)
    return (suffix, acts), acts.describe()


def _track(run_dir: Path, cfg: Config, parent: str | None) -> None:
    """Log the finished run folder to MLflow. A tracking failure does not fail the run:
    the folder is complete, and a later sweep re-run or 'tlexp' call logs it again."""
    from tlexp.tracking import TrackingError, log_run

    try:
        run_id = log_run(run_dir, cfg.tracking.mlflow.uri, cfg.tracking.mlflow.experiment, parent_run_id=parent,
                         run_name=run_dir.name)
        log.info("mlflow: logged as run %s in experiment %r", run_id, cfg.tracking.mlflow.experiment)
    except TrackingError as e:
        log.warning("mlflow: could not log %s: %s (the run folder itself is complete)", run_dir, e)


def _save_models(run_dir: Path, model, classifiers: dict[str, Any]) -> None:
    """model.keras and <name>.joblib, each written to a temp name and renamed into place."""
    import joblib
    import keras

    # A fresh functional model over the same layers: the file gets the weights and the
    # architecture but not the optimizer state, which would more than double its size.
    inference = keras.Model(model.input, model.output, name=model.name)  # single tensors, as built
    tmp = run_dir / f".{runs.MODEL_FILE}.{os.getpid()}.keras"  # Keras insists on the .keras suffix
    try:
        inference.save(tmp)
        os.replace(tmp, run_dir / runs.MODEL_FILE)
    finally:
        tmp.unlink(missing_ok=True)
    for name, estimator in classifiers.items():
        with runs.atomic_path(run_dir / f"{name}.joblib") as path:
            joblib.dump(estimator, path)
    log.info("run: saved %s and %s", runs.MODEL_FILE, ", ".join(f"{n}.joblib" for n in classifiers) or "no classifier")


def _scores(result: dict[str, Any], name: str) -> dict[str, Any]:
    """The metrics of classifier ``name`` (head, forest, or an extra one) in a result dict."""
    return result[name] if name in ("head", "forest") else result["classifiers"][name]


def _write_predictions(run_dir: Path, ds: Dataset, out: dict, probas: dict[str, dict[str, np.ndarray]]) -> None:
    """predictions.csv: one row per decoded image, every classifier's predicted class
    (and, for two classes, its probability of the positive class): what paired
    comparisons of classifiers on the same images are computed from."""
    names = list(probas)
    binary = len(ds.class_names) == 2
    header = ["path", "split", "label"] + [c for n in names for c in ([n, f"{n}_p1"] if binary else [n])]
    rows = []
    for s in SPLITS:
        for row, i in enumerate(out[s]["indices"]):
            line = [ds.paths[i], s, ds.class_names[ds.labels[i]]]
            for n in names:
                p = probas[n][s][row]
                line.append(ds.class_names[int(np.argmax(p))])
                if binary:
                    line.append(f"{p[1]:.6f}")
            rows.append(line)
    runs.write_csv(run_dir / runs.PREDICTIONS_FILE, header, rows)


def _describe(estimator) -> str:
    steps = getattr(estimator, "steps", None)
    return " + ".join(type(e).__name__ for _, e in steps) if steps else type(estimator).__name__


def _write_skipped(run_dir: Path, ds: Dataset, failed: dict[int, str]) -> list[tuple[int, str]]:
    skipped = sorted(failed.items())
    runs.write_csv(run_dir / runs.SKIPPED_FILE, ["path", "label", "split", "reason"],
                   ((ds.paths[i], ds.class_names[ds.labels[i]], ds.split[i], why) for i, why in skipped))
    return skipped


def _log_summary(metrics: dict[str, Any]) -> None:
    names = ["head"] + (["forest"] if metrics.get("forest") else []) + list(metrics.get("classifiers", {}))
    for name in names:
        t = _scores(metrics, name)["test"]
        auc = f"{t['roc_auc']:.4f}" if t.get("roc_auc") is not None else "n/a"
        log.info("result: %-8s test accuracy %.4f  F1 %.4f  ROC-AUC %s  (n=%d)", name, t["accuracy"], t["f1"], auc,
                 t["n"])


def describe_environment() -> dict[str, Any]:
    import keras
    import sklearn
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    names = []
    for g in gpus:
        try:
            names.append(tf.config.experimental.get_device_details(g).get("device_name", g.name))
        except Exception:  # noqa: BLE001 - details are best effort
            names.append(g.name)
    return {
        "device": ", ".join(names) if names else f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "scikit_learn": sklearn.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }


@contextmanager
def _timed(timings: dict[str, float], phase: str) -> Iterator[None]:
    t = time.perf_counter()
    try:
        yield
    finally:
        timings[phase] = timings.get(phase, 0.0) + time.perf_counter() - t


class _RunLog:
    """Collects the tlexp log from the start of a run; once the run folder exists, writes
    what was collected, and everything after it, to its run.log."""

    def __init__(self) -> None:
        self.buffer = logging.handlers.BufferingHandler(capacity=1_000_000)
        self.file: logging.Handler | None = None
        self.old_level = log.level

    def __enter__(self) -> _RunLog:
        log.addHandler(self.buffer)
        if log.getEffectiveLevel() > logging.INFO:  # a notebook user who set nothing still gets run.log
            log.setLevel(logging.INFO)
        return self

    def write_to(self, path: Path) -> None:
        self.file = logging.FileHandler(path, encoding="utf-8")
        self.file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        for record in self.buffer.buffer:
            self.file.handle(record)
        log.removeHandler(self.buffer)
        self.buffer.buffer.clear()
        log.addHandler(self.file)

    def __exit__(self, *exc: object) -> None:
        log.setLevel(self.old_level)
        for h in (self.buffer, self.file):
            if h is not None:
                log.removeHandler(h)
                h.close()
