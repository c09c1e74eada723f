"""Sweeps: a config's grid expanded into cells, each an ordinary run config."""

from __future__ import annotations

import copy
import itertools
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

from tlexp.config._checks import absolutize, describe_error, semantic_problems, suggest_key
from tlexp.config._keys import SECTION_KEYS, all_keys
from tlexp.config._schema import Config
from tlexp.errors import ConfigError

# Keys a sweep may not vary: they name and place the sweep itself.
_UNSWEEPABLE = ("name", "output.dir", "sweep")


@dataclass
class Cell:
    """One combination of a sweep's grid: an ordinary run config with a readable name."""

    name: str
    overrides: dict[str, Any]  # swept key -> this cell's value
    config: Config


def expand_sweep(cfg: Config) -> list[Cell]:
    """Every cell of ``cfg.sweep``, in grid order (the last key varies fastest).

    Each cell is ``cfg`` with the cell's values set, ``sweep`` emptied, ``name`` set to
    the cell name (e.g. ``resnet50_f30_s0``), and ``data.split_seed`` fixed to the base
    config's split seed, so every cell trains and tests on the same images.

    Raises:
        ConfigError: a swept key is unknown, or a cell's config is invalid.
    """
    problems = sweep_problems(cfg)
    if problems:
        raise ConfigError(problems)
    return _cells(cfg)


def _combinations(cfg: Config):
    """Each cell's overrides: every combination of each grid, the grids in order."""
    for grid in cfg.grids():
        keys = list(grid)
        for values in itertools.product(*(grid[k] for k in keys)):
            yield dict(zip(keys, values, strict=True))


def _cells(cfg: Config) -> list[Cell]:
    base = cfg.to_dict()
    base["sweep"] = {}
    if "data.split_seed" not in cfg.swept_keys() and base["data"]["split_seed"] is None:
        base["data"]["split_seed"] = cfg.seed
    cells, seen = [], Counter()
    for overrides in _combinations(cfg):
        raw = copy.deepcopy(base)
        for key, value in overrides.items():
            _set(raw, key, copy.deepcopy(value))
        cell_cfg = Config.model_validate(raw)  # validated by sweep_problems first
        name = _cell_name(cell_cfg, overrides)
        seen[name] += 1
        if seen[name] > 1:
            name = f"{name}_{seen[name]}"
        cell_cfg.name = name
        cells.append(Cell(name, overrides, absolutize(cell_cfg)))
    return cells


def sweep_problems(cfg: Config) -> list[str]:
    """Every problem with ``cfg.sweep``: keys that are unknown, sections or not sweepable, empty
    value lists, and the values that make an invalid config (each key's values on the base)."""
    problems = []
    for grid in cfg.grids():
        problems.extend(p for p in _grid_problems(cfg, grid) if p not in problems)
    if isinstance(cfg.sweep, list) and not cfg.grids():
        problems.append("'sweep' lists no grid with a key; give at least one, e.g. [{model.freeze: [0.1, 0.3]}].")
    return problems


def _grid_problems(cfg: Config, grid: dict[str, list[Any]]) -> list[str]:
    valid = set(all_keys())
    problems = []
    for key, values in grid.items():
        parts = key.split(".")
        pattern = ".".join([parts[0], "*", *parts[2:]]) if parts[0] == "classifiers" and len(parts) > 2 else key
        if key in _UNSWEEPABLE:
            problems.append(f"'sweep.{key}' cannot be swept: it names or places the sweep itself.")
        elif key in SECTION_KEYS:  # a whole section per cell would silently reset its other keys
            problems.append(
                f"'sweep.{key}' is a section; sweep its keys instead, e.g. 'sweep.{key}.{_first_leaf(key)}'."
            )
        elif pattern not in valid:
            problems.append(f"Unknown key 'sweep.{key}'.{suggest_key(key).replace(chr(39), chr(39) + 'sweep.', 1)}")
        elif not values:
            problems.append(f"'sweep.{key}' must list at least one value. Got [] instead.")
    if problems:
        return problems
    base = cfg.to_dict()
    for key, values in grid.items():
        for value in values:
            raw = copy.deepcopy(base)
            raw["sweep"] = {}
            _set(raw, key, value)
            try:
                problems.extend(
                    f"sweep value {key}={value!r}: {p}" for p in semantic_problems(Config.model_validate(raw))
                )
            except ValidationError as e:
                problems.extend(f"sweep value {key}={value!r}: {describe_error(err)}" for err in e.errors())
    return problems


def _first_leaf(section: str) -> str:
    return next(k for k in all_keys() if k.startswith(section + ".") and k not in SECTION_KEYS)[len(section) + 1 :]


def _cell_name(cfg: Config, overrides: dict[str, Any]) -> str:
    """``<backbone>_f<freeze %>_s<seed>`` plus ``_<key>-<value>`` for every other swept key."""
    extra = [
        f"{k.rpartition('.')[2]}-{_short(v)}"
        for k, v in overrides.items()
        if k not in ("model.backbone", "model.freeze", "model.train", "train.schedule", "seed")
    ]
    base = Config.model_validate({**cfg.to_dict(), "name": None}).run_name()
    return "_".join([base, *extra])


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True, width=10_000)
    return re.sub(r"[^A-Za-z0-9.]+", "-", text.strip().removesuffix("...")).strip("-") or "x"


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> dotted keys: ``{model: {freeze: 0.3}}`` -> ``{"model.freeze": 0.3}``.

    Keys that are already dotted pass through; empty mappings and lists stay leaves.
    Used wherever configs are compared, logged or tabulated, so all agree on the keys.
    """
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def _set(raw: dict[str, Any], dotted: str, value: Any) -> None:
    node = raw
    *parents, leaf = dotted.split(".")
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[leaf] = value
