"""Optional MLflow tracking: where runs go, the connection to the store, a sweep's parent run. No TensorFlow.

A finished run folder becomes one MLflow run (:mod:`tlexp.results._logrun`); the cells of
a sweep are nested under one parent run (:func:`sweep_parent`). Nothing global is set:
each call builds its own ``MlflowClient`` (no ``mlflow.start_run`` / active-run state),
so runs logged in one process never leak into each other, and MLflow's failures become
one :class:`TrackingError` that never touches the run folder.

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
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from tlexp import runfolder
from tlexp.errors import UserError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger("tlexp")

TAG_SWEEP_DIR = "tlexp.sweep_dir"  # absolute sweep folder, on the sweep's parent run
INSTALL_HINT = (
    "tracking.mlflow.uri is set but MLflow is not installed. Install it with: "
    "pip install 'tlexp[mlflow]' (or set tracking.mlflow.uri=null)."
)
_DB_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
_ALLOW_FILE_STORE = "MLFLOW_ALLOW_FILE_STORE"


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
    with mlflow_client(uri) as (client, resolved):
        exp_id = experiment_id(client, resolved, experiment)
        run_id = find_run(client, exp_id, TAG_SWEEP_DIR, str(sweep_dir))
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
def mlflow_client(uri: str) -> Iterator[tuple[MlflowClient, str]]:
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


def experiment_id(client: MlflowClient, uri: str, name: str) -> str:
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


def find_run(client: MlflowClient, exp_id: str, tag: str, value: str) -> str | None:
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


def _scheme(uri: str) -> str:
    """``sqlite`` for ``sqlite:///x.db``, ``postgresql`` for ``postgresql+psycopg2://...``."""
    return urlparse(str(uri).strip()).scheme.split("+")[0].lower()


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True
