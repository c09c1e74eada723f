"""The config: schema, loading (YAML + overrides) and sweep grids. No TensorFlow.

- :mod:`tlexp.config._schema`: the sections, every key with its type, default, constraint and description.
- :mod:`tlexp.config._keys`: the schema as a table of dotted keys (``tlexp config`` prints it).
- :mod:`tlexp.config._load`: defaults < YAML file < ``key.sub=value`` overrides, validated at once.
- :mod:`tlexp.config._checks`: the messages of every problem found.
- :mod:`tlexp.config._grid`: a sweep's grid expanded into cells.
"""

from __future__ import annotations

from tlexp.config._grid import Cell, expand_sweep, flatten
from tlexp.config._keys import describe
from tlexp.config._load import load_config, load_yaml
from tlexp.config._schema import (
    BACKBONE_NAMES,
    DEFAULT_CLASSIFIERS,
    ClassifierConfig,
    Config,
    DataConfig,
    ForestConfig,
    HeadConfig,
    ModelConfig,
    OutputConfig,
    PrefixCacheConfig,
    TrainConfig,
)

__all__ = [
    "BACKBONE_NAMES",
    "DEFAULT_CLASSIFIERS",
    "Cell",
    "ClassifierConfig",
    "Config",
    "DataConfig",
    "ForestConfig",
    "HeadConfig",
    "ModelConfig",
    "OutputConfig",
    "PrefixCacheConfig",
    "TrainConfig",
    "describe",
    "expand_sweep",
    "flatten",
    "load_config",
    "load_yaml",
]
