"""Freeze a share of a backbone's parameters: a prefix of its layers, bottom first.

What "freeze 30 %" means (README, and the seed study): the frozen part is the prefix of
``backbone.layers`` whose share of the backbone's parameters is closest to 0.3.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tlexp.errors import UserError


@dataclass
class FreezePlan:
    """Which bottom part of a backbone is frozen, and the resulting parameter counts."""

    requested: float | str
    layers_frozen: int  # a prefix of backbone.layers (the input layer counts as one)
    layers_total: int
    last_frozen_layer: str | None
    frozen_params: int
    total_params: int
    frozen_share: float  # frozen_params / total_params: what "freeze 30 %" achieved
    batchnorm: str
    backbone_trainable: int = 0
    backbone_non_trainable: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def choose_prefix(param_counts: Sequence[int], share: float) -> int:
    """Length of the prefix of layers whose share of all parameters is closest to ``share``.

    Ties go to the longer prefix, so parameter-free layers (pooling, padding) right after
    the cut are frozen with it: 50 % of VGG16 freezes through ``block4_pool``, as in the
    study.

    A share of 0 freezes nothing at all: not even the parameter-free input and padding
    layers at the bottom, which the tie rule would otherwise take (and which would make a
    run that asked for nothing frozen report a frozen prefix, and cache it).

    Args:
        param_counts: parameters of each layer, bottom first, shape (n_layers,).
        share: target share in [0, 1).
    """
    if share == 0:
        return 0
    cum = np.concatenate([[0], np.cumsum(param_counts, dtype=np.int64)])
    total = cum[-1]
    if total == 0:
        return 0
    err = np.abs(cum / total - share)
    best = err.min()
    # The longest prefix among the best ones (with a float tolerance for exact ties).
    return int(np.flatnonzero(err <= best + 1e-12)[-1])


def plan_freeze(backbone, freeze: float | str, batchnorm: str) -> FreezePlan:
    """Decide the frozen prefix of ``backbone.layers`` for ``model.freeze``.

    Raises:
        UserError: ``freeze`` names a layer the backbone does not have.
    """
    layers = backbone.layers
    counts = [layer.count_params() for layer in layers]
    if isinstance(freeze, str):
        names = [layer.name for layer in layers]
        if freeze not in names:
            import difflib

            close = difflib.get_close_matches(freeze, names, n=3)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise UserError(
                f"The 'model.freeze' parameter names layer {freeze!r}, which {backbone.name} does not have."
                f"{hint} Run 'tlexp plan' to see the freeze plan, or give a share such as 0.3."
            )
        k = names.index(freeze) + 1
    else:
        k = choose_prefix(counts, freeze)
    total = int(sum(counts))
    frozen = int(sum(counts[:k]))
    return FreezePlan(
        requested=freeze,
        layers_frozen=k,
        layers_total=len(layers),
        last_frozen_layer=layers[k - 1].name if k else None,
        frozen_params=frozen,
        total_params=total,
        frozen_share=frozen / total if total else 0.0,
        batchnorm=batchnorm,
    )


def apply_freeze(backbone, plan: FreezePlan) -> FreezePlan:
    """Set ``trainable`` on every backbone layer per ``plan``; fill in the counts.

    Frozen layers (BatchNorm included) run in inference mode: Keras 3 layers with
    ``trainable=False`` do. With ``batchnorm='frozen'`` every BatchNorm layer is frozen.
    The caller must (re)compile the model afterwards.
    """
    import keras

    for i, layer in enumerate(backbone.layers):
        layer.trainable = i >= plan.layers_frozen
        if plan.batchnorm == "frozen" and layer.trainable:
            # Also BatchNormalization inside a nested block (ConvNeXt's stems are Sequential
            # models): setting the block's flag above set theirs, so they are set after it.
            for sub in layer._flatten_layers(include_self=True, recursive=True):
                if isinstance(sub, keras.layers.BatchNormalization):
                    sub.trainable = False
    plan.backbone_trainable = count(backbone.trainable_weights)
    plan.backbone_non_trainable = count(backbone.non_trainable_weights)
    return plan


def count(weights) -> int:
    """Number of scalars in a list of Keras variables."""
    return int(sum(np.prod(w.shape) for w in weights))
