"""A worker's start, before any cell (under the claim ``@start``, one worker at a time):
refuse a config that would mix results, check the weights, prepare the data every cell
needs, and find the sweep's MLflow parent run.

Done once for all cells, so a problem fails the sweep at once instead of every cell in
turn, and a download or a cache is built once, not once per worker.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tlexp import runfolder
from tlexp.claims import Claim, Liveness
from tlexp.config import Cell, Config, flatten
from tlexp.errors import UserError
from tlexp.sweeps._folder import SWEEP_FILE, is_finished, read_yaml

# Compared between a finished cell and the config that would run it now. output.dir is
# not: moving a results folder does not change what a cell means.
_IGNORED_KEYS = ("output.dir",)
# Also not compared between workers: the folder's name and place (a shared file system
# may be mounted at different paths on different hosts).
_SAME_SWEEP_IGNORED = ("name", "output.dir")


def check_weights(cells: list[Cell]) -> None:
    """Fail the whole sweep at once, before any cell, when a weights file is missing or
    corrupt, rather than let every cell of that backbone fail one after another. (Under
    ``@start``: a download happens once, not once per worker into the same file.) A Keras
    backend that is not installed fails here too."""
    from tlexp.model import check_backend, resolve_weights

    check_backend()
    seen = set()
    for c in cells:
        key = (c.config.model.backbone, c.config.model.weights, c.config.model.download)
        if key not in seen:
            seen.add(key)
            resolve_weights(*key)


def prepare_shared_data(cells: list[Cell]) -> None:
    """What every cell needs and would otherwise build at once: the demo data, the data
    check (cached) and the decoded-image cache, once per distinct ``data`` section.

    Runs in the worker before any cell, so Ray tasks and other workers find them ready (the
    caches are also safe to build concurrently: each is built in a temporary folder and
    renamed; this only saves the duplicate work). A dataset problem fails the sweep here.
    """
    from tlexp.data import make_decoder, prepare_data

    seen = set()
    for c in cells:
        key = json.dumps(c.config.data.model_dump(mode="json"), sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        ds, check = prepare_data(c.config)
        make_decoder(c.config, ds, check)


def refuse_other_config(sweep_dir: Path, sweep_file: dict[str, Any], others: list[tuple[Claim, Liveness]]) -> None:
    """While other workers run this folder, only the same sweep may join them."""
    if not others:
        return
    stored = read_yaml(sweep_dir / SWEEP_FILE)
    if stored is None:
        return
    old = flatten({"grid": stored.get("grid", {}), **stored.get("base", {})})
    now = flatten({"grid": sweep_file["grid"], **sweep_file["base"]})
    diff = sorted(k for k in old.keys() | now.keys() if k not in _SAME_SWEEP_IGNORED and old.get(k) != now.get(k))
    if diff:
        shown = "; ".join(f"{k}: {old.get(k)!r} -> {now.get(k)!r}" for k in diff[:8])
        raise UserError(
            f"Other workers ({', '.join(sorted({c.owner.label for c, _ in others if c.owner}))}) are running "
            f"{sweep_dir} with another config ({shown}). Start every worker of a sweep with the same config and "
            "overrides, or pass --new to start a new sweep folder."
        )


def refuse_changed_cells(sweep_dir: Path, cells: list[Cell]) -> None:
    """Refuse to mix results: a finished cell whose config differs from what would run now."""
    changes: dict[str, tuple[Any, Any]] = {}
    affected = []
    for cell in cells:
        stored_file = sweep_dir / cell.name / runfolder.CONFIG_FILE
        if not is_finished(sweep_dir / cell.name):
            continue
        stored = flatten(yaml.safe_load(stored_file.read_text()))
        now = flatten(cell.config.to_dict())
        diff = {
            k: (stored.get(k), now.get(k))
            for k in stored.keys() | now.keys()
            if k not in _IGNORED_KEYS and stored.get(k) != now.get(k)
        }
        if diff:
            affected.append(cell.name)
            changes.update(diff)
    if affected:
        shown = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(changes.items())[:8])
        raise UserError(
            f"The config changed since {len(affected)} cell(s) of {sweep_dir} finished ({shown}), so their results "
            "would not mean what the rest of the sweep means. Pass --new to start a new sweep folder, or undo the "
            "change to continue this one. (Adding values to the grid only adds cells; that needs neither.)"
        )


def mlflow_parent(cfg: Config, sweep_dir: Path) -> str | None:
    """The sweep's parent MLflow run (reused on re-runs), or None without MLflow."""
    if not cfg.tracking.mlflow.uri:
        return None
    from tlexp.results import require_mlflow, sweep_parent

    require_mlflow(cfg.tracking.mlflow.uri)
    return sweep_parent(cfg.tracking.mlflow.uri, cfg.tracking.mlflow.experiment, sweep_dir, sweep_dir.name)
