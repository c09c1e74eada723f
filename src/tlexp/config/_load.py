"""Load a config: schema defaults < YAML file < ``key.sub=value`` overrides (rightmost wins).

Everything is validated here, before TensorFlow is imported, and every problem is
reported at once (:class:`tlexp.errors.ConfigError`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tlexp.config._checks import absolutize, describe_error, path_problems, semantic_problems
from tlexp.config._grid import flatten, sweep_problems
from tlexp.config._schema import Config, DataConfig, ModelConfig, SyntheticConfig
from tlexp.errors import ConfigError


class _YamlLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-4`` as a number.

    PyYAML follows YAML 1.1, where a float needs a dot (``1.0e-4``), so the usual way of
    writing a learning rate came out as the string "1e-4" and the strict schema refused it.
    YAML 1.2 (and every other YAML library) reads it as a float; so does tlexp.
    """


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(text: str) -> Any:
    """Parse YAML as config files and overrides are read (see :class:`_YamlLoader`)."""
    return yaml.load(text, Loader=_YamlLoader)


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load, merge and validate a config.

    Args:
        path: YAML file holding overrides of the defaults (``None``: defaults only).
        overrides: ``key.sub=value`` strings; values are parsed as YAML (:func:`load_yaml`).

    Returns:
        The validated config, with ``data.root``, ``output.dir`` and a weights path made
        absolute (relative paths are relative to the current directory).

    Raises:
        ConfigError: listing every problem found, one line each.
    """
    problems: list[str] = []
    raw: dict[str, Any] = {}
    source = str(path) if path is not None else None
    if path is not None:
        raw = _read_yaml(Path(path), problems)
    for item in overrides:
        _apply_override(raw, item, problems)
    if problems:  # unreadable input: validating the rest would only add noise
        raise ConfigError(problems, source)

    if isinstance(raw.get("sweep"), dict):  # nested (model: {freeze: [...]}) or dotted keys
        raw["sweep"] = flatten(raw["sweep"])
    elif isinstance(raw.get("sweep"), list):  # a list of grids, each nested or dotted
        raw["sweep"] = [flatten(g) if isinstance(g, dict) else g for g in raw["sweep"]]
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as e:
        problems = [describe_error(err) for err in e.errors()]
        problems.extend(
            path_problems(
                _lookup(raw, "data.root"), _lookup(raw, "model.weights"), _lookup(raw, "data.synthetic.enabled")
            )
        )
        raise ConfigError(problems, source) from None

    problems.extend(semantic_problems(cfg))
    if not problems and cfg.sweep:
        problems.extend(sweep_problems(cfg))
    if problems:
        raise ConfigError(problems, source)
    return absolutize(cfg)


def _read_yaml(path: Path, problems: list[str]) -> dict[str, Any]:
    if not path.is_file():
        problems.append(f"Config file not found: '{path}'. Check the path (configs/ holds the shipped ones).")
        return {}
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problems.append(f"YAML syntax error in '{path}' at {where}: {e.problem}. Fix the YAML at that line.")
        return {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        problems.append(f"Could not read '{path}' as YAML: {e}")
        return {}
    if data is None:
        return {}
    if not isinstance(data, dict):
        problems.append(
            "The config file must be a YAML mapping (key: value lines). "
            f"Got a {type(data).__name__} in '{path}' instead."
        )
        return {}
    return data


def _apply_override(raw: dict[str, Any], item: str, problems: list[str]) -> None:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        problems.append(f"Override must look like key.sub=value (e.g. model.freeze=0.5). Got '{item}' instead.")
        return
    try:
        value = load_yaml(text) if text.strip() else None
    except yaml.YAMLError:
        problems.append(
            f"Could not parse the value of override '{item}' as YAML. Quote strings that contain ':' or '#'."
        )
        return
    parts = key.split(".")
    if parts[0] == "sweep" and len(parts) > 1 and isinstance(raw.get("sweep"), list):
        # A list of grids: `sweep.seed=[0, 1]` sets the key in every grid.
        for grid in raw["sweep"]:
            if isinstance(grid, dict):
                grid[".".join(parts[1:])] = value
        return
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            problems.append(f"Override '{item}': '{'.'.join(parts[: i + 1])}' is a value, not a section.")
            return
        node = child
    node[parts[-1]] = value


def _lookup(raw: dict[str, Any], key: str) -> Any:
    """The value at a dotted key of the raw (unvalidated) config, else its schema default."""
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _DEFAULTS[key]
        node = node[part]
    return node


_DEFAULTS = {
    "data.root": DataConfig.model_fields["root"].default,
    "model.weights": ModelConfig.model_fields["weights"].default,
    "data.synthetic.enabled": SyntheticConfig.model_fields["enabled"].default,
}
