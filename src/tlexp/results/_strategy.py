"""A run's fine-tuning strategy, read from its config keys: what trains and how. No TensorFlow.

A strategy is the values of ``STRATEGY_KEYS``: ``model.freeze`` (the frozen prefix: a
share or a layer name), ``model.train`` (what trains above it: ``all``, ``biases``,
``norm`` or ``block:<k>``), ``train.schedule`` (``fine-tune``, ``lp-ft``, ``gradual``),
``train.layer_decay`` (1.0 = off) and, for ``lp-ft`` only, ``train.probe_epochs`` and
``train.finetune_lr_factor``. Run folders made before these keys existed lack them: a
missing key reads as its default (the config schema's), so such a run has the strategy
it ran (all, fine-tune, no decay) and falls in one setting with a newer run of the same
config. :func:`normalised` is the one place that reading happens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Any

from tlexp.results._tables import as_share

FREEZE, TRAIN, SCHEDULE, DECAY = "model.freeze", "model.train", "train.schedule", "train.layer_decay"
LP_FT_KEYS = ("train.probe_epochs", "train.finetune_lr_factor")  # only meaningful for train.schedule lp-ft
STRATEGY_KEYS = (FREEZE, TRAIN, SCHEDULE, DECAY, *LP_FT_KEYS)
_TRAIN_ORDER = ("all", "block", "biases", "norm")
_SCHEDULE_ORDER = ("fine-tune", "lp-ft", "gradual")


@cache
def _schema_defaults() -> tuple[tuple[str, Any], ...]:
    from tlexp.config import ModelConfig, TrainConfig

    train = TrainConfig.model_fields
    found = {
        TRAIN: ModelConfig.model_fields["train"].default,
        SCHEDULE: train["schedule"].default,
        DECAY: train["layer_decay"].default,
        **{k: train[k.split(".", 1)[1]].default for k in LP_FT_KEYS},
    }
    return tuple(found.items())


def defaults() -> dict[str, Any]:
    """The schema's default of each strategy key but the freeze (what a run without the key ran)."""
    return dict(_schema_defaults())


def normalised(config: dict[str, Any]) -> dict[str, Any]:
    """A flattened config with its strategy keys as they ran: a missing (or null) key set to its
    default, and the lp-ft keys dropped unless the schedule is lp-ft (elsewhere they change nothing)."""
    out = dict(config)
    for key, value in defaults().items():
        if out.get(key) is None:
            out[key] = value
    if out[SCHEDULE] != "lp-ft":
        for key in LP_FT_KEYS:
            out.pop(key, None)
    return out


@dataclass(frozen=True)
class Strategy:
    """What trains and how, e.g. ``Strategy(0.0, "block:3", "fine-tune", 1.0)`` (label ``f0 block3``)."""

    freeze: Any  # a share in [0, 1) or a layer name
    train: str = "all"
    schedule: str = "fine-tune"
    layer_decay: float = 1.0
    probe_epochs: int | None = None  # lp-ft only
    finetune_lr_factor: float | None = None  # lp-ft only

    @classmethod
    def of(cls, config: dict[str, Any]) -> Strategy:
        """The strategy of a flattened (run) config; missing keys read as their defaults."""
        c = normalised(config)
        return cls(c.get(FREEZE), str(c[TRAIN]), str(c[SCHEDULE]), float(c[DECAY]), *(c.get(k) for k in LP_FT_KEYS))

    @property
    def block(self) -> str | None:
        """The stage trained alone (``"3"``, ``"conv4"``) for ``model.train: block:<k>``, else None."""
        kind, _, spec = self.train.partition(":")
        return spec if kind == "block" and spec else None

    def freeze_tag(self) -> str:
        """``f30`` for 30 % frozen (as asked), ``to-<layer>`` for a layer name, as run names say it;
        "" without one (a failed sweep entry whose overrides did not set it)."""
        share = as_share(self.freeze)
        if self.freeze is None:
            return ""
        if share is None:
            return f"to-{self.freeze}"
        return f"f{round(100 * share, 2):g}"

    def rest(self) -> str:
        """The label without the freeze: what trains above the cut and how; "" for all / fine-tune."""
        parts = []
        if self.block is not None:
            parts.append(f"block{self.block}" if self.block.isdigit() else self.block)
        elif self.train != "all":
            parts.append(self.train)
        if self.schedule != "fine-tune":
            parts.append(self.schedule)
        if self.schedule == "lp-ft":
            d = defaults()
            if self.probe_epochs is not None and self.probe_epochs != d[LP_FT_KEYS[0]]:
                parts.append(f"pe{self.probe_epochs}")
            if self.finetune_lr_factor is not None and self.finetune_lr_factor != d[LP_FT_KEYS[1]]:
                parts.append(f"ftlr{self.finetune_lr_factor:g}")
        if self.layer_decay != 1.0:
            parts.append(f"lld{self.layer_decay:g}")
        return " ".join(parts)

    def label(self) -> str:
        """Short and unique per strategy: ``f30``, ``f0 block3``, ``f0 biases``, ``f30 lp-ft``, ``f30 lld0.7``."""
        return " ".join(filter(None, [self.freeze_tag(), self.rest()]))

    def sort_key(self) -> tuple:
        """Order of the tables and charts: by freeze share, then what trains (all, blocks bottom
        first, biases, norm), then schedule (fine-tune, lp-ft, gradual), then decay (none first)."""
        share = as_share(self.freeze)
        kind = "block" if self.block is not None else self.train
        block = self.block or ""
        return (
            share if share is not None else math.inf,
            "" if share is not None else str(self.freeze),
            _TRAIN_ORDER.index(kind) if kind in _TRAIN_ORDER else len(_TRAIN_ORDER),
            (0, int(block), "") if block.isdigit() else (1, 0, block),
            _SCHEDULE_ORDER.index(self.schedule) if self.schedule in _SCHEDULE_ORDER else len(_SCHEDULE_ORDER),
            -self.layer_decay,
            self.probe_epochs or 0,
            -(self.finetune_lr_factor or 0.0),
        )
