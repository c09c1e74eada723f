"""What is wrong with a config, in words a user can act on: one line per problem.

Every message names the key, says what is wrong and what was received, and how to fix
it (scikit-learn's shape: ``The 'model.freeze' parameter must be ... Got 1.5 instead.``).
The paths a config names are checked here, and made absolute here once they passed.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from tlexp.catalog import BACKBONES
from tlexp.config._keys import all_keys, section_type
from tlexp.config._schema import Config

# Smallest image each backbone accepts, as Keras' own check reports it (the catalog's column).
_MIN_SIZE = {row[0]: (row[1], row[3]) for row in BACKBONES}


def semantic_problems(cfg: Config) -> list[str]:
    """Problems a schema cannot express: paths that must exist, constraints across keys."""
    problems = path_problems(cfg.data.root, cfg.model.weights, cfg.data.synthetic.enabled)
    if cfg.data.val_fraction + cfg.data.test_fraction >= 1.0:
        problems.append(
            "data.val_fraction + data.test_fraction must be below 1.0 so the train split is not empty. "
            f"Got {cfg.data.val_fraction} + {cfg.data.test_fraction} = "
            f"{cfg.data.val_fraction + cfg.data.test_fraction:g} instead; lower one of them."
        )
    constructor, min_size = _MIN_SIZE[cfg.model.backbone]
    if cfg.data.image_size < min_size:
        problems.append(
            f"The 'data.image_size' parameter must be at least {min_size} for model.backbone "
            f"'{cfg.model.backbone}' (Keras' minimum input for {constructor}). Got {cfg.data.image_size} instead; "
            "raise it (the ImageNet weights were trained at 224 to 600)."
        )
    return problems


def describe_error(err: dict[str, Any]) -> str:
    """One line per pydantic error: the dotted key, what is wrong, the value, a fix."""
    loc = [
        str(p)
        for p in err["loc"]
        if not str(p).startswith(("function-", "float", "str", "int", "bool", "literal[", "list[", "dict["))
    ]
    # pydantic adds the union member tried ('float', 'str') to loc; the user never wrote those.
    key = ".".join(loc) if loc else "(top level)"
    kind = err["type"]
    value = err.get("input")
    if kind == "extra_forbidden":
        return f"Unknown key '{key}'.{suggest_key(key)}"
    if kind == "literal_error":
        allowed = err.get("ctx", {}).get("expected", "")
        return f"The '{key}' parameter must be one of {allowed}. Got {value!r} instead."
    if kind in ("greater_than_equal", "greater_than", "less_than", "less_than_equal"):
        return f"The '{key}' parameter must be {_bounds(loc) or _bound(err)}. Got {value!r} instead."
    if kind == "model_type":
        return f"'{key}' is a section and must be a mapping of keys. Got {value!r} instead."
    if kind == "dict_type":
        return f"The '{key}' parameter must be a mapping (key: value). Got {value!r} instead."
    if kind == "missing":
        return f"The '{key}' parameter is required here and is missing."
    if kind == "value_error":
        msg = str(err.get("ctx", {}).get("error", err["msg"]))
        return f"The '{key}' parameter {msg}. Got {value!r} instead."
    expected = {
        "int_type": "a whole number",
        "float_type": "a number",
        "bool_type": "true or false",
        "string_type": "a string",
        "list_type": "a list",
    }.get(kind)
    if expected:
        return f"The '{key}' parameter must be {expected}. Got {value!r} ({type(value).__name__}) instead."
    return f"The '{key}' parameter is invalid: {err['msg']}. Got {value!r} instead."


def _bounds(loc: list[str]) -> str:
    """The full range declared in the schema for a key (pydantic reports one side only)."""
    model: Any = Config
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(model, type) else None
        model = section_type(field.annotation) if field else None
        if model is None:
            return ""
    field = model.model_fields.get(loc[-1])
    if field is None:
        return ""
    words = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    parts = []
    for m in field.metadata:
        for attr, word in words.items():
            if getattr(m, attr, None) is not None:
                parts.append(f"{word} {getattr(m, attr)}")
    return " and ".join(parts)


def _bound(err: dict[str, Any]) -> str:
    ctx = err.get("ctx", {})
    words = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    return " and ".join(f"{words[k]} {ctx[k]}" for k in ("ge", "gt", "le", "lt") if k in ctx)


def suggest_key(key: str) -> str:
    """' Did you mean 'x.y'?' for the closest valid key, or '' if none is close."""
    valid = all_keys()
    parts = key.split(".")
    entry = next((p for p in ("classifiers",) if len(parts) > 2 and parts[0] == p and parts[1] != "*"), None)
    if entry:  # classifiers.<name>.x -> match against classifiers.*.x, answer with <name>
        suggestion = suggest_key(".".join([parts[0], "*", *parts[2:]]))
        return suggestion.replace(".*.", f".{parts[1]}.")
    parent, _, leaf = key.rpartition(".")
    siblings = [k for k in valid if k.rpartition(".")[0] == parent]
    close = difflib.get_close_matches(key, siblings, n=1, cutoff=0.6)
    if close:
        return f" Did you mean '{close[0]}'?"
    # A (misspelt) leaf under the wrong section, e.g. top-level 'freeze' or 'frezee'.
    leaves = {k.rpartition(".")[2]: k for k in reversed(valid)}
    close = difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.75)
    if close:
        return f" Did you mean '{leaves[close[0]]}'?"
    options = ", ".join(k.rpartition(".")[2] for k in siblings)
    return f" Valid keys here: {options}." if options else ""


def path_problems(root: Any, weights: Any, synthetic: Any) -> list[str]:
    """Problems with the paths a config names (values may be unvalidated: check types)."""
    problems = []
    if isinstance(root, str) and synthetic is not True and not Path(root).expanduser().is_dir():
        problems.append(
            f"The 'data.root' folder does not exist: '{root}' (resolved to '{Path(root).expanduser().resolve()}'). "
            "Point it at the folder that holds the images (e.g. the unzipped Kaggle 'train' folder)."
        )
    w = weights
    if isinstance(w, str) and w not in ("imagenet", "none") and not Path(w).expanduser().is_file():
        problems.append(
            f"The 'model.weights' parameter must be 'imagenet', 'none' or an existing weights file. "
            f"Got '{w}', which is not a file."
        )
    return problems


def absolutize(cfg: Config) -> Config:
    """``cfg`` with ``data.root``, ``data.cache_dir``, ``output.dir`` and a weights file made absolute."""

    def absolute(p: str) -> str:
        return str(Path(p).expanduser().resolve())

    cfg.data.root = absolute(cfg.data.root)
    if cfg.data.cache_dir is not None:
        cfg.data.cache_dir = absolute(cfg.data.cache_dir)
    cfg.output.dir = absolute(cfg.output.dir)
    if cfg.model.weights not in ("imagenet", "none"):
        cfg.model.weights = absolute(cfg.model.weights)
    return cfg
