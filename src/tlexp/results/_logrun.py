"""One finished run folder logged as one MLflow run: its config, curves, scores and files. No TensorFlow.

Everything is read back from the run folder after the run (``config.yaml``,
``history.csv``, ``metrics.json``, the plots), so the run folder stays the one source of
truth, any old run folder can be logged later, and a tracking server that is down
never costs a training run. Where runs go and how tlexp talks to MLflow is
:mod:`tlexp.results._tracking`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlexp import files, runfolder
from tlexp.config import flatten
from tlexp.results._tracking import TrackingError, experiment_id, find_run, mlflow_client

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from tlexp.results._record import RunRecord

log = logging.getLogger("tlexp")

TAG_RUN_DIR = "tlexp.run_dir"  # absolute run folder; set last, so it marks a complete upload
# The limits of the oldest stores tlexp supports (MLflow 2.x file store, older servers);
# newer MLflow allows 6000-character values, but a value cut here is cut everywhere alike.
MAX_PARAM_VALUE = 500
PARAMS_PER_BATCH = 100
METRICS_PER_BATCH = 1000
SPLITS = ("train", "val", "test")
FINAL_METRICS = ("accuracy", "log_loss", "f1", "roc_auc")
# Characters every MLflow version accepts in param, metric and tag keys.
_BAD_KEY_CHARS = re.compile(r"[^\w./\- ]")


def log_run(
    run_dir: str | os.PathLike,
    uri: str,
    experiment: str,
    *,
    parent_run_id: str | None = None,
    run_name: str | None = None,
) -> str:
    """Log one finished run folder as one MLflow run and return the MLflow run id.

    Logged: the resolved config as params (dotted keys, values as text, cut to 500
    characters); ``history.csv`` as per-epoch metrics (``loss``, ``val_accuracy``, ...,
    ``step`` = epoch); final metrics ``<split>_<classifier>_<metric>`` (e.g.
    ``test_head_accuracy``, ``val_forest_f1``, ``test_logreg_roc_auc``; null values
    skipped) plus ``frozen_share``, ``trainable_params`` and ``wall_time_s``; tags
    ``tlexp.backbone``, ``tlexp.seed``, ``tlexp.version`` and ``tlexp.run_dir``; the
    plots at the artifact root and the whole run folder (models included) under ``run/``.

    Idempotent: a run in ``experiment`` tagged with this folder's absolute path is
    returned without logging anything, so a resumed sweep never duplicates its cells.
    The tag is set only after everything else is logged, and an upload that fails is
    marked FAILED and deleted, so an interrupted upload is redone on the next call.

    Args:
        run_dir: A finished run folder (one with ``metrics.json``).
        uri: Tracking URI or local path (see :func:`~tlexp.results.resolve_uri`).
        experiment: MLflow experiment name; created if missing.
        parent_run_id: Nest the run under this one (a sweep's, from
            :func:`~tlexp.results.sweep_parent`).
        run_name: Name shown in MLflow; default the run folder's name.

    Raises:
        TrackingError: The folder is not a finished run, or MLflow refused the upload.
    """
    from tlexp.version import __version__

    run_dir = Path(run_dir).expanduser().resolve()
    record = _finished_record(run_dir)
    config = record.config
    start_ms = _ms(record.run.started)
    tags = {
        "tlexp.backbone": str((config.get("model") or {}).get("backbone", "")),
        "tlexp.seed": str(config.get("seed", "")),
        "tlexp.version": __version__,
    }
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id  # how MLflow nests runs, with or without the fluent API

    with mlflow_client(uri) as (client, resolved):
        exp_id = experiment_id(client, resolved, experiment)
        existing = find_run(client, exp_id, TAG_RUN_DIR, str(run_dir))
        if existing:
            log.info("mlflow: %s already logged as run %s; not logging it again", run_dir.name, existing)
            return existing
        run_id = client.create_run(
            exp_id, start_time=start_ms, tags=tags, run_name=run_name or run_dir.name
        ).info.run_id
        try:
            _upload(client, run_id, run_dir, record)
        except BaseException:
            # Leave no half-logged run to be mistaken for a result; the next call starts afresh.
            with contextlib.suppress(Exception):
                client.set_terminated(run_id, "FAILED")
                client.delete_run(run_id)
            raise
    log.info("mlflow: logged %s as run %s in experiment %r (%s)", run_dir.name, run_id, experiment, resolved)
    return run_id


def _finished_record(run_dir: Path) -> RunRecord:
    """The record of ``run_dir``; TrackingError if the run did not finish or its record is unreadable."""
    from tlexp.results._record import RecordError, load_record

    if not (run_dir / runfolder.METRICS_FILE).is_file():
        raise TrackingError(
            f"Cannot log {run_dir} to MLflow: it has no {runfolder.METRICS_FILE}, "
            "so the run did not finish. Log only finished run folders."
        )
    try:
        return load_record(run_dir)
    except RecordError as e:
        raise TrackingError(f"Cannot log {run_dir} to MLflow: {e}") from None


def _upload(client: MlflowClient, run_id: str, run_dir: Path, record: RunRecord) -> None:
    """Log the run's params, metrics and files into the created run ``run_id``, then mark it complete."""
    end_ms = _ms(record.run.finished)
    stamp = end_ms or _ms(record.run.started) or int(time.time() * 1000)  # MLflow wants a timestamp on every metric
    _log_batches(client, run_id, params=_params(record.config))
    _log_batches(
        client,
        run_id,
        metrics=_history_metrics(run_dir / runfolder.HISTORY_FILE, stamp) + _final_metrics(record, stamp),
    )
    for plot in sorted(run_dir.glob("*.png")):
        client.log_artifact(run_id, str(plot))
    client.log_artifacts(run_id, str(run_dir), artifact_path="run")
    client.set_tag(run_id, TAG_RUN_DIR, str(run_dir))
    client.set_terminated(run_id, "FINISHED", end_time=end_ms)


def _log_batches(client: MlflowClient, run_id: str, *, params: list | None = None, metrics: list | None = None) -> None:
    """``log_batch`` in chunks within MLflow's per-request limits."""
    for i in range(0, len(params or []), PARAMS_PER_BATCH):
        client.log_batch(run_id, params=params[i : i + PARAMS_PER_BATCH])
    for i in range(0, len(metrics or []), METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=metrics[i : i + METRICS_PER_BATCH])


# --------------------------------------------------------------------------- run folder -> MLflow entities


def _params(config: dict[str, Any]) -> list:
    """The config as MLflow params: dotted keys, values as text (JSON for non-strings)."""
    from mlflow.entities import Param

    out: dict[str, str] = {}
    for key, value in flatten(config).items():
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        if len(text) > MAX_PARAM_VALUE:
            text = text[: MAX_PARAM_VALUE - 3] + "..."
        out[_key(key)] = text
    return [Param(k, v) for k, v in out.items()]


def _history_metrics(path: Path, stamp: int) -> list:
    """Every number in ``history.csv`` as a metric named after its column, at step = epoch."""
    from mlflow.entities import Metric

    if not path.is_file():
        return []
    out = []
    for row in files.read_csv(path):
        step = int(row.pop("epoch"))
        for col, text in row.items():
            value = _number(text)
            if value is not None:
                out.append(Metric(_key(col), value, stamp, step))
    return out


def _final_metrics(record: RunRecord, stamp: int) -> list:
    """``<split>_<classifier>_<metric>`` for head, forest and every classifier, plus run totals."""
    from mlflow.entities import Metric

    values: dict[str, float | None] = {}
    for model, result in record.classifiers.items():
        for split in SPLITS:
            scores = result.split(split)
            for name in FINAL_METRICS:
                values[f"{split}_{model}_{name}"] = _number(getattr(scores, name))
    values["frozen_share"] = _number(record.freeze.frozen_share)
    values["trainable_params"] = _number(record.params.trainable)
    values["wall_time_s"] = _number(record.timings_s.get("total"))
    return [Metric(_key(k), v, stamp, 0) for k, v in values.items() if v is not None]


def _number(value: Any) -> float | None:
    """A finite float, or None for null, empty, NaN and anything that is not a number."""
    if isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _key(name: str) -> str:
    """A param/metric key every MLflow version accepts (250 characters, safe characters)."""
    return _BAD_KEY_CHARS.sub("_", str(name))[:250]


def _ms(iso: Any) -> int | None:
    """Milliseconds since the epoch for an ISO timestamp (as in metrics.json's ``run``), else None."""
    try:
        return int(datetime.fromisoformat(str(iso)).timestamp() * 1000)
    except (TypeError, ValueError):
        return None
