"""The schema as a table of dotted keys: every key, which of them are sections, and the rows
``tlexp config`` prints (key, default, type, description).

Generated from the pydantic models of :mod:`tlexp.config._schema`, so the reference, the
"did you mean" suggestions and the sweep's key checks never drift from the schema.
"""

from __future__ import annotations

from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel

from tlexp.config._schema import Config


def all_keys(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    """Every dotted key of the schema, sections included; entries of a named collection
    of sections (``classifiers``) appear as ``classifiers.*.estimator``."""
    keys = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        keys.append(dotted)
        sub = section_type(field.annotation)
        if sub is not None:
            keys.extend(all_keys(sub, dotted + "."))
        entry = _entry_type(field.annotation)
        if entry is not None:
            keys.extend(all_keys(entry, dotted + ".*."))
    return keys


def section_type(annotation: Any) -> type[BaseModel] | None:
    """The section model a field's annotation names (``DataConfig``), else None."""
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _entry_type(annotation: Any) -> type[BaseModel] | None:
    """For ``dict[str, Section | None]``: the Section type, else None."""
    if get_origin(annotation) is not dict:
        return None
    value = get_args(annotation)[1]
    for option in get_args(value) or (value,):
        if section_type(option) is not None:
            return option
    return None


def describe(model: type[BaseModel] = Config, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """Rows of (dotted key, default as YAML, type, description), generated from the schema."""
    rows = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        sub = section_type(field.annotation)
        if sub is not None:
            rows.extend(describe(sub, dotted + "."))
            continue
        default = field.get_default(call_default_factory=True)
        if isinstance(default, dict):  # may hold sections: dump them as plain YAML
            default = {k: v.model_dump(mode="json") if isinstance(v, BaseModel) else v for k, v in default.items()}
        rows.append((dotted, _yaml_scalar(default), _type_name(field.annotation), field.description or ""))
    return rows


def _yaml_scalar(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def _type_name(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "")
    if text.startswith("<class '"):
        text = text[len("<class '") : -2]
    return text.replace("Literal", "one of ").replace("tlexp.config._schema.ClassifierConfig", "classifier")


# Dotted keys that are sections (data, model.head, ...), not values.
SECTION_KEYS = frozenset(k for k in all_keys() if k not in {row[0] for row in describe()} and "*" not in k)
