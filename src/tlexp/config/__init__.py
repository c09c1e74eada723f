"""The config schema: every key, its type, default, constraint and description, in one place.

Merge order (rightmost wins): schema defaults < YAML file < ``key.sub=value`` overrides.
Everything is validated here, before TensorFlow is imported, and every problem is
reported at once. ``tlexp config`` prints this schema; it is never written twice.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tlexp.errors import ConfigError

BACKBONES = ("vgg16", "resnet50", "densenet121")  # keep in sync with backbones.REGISTRY (tested)


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
    return yaml.load(text, Loader=_YamlLoader)  # noqa: S506 - a SafeLoader subclass


class _Section(BaseModel):
    # strict: a YAML string "2" is not silently an int; extra="forbid": typos are errors.
    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)


class SyntheticConfig(_Section):
    enabled: bool = Field(
        False,
        description="Write tlexp's built-in two-class demo dataset (real JPEG files) into "
        "data.root first, if it is not there yet. Never touches an existing non-demo folder.",
    )
    per_class: int = Field(150, ge=2, description="Demo images generated per class.")


class DataConfig(_Section):
    root: str = Field(
        "data/dogs-vs-cats/train",
        description="Dataset folder: class sub-folders (root/cat/*.jpg) or the Kaggle flat "
        "layout (root/cat.0.jpg, label = name before the first dot).",
    )
    layout: Literal["auto", "folders", "flat"] = Field(
        "auto", description="Dataset layout; 'auto' detects it and logs which was found."
    )
    image_size: int = Field(224, ge=32, description="Images are resized to image_size x image_size pixels.")
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="Share of each class held out for validation.")
    test_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="Share of each class held out for the final test.")
    split_seed: int | None = Field(
        None, ge=0, description="Seed of the train/val/test split; null = the run's seed. Sweeps fix it so all "
        "cells share one split."
    )
    limit_per_class: int | None = Field(
        None, ge=3, description="Use at most this many images per class (a seeded random subset); null = all."
    )
    cache_dir: str | None = Field(
        None, description="Where tlexp keeps data checks and decoded-image caches (never inside data.root); "
        "null = $TLEXP_CACHE_DIR, else ~/.cache/tlexp."
    )
    decoded_cache: bool = Field(
        True, description="Decode and resize every image once per (dataset, image_size) into a uint8 cache in "
        "cache_dir, shared by all runs (224 px: about 150 kB per image); false = decode on the fly every epoch."
    )
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)

    @field_validator("val_fraction", "test_fraction", mode="before")
    @classmethod
    def _int_is_float(cls, v: Any) -> Any:
        # YAML reads "0" and "1" as ints; let them reach the range check as floats.
        return float(v) if isinstance(v, int) and not isinstance(v, bool) else v


class HeadConfig(_Section):
    pooling: Literal["flatten", "avg", "max"] = Field(
        "flatten", description="How backbone feature maps become a vector: Flatten, or global average/max pooling."
    )
    dense: list[int] = Field(
        [256, 64], description="Units of the hidden Dense layers, in order (the study's VGG16 head: [256, 64])."
    )
    activation: Literal["relu", "gelu", "swish", "elu", "tanh"] = Field(
        "relu", description="Activation of the hidden Dense layers."
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout rate after each hidden Dense layer.")

    @field_validator("dense")
    @classmethod
    def _positive_units(cls, v: list[int]) -> list[int]:
        bad = [u for u in v if u < 1]
        if bad:
            raise ValueError(f"must hold whole numbers >= 1 only (bad entries: {bad})")
        return v

    @field_validator("dropout", mode="before")
    @classmethod
    def _int_is_float(cls, v: Any) -> Any:
        return float(v) if isinstance(v, int) and not isinstance(v, bool) else v


class ModelConfig(_Section):
    backbone: Literal["vgg16", "resnet50", "densenet121"] = Field(
        "vgg16", description="keras.applications backbone, classification top removed."
    )
    weights: str = Field(
        "imagenet",
        description="'imagenet' (Keras download and cache), 'none' (random init), or the path "
        "of a no-top weights file (.h5 / .weights.h5) for this backbone.",
    )
    download: bool = Field(
        True,
        description="Let Keras download ImageNet weights that are not cached yet. false = offline: "
        "fail at once with the file name and folder to put it in.",
    )
    freeze: float | str = Field(
        0.3,
        description="Share of backbone parameters to freeze, bottom layers first, in [0, 1) "
        "(the prefix of layers whose share is closest), or the name of the last layer to freeze.",
    )
    batchnorm: Literal["inference", "frozen", "train"] = Field(
        "inference",
        description="BatchNorm layers in the trainable part: 'inference' (moving statistics fixed, "
        "scale/offset trained; Keras' fine-tuning advice), 'frozen' (not trained at all), "
        "'train' (batch statistics, moving averages updated). Frozen-part BN is always inference.",
    )
    head: HeadConfig = Field(default_factory=HeadConfig)

    @field_validator("freeze", mode="before")
    @classmethod
    def _check_freeze(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("must be a float in [0, 1) or a layer name")
        if isinstance(v, int):
            v = float(v)
        if isinstance(v, float) and not 0.0 <= v < 1.0:
            raise ValueError(
                "must be a float in the range [0.0, 1.0) (a share of backbone parameters; "
                "0.3 freezes about 30 %) or a layer name"
            )
        if isinstance(v, str) and not v.strip():
            raise ValueError("must be a float in [0, 1) or a layer name, not an empty string")
        return v

    @field_validator("weights", mode="before")
    @classmethod
    def _none_weights(cls, v: Any) -> Any:
        return "none" if v is None else v


class PrefixCacheConfig(_Section):
    enabled: bool = Field(
        True, description="Run the frozen part of the backbone once per image, keep its activations on disk "
        "(cache_dir/activations, shared by the cells of a sweep) and train only the rest on them; the ordinary path "
        "(whole model every epoch) where that would be wrong or does not fit max_gb. false = always the ordinary "
        "path. metrics.json records which path was taken, and why."
    )
    dtype: Literal["auto", "float16", "float32"] = Field(
        "auto", description="Storage type of cached activations; auto = the compute dtype (exact: float32 on CPU, "
        "16-bit under mixed precision); float16 halves a float32 cache at a relative rounding error below 5e-4."
    )
    max_gb: float = Field(
        8.0, gt=0.0, description="Disk budget of the activation cache, in GB: larger entries are not cached, and "
        "the least recently used entries are removed to stay under it."
    )


class TrainConfig(_Section):
    epochs: int = Field(2, ge=1, description="Fine-tuning epochs (the study used 2).")
    batch_size: int = Field(32, ge=1, description="Images per training step.")
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = Field("adam", description="Keras optimizer.")
    learning_rate: float = Field(1e-4, gt=0.0, description="Learning rate of the optimizer.")
    precision: Literal["auto", "float32", "mixed_float16", "mixed_bfloat16"] = Field(
        "auto", description="Compute dtype; the output layer and loss stay float32. auto = mixed_bfloat16 on GPUs "
        "of compute capability >= 8.0, mixed_float16 on 7.x, float32 on CPU."
    )
    jit_compile: bool | Literal["auto"] = Field(
        "auto", description="XLA compilation of the train step; auto = Keras' choice (on for GPUs, off on CPU)."
    )
    @field_validator("jit_compile", mode="before")
    @classmethod
    def _true_false_auto(cls, v: Any) -> Any:
        if v is not True and v is not False and v != "auto":
            raise ValueError("must be true, false or 'auto'")
        return v

    distribute: Literal["auto", "none", "mirrored"] = Field(
        "auto", description="Several GPUs in one machine: auto = tf.distribute.MirroredStrategy when more than one "
        "GPU is visible (train.batch_size is the global batch)."
    )
    prefix_cache: PrefixCacheConfig = Field(default_factory=PrefixCacheConfig)


class ForestConfig(_Section):
    enabled: bool = Field(True, description="Fit a Random Forest on the penultimate activations of the trained model.")
    n_estimators: int = Field(100, ge=1, description="Trees in the forest.")
    max_depth: int | None = Field(None, ge=1, description="Maximum tree depth; null = grow until leaves are pure.")
    n_jobs: int = Field(-1, description="Parallel jobs for fitting (-1 = all cores).")

    @field_validator("n_jobs")
    @classmethod
    def _nonzero(cls, v: int) -> int:
        if v == 0:
            raise ValueError("must be a positive number of jobs or -1 (all cores), not 0")
        return v


class ClassifierConfig(_Section):
    estimator: str = Field(description="Dotted path of a scikit-learn classifier with predict_proba.")
    params: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of the estimator.")
    scale: bool = Field(True, description="Standardise the features first (StandardScaler).")

    @field_validator("estimator")
    @classmethod
    def _sklearn_only(cls, v: str) -> str:
        # Only scikit-learn classes: a config file must not be a way to import arbitrary code.
        parts = v.split(".")
        if parts[0] != "sklearn" or len(parts) < 3 or not all(p.isidentifier() for p in parts):
            raise ValueError("must be the dotted path of a scikit-learn class, e.g. sklearn.svm.SVC")
        return v


DEFAULT_CLASSIFIERS = {
    "logreg": {"estimator": "sklearn.linear_model.LogisticRegression", "params": {"max_iter": 1000}, "scale": True},
}


class ResourcesConfig(_Section):
    cpus: float = Field(1.0, gt=0.0, description="CPUs one sweep cell asks of Ray ('tlexp sweep --executor ray').")
    gpus: float = Field(0.0, ge=0.0, description="GPUs one sweep cell asks of Ray; 1 = one cell per GPU.")


class OutputConfig(_Section):
    dir: str = Field("results", description="Parent folder of run folders.")
    save_model: bool = Field(
        True,
        description="Save the fine-tuned model (model.keras) and every fitted classifier (<name>.joblib) in the "
        "run folder, for 'tlexp predict'.",
    )


class MlflowConfig(_Section):
    uri: str | None = Field(
        None, description="MLflow tracking URI (file:./mlruns, http://host:5000, ...); null = no MLflow. "
        "Needs pip install 'tlexp[mlflow]'."
    )
    experiment: str = Field("tlexp", description="MLflow experiment the runs are logged to.")


class TrackingConfig(_Section):
    tensorboard: bool = Field(
        False, description="Write TensorBoard logs into the run folder (tensorboard/); view with "
        "'tensorboard --logdir results/'."
    )
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)


class Config(_Section):
    name: str | None = Field(
        None, description="Run folder name; null = '<backbone>_f<freeze %>_s<seed>'. Never overwritten: name2, name3, ..."
    )
    seed: int = Field(0, ge=0, description="Seed for the split, weight init, shuffling and the forest.")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    forest: ForestConfig = Field(default_factory=ForestConfig)
    classifiers: dict[str, ClassifierConfig | None] = Field(
        default_factory=lambda: {k: ClassifierConfig(**v) for k, v in DEFAULT_CLASSIFIERS.items()},
        description="More scikit-learn classifiers fitted on the same penultimate features as the forest, "
        "by name: {estimator, params, scale}. A name set to null is dropped.",
    )
    output: OutputConfig = Field(default_factory=OutputConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    sweep: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="Grid for 'tlexp sweep': config key -> list of values, e.g. {model.freeze: [0.1, 0.3]}. "
        "Every combination is one cell (an ordinary run). Empty for a single run.",
    )

    @field_validator("sweep", mode="before")
    @classmethod
    def _scalars_are_lists(cls, v: Any) -> Any:
        # `sweep.seed=0` on the command line narrows a grid to one value.
        return {k: x if isinstance(x, list) else [x] for k, x in v.items()} if isinstance(v, dict) else v

    @field_validator("classifiers")
    @classmethod
    def _names(cls, v: dict[str, ClassifierConfig | None]) -> dict[str, ClassifierConfig | None]:
        bad = [k for k in v if not k.isidentifier() or k in ("head", "forest")]
        if bad:
            raise ValueError(f"names must be identifiers other than 'head' and 'forest' (bad: {bad})")
        return {k: c for k, c in v.items() if c is not None}

    def run_name(self) -> str:
        """The run folder name: ``name`` if set, else e.g. ``vgg16_f30_s0``."""
        if self.name:
            return self.name
        f = self.model.freeze
        tag = f"f{round(f * 100)}" if isinstance(f, float) else f"to-{f}"
        return f"{self.model.backbone}_{tag}_s{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        """Plain dict in schema order, as written to the run folder's config.yaml."""
        return self.model_dump(mode="json")


# --------------------------------------------------------------------------- loading


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
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as e:
        problems = [_describe_error(err) for err in e.errors()]
        problems.extend(_check_paths(_lookup(raw, "data.root"), _lookup(raw, "model.weights"),
                                     _lookup(raw, "data.synthetic.enabled")))
        raise ConfigError(problems, source) from None

    problems.extend(_semantic_problems(cfg))
    if not problems and cfg.sweep:
        problems.extend(_sweep_problems(cfg))
    if problems:
        raise ConfigError(problems, source)
    return _absolutize(cfg)


def _semantic_problems(cfg: Config) -> list[str]:
    """Problems a schema cannot express: paths that must exist, constraints across keys."""
    problems = _check_paths(cfg.data.root, cfg.model.weights, cfg.data.synthetic.enabled)
    if cfg.data.val_fraction + cfg.data.test_fraction >= 1.0:
        problems.append(
            "data.val_fraction + data.test_fraction must be below 1.0 so the train split is not empty. "
            f"Got {cfg.data.val_fraction} + {cfg.data.test_fraction} = "
            f"{cfg.data.val_fraction + cfg.data.test_fraction:g} instead; lower one of them."
        )
    return problems


# --------------------------------------------------------------------------- sweeps

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
    problems = _sweep_problems(cfg)
    if problems:
        raise ConfigError(problems)
    return _cells(cfg)


def _cells(cfg: Config) -> list[Cell]:
    keys = list(cfg.sweep)
    base = cfg.to_dict()
    base["sweep"] = {}
    if "data.split_seed" not in cfg.sweep and base["data"]["split_seed"] is None:
        base["data"]["split_seed"] = cfg.seed
    cells, seen = [], Counter()
    for values in itertools.product(*(cfg.sweep[k] for k in keys)):
        overrides = dict(zip(keys, values))
        raw = copy.deepcopy(base)
        for key, value in overrides.items():
            _set(raw, key, copy.deepcopy(value))
        cell_cfg = Config.model_validate(raw)  # validated by _sweep_problems first
        name = _cell_name(cell_cfg, overrides)
        seen[name] += 1
        if seen[name] > 1:
            name = f"{name}_{seen[name]}"
        cell_cfg.name = name
        cells.append(Cell(name, overrides, _absolutize(cell_cfg)))
    return cells


def _sweep_problems(cfg: Config) -> list[str]:
    valid = set(_all_keys())
    problems = []
    for key, values in cfg.sweep.items():
        parts = key.split(".")
        pattern = ".".join([parts[0], "*", *parts[2:]]) if parts[0] == "classifiers" and len(parts) > 2 else key
        if key in _UNSWEEPABLE:
            problems.append(f"'sweep.{key}' cannot be swept: it names or places the sweep itself.")
        elif key in _SECTIONS:  # a whole section per cell would silently reset its other keys
            problems.append(f"'sweep.{key}' is a section; sweep its keys instead, e.g. 'sweep.{key}."
                            f"{_first_leaf(key)}'.")
        elif pattern not in valid:
            problems.append(f"Unknown key 'sweep.{key}'.{_suggest(key).replace(chr(39), chr(39) + 'sweep.', 1)}")
        elif not values:
            problems.append(f"'sweep.{key}' must list at least one value. Got [] instead.")
    if problems:
        return problems
    base = cfg.to_dict()
    for key, values in cfg.sweep.items():
        for value in values:
            raw = copy.deepcopy(base)
            raw["sweep"] = {}
            _set(raw, key, value)
            try:
                problems.extend(f"sweep value {key}={value!r}: {p}" for p in _semantic_problems(Config.model_validate(raw)))
            except ValidationError as e:
                problems.extend(f"sweep value {key}={value!r}: {_describe_error(err)}" for err in e.errors())
    return problems


def _first_leaf(section: str) -> str:
    return next(k for k in _all_keys() if k.startswith(section + ".") and k not in _SECTIONS)[len(section) + 1:]


def _cell_name(cfg: Config, overrides: dict[str, Any]) -> str:
    """``<backbone>_f<freeze %>_s<seed>`` plus ``_<key>-<value>`` for every other swept key."""
    extra = [f"{k.rpartition('.')[2]}-{_short(v)}" for k, v in overrides.items()
             if k not in ("model.backbone", "model.freeze", "seed")]
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
            f"The config file must be a YAML mapping (key: value lines). Got a {type(data).__name__} in '{path}' instead."
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
        problems.append(f"Could not parse the value of override '{item}' as YAML. Quote strings that contain ':' or '#'.")
        return
    node = raw
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            problems.append(f"Override '{item}': '{'.'.join(parts[: i + 1])}' is a value, not a section.")
            return
        node = child
    node[parts[-1]] = value


def _all_keys(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    """Every dotted key of the schema, sections included; entries of a named collection
    of sections (``classifiers``) appear as ``classifiers.*.estimator``."""
    keys = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        keys.append(dotted)
        sub = _section_type(field.annotation)
        if sub is not None:
            keys.extend(_all_keys(sub, dotted + "."))
        entry = _entry_type(field.annotation)
        if entry is not None:
            keys.extend(_all_keys(entry, dotted + ".*."))
    return keys


def _section_type(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _entry_type(annotation: Any) -> type[BaseModel] | None:
    """For ``dict[str, Section | None]``: the Section type, else None."""
    if get_origin(annotation) is not dict:
        return None
    value = get_args(annotation)[1]
    for option in get_args(value) or (value,):
        if _section_type(option) is not None:
            return option
    return None


def _describe_error(err: dict[str, Any]) -> str:
    """One line per pydantic error: the dotted key, what is wrong, the value, a fix."""
    loc = [str(p) for p in err["loc"]
           if not str(p).startswith(("function-", "float", "str", "int", "bool", "literal[", "list[", "dict["))]
    # pydantic adds the union member tried ('float', 'str') to loc; the user never wrote those.
    key = ".".join(loc) if loc else "(top level)"
    kind = err["type"]
    value = err.get("input")
    if kind == "extra_forbidden":
        return f"Unknown key '{key}'.{_suggest(key)}"
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
        model = _section_type(field.annotation) if field else None
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


def _suggest(key: str) -> str:
    """' Did you mean 'x.y'?' for the closest valid key, or '' if none is close."""
    valid = _all_keys()
    parts = key.split(".")
    entry = next((p for p in ("classifiers",) if len(parts) > 2 and parts[0] == p and parts[1] != "*"), None)
    if entry:  # classifiers.<name>.x -> match against classifiers.*.x, answer with <name>
        suggestion = _suggest(".".join([parts[0], "*", *parts[2:]]))
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


def _lookup(raw: dict[str, Any], key: str) -> Any:
    """The value at a dotted key of the raw (unvalidated) config, else its schema default."""
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _DEFAULTS[key]
        node = node[part]
    return node


def _check_paths(root: Any, weights: Any, synthetic: Any) -> list[str]:
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


def _absolutize(cfg: Config) -> Config:
    def absolute(p: str) -> str:
        return str(Path(p).expanduser().resolve())

    cfg.data.root = absolute(cfg.data.root)
    if cfg.data.cache_dir is not None:
        cfg.data.cache_dir = absolute(cfg.data.cache_dir)
    cfg.output.dir = absolute(cfg.output.dir)
    if cfg.model.weights not in ("imagenet", "none"):
        cfg.model.weights = absolute(cfg.model.weights)
    return cfg


# --------------------------------------------------------------------------- reference


def describe(model: type[BaseModel] = Config, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """Rows of (dotted key, default as YAML, type, description), generated from the schema."""
    rows = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        sub = _section_type(field.annotation)
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
    return text.replace("Literal", "one of ").replace("tlexp.config.ClassifierConfig", "classifier")


_DEFAULTS = {
    "data.root": DataConfig.model_fields["root"].default,
    "model.weights": ModelConfig.model_fields["weights"].default,
    "data.synthetic.enabled": SyntheticConfig.model_fields["enabled"].default,
}


# Dotted keys that are sections (data, model.head, ...), not values.
_SECTIONS = frozenset(k for k in _all_keys() if k not in {row[0] for row in describe()} and "*" not in k)
