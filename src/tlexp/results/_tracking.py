"""Optional MLflow tracking: a finished run folder becomes one MLflow run. No TensorFlow.

Everything is read back from the run folder after the run (``config.yaml``,
``history.csv``, ``metrics.json``, the plots), so the run folder stays the one source of
truth, any old run folder can be logged later, and a tracking server that is down
never costs a training run. Nothing global is set: each call builds its own
``MlflowClient`` (no ``mlflow.start_run`` / active-run state), so runs logged in one
process never leak into each other.

Where runs go is ``tracking.mlflow.uri``:

- ``sqlite:///mlflow.db`` (relative to the working directory; ``sqlite:////abs/mlflow.db``
  for an absolute path): the local store MLflow recommends. It needs ``sqlalchemy`` and
  ``alembic`` (the full ``mlflow`` package brings both). Artifacts of experiments tlexp
  creates go to ``mlartifacts/<experiment>/`` next to the database file, not to
  ``./mlruns`` in whatever folder the run happened to start from.
- ``file:./mlruns``, or a plain path such as ``mlruns`` or ``/abs/mlruns``: MLflow's
  file store. A plain path is turned into the ``file:`` URI of its absolute path (see
  :func:`resolve_uri`). MLflow >= 3.13 refuses the file store ("maintenance mode")
  unless ``MLFLOW_ALLOW_FILE_STORE=true``; naming one in the config is that choice, so
  tlexp sets the variable for the duration of its own calls when it is unset, and
  removes it again afterwards. An explicit ``MLFLOW_ALLOW_FILE_STORE=false`` is obeyed.
- ``http://host:5000`` (or ``https://``): a tracking server.

View the runs with the full ``mlflow`` package: ``mlflow ui --backend-store-uri
sqlite:///mlflow.db``, or for a file store ``MLFLOW_ALLOW_FILE_STORE=true mlflow ui
--backend-store-uri file:./mlruns``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import time
import warnings
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from tlexp import files, runfolder
from tlexp.config import flatten
from tlexp.errors import UserError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from tlexp.results._record import RunRecord

log = logging.getLogger("tlexp")

TAG_RUN_DIR = "tlexp.run_dir"  # absolute run folder; set last, so it marks a complete upload
TAG_SWEEP_DIR = "tlexp.sweep_dir"  # absolute sweep folder, on the sweep's parent run
# The limits of the oldest stores tlexp supports (MLflow 2.x file store, older servers);
# newer MLflow allows 6000-character values, but a value cut here is cut everywhere alike.
MAX_PARAM_VALUE = 500
PARAMS_PER_BATCH = 100
METRICS_PER_BATCH = 1000
SPLITS = ("train", "val", "test")
FINAL_METRICS = ("accuracy", "log_loss", "f1", "roc_auc")
INSTALL_HINT = (
    "tracking.mlflow.uri is set but MLflow is not installed. Install it with: "
    "pip install 'tlexp[mlflow]' (or set tracking.mlflow.uri=null)."
)
_DB_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
_ALLOW_FILE_STORE = "MLFLOW_ALLOW_FILE_STORE"
# Characters every MLflow version accepts in param, metric and tag keys.
_BAD_KEY_CHARS = re.compile(r"[^\w./\- ]")


class TrackingError(UserError):
    """Logging to MLflow failed; the run folder itself is complete and untouched."""


def require_mlflow(uri: str | None = None) -> None:
    """Fail early, with a one-line fix, if MLflow (or the store ``uri`` needs) is missing.

    Called before any data work, so a missing package costs seconds, not a training run.

    Args:
        uri: ``tracking.mlflow.uri``; a database URI (``sqlite:///...``) also needs
            ``sqlalchemy`` and ``alembic``.

    Raises:
        UserError: MLflow, or a package the database store needs, cannot be imported.
    """
    try:
        from mlflow.tracking import MlflowClient  # noqa: F401
    except ImportError as exc:
        if (exc.name or "mlflow").split(".")[0] != "mlflow":  # installed, but a dependency is broken
            raise UserError(
                f"MLflow is installed but cannot be imported ({exc}). Reinstall it with: "
                "pip install --force-reinstall 'tlexp[mlflow]' "
                "(or set tracking.mlflow.uri=null)."
            ) from None
        raise UserError(INSTALL_HINT) from None
    if uri and _scheme(uri) in _DB_SCHEMES:
        missing = [name for name in ("sqlalchemy", "alembic") if not _importable(name)]
        if missing:
            raise UserError(
                f"The 'tracking.mlflow.uri' {uri!r} is a database store, which needs {' and '.join(missing)}: "
                "not installed. Install them with: pip install sqlalchemy alembic (or pip install mlflow), "
                "or use a file store such as tracking.mlflow.uri=mlruns."
            )


def resolve_uri(uri: str) -> str:
    """Return the tracking URI MLflow is given: local paths become absolute ``file:`` URIs.

    ``mlruns``, ``~/mlruns``, ``/abs/mlruns`` and ``file:./mlruns`` all become
    ``file:///abs/.../mlruns`` (relative paths against the working directory), so the
    store does not move when a later process starts elsewhere. Any other URI
    (``sqlite:///...``, ``http://...``) is returned unchanged.
    """
    uri = str(uri).strip()
    parsed = urlparse(uri)
    if len(parsed.scheme) <= 1:  # no scheme at all, or a Windows drive letter
        return Path(uri).expanduser().resolve().as_uri()
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
        return Path(url2pathname(parsed.path)).expanduser().resolve().as_uri()
    return uri


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
        uri: Tracking URI or local path (see :func:`resolve_uri`).
        experiment: MLflow experiment name; created if missing.
        parent_run_id: Nest the run under this one (a sweep's, from :func:`sweep_parent`).
        run_name: Name shown in MLflow; default the run folder's name.

    Raises:
        TrackingError: The folder is not a finished run, or MLflow refused the upload.
    """
    from tlexp.results._record import RecordError, load_record
    from tlexp.version import __version__

    run_dir = Path(run_dir).expanduser().resolve()
    if not (run_dir / runfolder.METRICS_FILE).is_file():
        raise TrackingError(
            f"Cannot log {run_dir} to MLflow: it has no {runfolder.METRICS_FILE}, "
            "so the run did not finish. Log only finished run folders."
        )
    try:
        record = load_record(run_dir)
    except RecordError as e:
        raise TrackingError(f"Cannot log {run_dir} to MLflow: {e}") from None
    config = record.config
    start_ms = _ms(record.run.started)
    end_ms = _ms(record.run.finished)
    stamp = end_ms or start_ms or int(time.time() * 1000)  # MLflow wants a timestamp on every metric

    tags = {
        "tlexp.backbone": str((config.get("model") or {}).get("backbone", "")),
        "tlexp.seed": str(config.get("seed", "")),
        "tlexp.version": __version__,
    }
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id  # how MLflow nests runs, with or without the fluent API

    with _client(uri) as (client, resolved):
        exp_id = _experiment_id(client, resolved, experiment)
        existing = _find_run(client, exp_id, TAG_RUN_DIR, str(run_dir))
        if existing:
            log.info("mlflow: %s already logged as run %s; not logging it again", run_dir.name, existing)
            return existing
        run_id = client.create_run(
            exp_id, start_time=start_ms, tags=tags, run_name=run_name or run_dir.name
        ).info.run_id
        try:
            _log_batches(client, run_id, params=_params(config))
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
        except BaseException:
            # Leave no half-logged run to be mistaken for a result; the next call starts afresh.
            with contextlib.suppress(Exception):
                client.set_terminated(run_id, "FAILED")
                client.delete_run(run_id)
            raise
    log.info("mlflow: logged %s as run %s in experiment %r (%s)", run_dir.name, run_id, experiment, resolved)
    return run_id


def sweep_parent(uri: str, experiment: str, sweep_dir: str | os.PathLike, name: str) -> str:
    """Get or create the parent MLflow run of a sweep and return its id.

    The parent is found by its tag ``tlexp.sweep_dir`` (the absolute sweep folder), so
    re-running or resuming a sweep reuses it. Log each cell with
    ``log_run(..., parent_run_id=<this id>)`` and MLflow shows the cells nested under it.

    Args:
        uri: Tracking URI or local path (see :func:`resolve_uri`).
        experiment: MLflow experiment name; created if missing.
        sweep_dir: The sweep folder.
        name: Name shown in MLflow for the parent run.

    Raises:
        TrackingError: MLflow refused the request.
    """
    from tlexp.version import __version__

    sweep_dir = Path(sweep_dir).expanduser().resolve()
    with _client(uri) as (client, resolved):
        exp_id = _experiment_id(client, resolved, experiment)
        run_id = _find_run(client, exp_id, TAG_SWEEP_DIR, str(sweep_dir))
        if run_id is None:
            tags = {TAG_SWEEP_DIR: str(sweep_dir), "tlexp.version": __version__}
            run_id = client.create_run(exp_id, tags=tags, run_name=name).info.run_id
            log.info("mlflow: sweep %s is parent run %s in experiment %r (%s)", name, run_id, experiment, resolved)
        # Cells are logged after the fact, so the parent never has work "running";
        # its end time is the last time the sweep touched it.
        client.set_terminated(run_id, "FINISHED")
    return run_id


# --------------------------------------------------------------------------- MLflow plumbing


@contextlib.contextmanager
def _client(uri: str) -> Iterator[tuple[MlflowClient, str]]:
    """Yield ``(MlflowClient, resolved uri)``; MLflow and OS failures become TrackingError."""
    require_mlflow(uri)
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    resolved = resolve_uri(uri)
    try:
        with _file_store_allowed(resolved):
            yield MlflowClient(tracking_uri=resolved), resolved
    except (MlflowException, OSError, ImportError) as exc:
        # OSError covers an unreachable server (requests' errors derive from it) and unwritable
        # folders; ImportError a store whose driver does not fit this MLflow (e.g. sqlalchemy).
        raise TrackingError(f"MLflow tracking to {resolved!r} failed: {exc}") from exc


@contextlib.contextmanager
def _file_store_allowed(uri: str) -> Iterator[None]:
    """Opt in to MLflow's file store while tlexp works on one (MLflow >= 3.13 refuses it)."""
    if not uri.startswith("file:") or _ALLOW_FILE_STORE in os.environ:
        yield
        return
    os.environ[_ALLOW_FILE_STORE] = "true"
    try:
        with warnings.catch_warnings():
            # MLflow 3.x before 3.13 warns on every file store instead; the docstring says it once.
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"mlflow\.")
            yield
    finally:
        os.environ.pop(_ALLOW_FILE_STORE, None)


def _experiment_id(client: MlflowClient, uri: str, name: str) -> str:
    """Id of the experiment ``name``, created if missing; a deleted one is an error."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, artifact_location=_artifact_location(uri, name))
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            exp = client.get_experiment_by_name(name)  # another process created it just now
            if exp is None:  # some stores hide deleted experiments from this lookup
                raise TrackingError(
                    f"The 'tracking.mlflow.experiment' {name!r} is a deleted MLflow experiment. "
                    "Restore it (mlflow experiments restore), or set tracking.mlflow.experiment "
                    "to another name."
                ) from exc
    if exp.lifecycle_stage == "deleted":
        raise TrackingError(
            f"The 'tracking.mlflow.experiment' {name!r} is a deleted MLflow experiment (id {exp.experiment_id}). "
            f"Restore it with: mlflow experiments restore --experiment-id {exp.experiment_id}, "
            "or set tracking.mlflow.experiment to another name."
        )
    return exp.experiment_id


def _artifact_location(uri: str, experiment: str) -> str | None:
    """Artifact folder for a new experiment: beside a sqlite database; else MLflow's default."""
    if not uri.startswith("sqlite:///"):
        return None  # file stores keep artifacts inside; servers decide for themselves
    db = Path(unquote(uri[len("sqlite:///") :].split("?")[0])).resolve()
    return (db.parent / "mlartifacts" / runfolder.safe_name(experiment)).as_uri()


def _find_run(client: MlflowClient, exp_id: str, tag: str, value: str) -> str | None:
    """Id of the oldest live run in ``exp_id`` whose ``tag`` equals ``value``, if any."""
    # MLflow's filter strings cannot escape a quote; '_' (any one character) stands in,
    # and the exact comparison below drops what the wider LIKE lets through.
    if "'" in value:
        query = f"tags.`{tag}` LIKE '{value.replace(chr(39), '_')}'"
    else:
        query = f"tags.`{tag}` = '{value}'"
    token = None
    while True:
        page = client.search_runs([exp_id], query, order_by=["attributes.start_time ASC"], page_token=token)
        for run in page:
            if run.data.tags.get(tag) == value:
                return run.info.run_id
        token = page.token
        if not token:
            return None


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


def _scheme(uri: str) -> str:
    """``sqlite`` for ``sqlite:///x.db``, ``postgresql`` for ``postgresql+psycopg2://...``."""
    return urlparse(str(uri).strip()).scheme.split("+")[0].lower()


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True
