"""What trains of a backbone: a frozen prefix (``model.freeze``), and within the rest all,
the biases only, the normalisation layers only, or one stage (``model.train``).

What "freeze 30 %" means (docs/concepts/freezing.md, and the seed study): the frozen part is the prefix of
``backbone.layers`` whose share of the backbone's parameters is closest to 0.3.

What trains is always a contiguous range of layers, the *scope* (``scope_start`` to
``scope_stop``): everything above the cut for ``all``, ``biases`` and ``norm``; the
stage's layers above the cut for ``block:<k>``. Everything below the scope is a frozen
prefix, which is what the activation cache may hold; for ``block:<k>`` that prefix is
every layer below the stage, whatever ``model.freeze`` asked.
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
    train: str = "all"  # model.train: all | biases | norm | block:<k>
    scope_start: int = 0  # the trained scope: backbone.layers[scope_start:scope_stop]
    scope_stop: int = 0
    trains: str = ""  # what trains, in words: "all layers above block4_conv2", "block3 (...)"

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


def plan_freeze(backbone, freeze: float | str, batchnorm: str, train: str = "all") -> FreezePlan:
    """Decide the frozen prefix of ``backbone.layers`` for ``model.freeze``, and what trains
    above it for ``model.train``.

    Raises:
        UserError: ``freeze`` names a layer the backbone does not have; ``train`` names a
            stage it does not have, or one that lies wholly in the frozen part.
    """
    layers = backbone.layers
    counts = [layer.count_params() for layer in layers]
    k = _prefix(backbone, freeze, counts)
    lo, hi, trains = k, len(layers), f"all layers above {layers[k - 1].name}" if k else "all layers"
    if train.startswith("block:"):
        from tlexp.model._stages import backbone_stages, find_stage

        stage = find_stage(backbone.name, backbone_stages(backbone), train.partition(":")[2])
        lo, hi = max(k, stage.start), stage.stop
        if lo >= hi:
            raise UserError(
                f"The 'model.train' parameter asks for {train} ({stage.label}: {stage.first_layer} .. "
                f"{stage.last_layer}), which lies wholly in the part model.freeze={freeze!r} freezes "
                f"(through {layers[k - 1].name}). Set model.freeze: 0 to train that stage alone."
            )
        part = f"{stage.label} ({layers[lo].name} .. {stage.last_layer})"
        trains = part if lo == stage.start else f"the part of {part} above the cut"
    elif train in ("biases", "norm"):
        what = "bias vectors and normalisation offsets" if train == "biases" else "normalisation layers"
        trains = f"the {what} of {trains}"
    total = int(sum(counts))
    if train in ("biases", "norm"):
        frozen = total - sum(_size(v) for i in range(lo, hi) for v in _selected(layers[i], train))
    else:
        frozen = total - int(sum(counts[lo:hi]))
    return FreezePlan(
        requested=freeze,
        layers_frozen=lo,
        layers_total=len(layers),
        last_frozen_layer=layers[lo - 1].name if lo else None,
        frozen_params=frozen,
        total_params=total,
        frozen_share=frozen / total if total else 0.0,
        batchnorm=batchnorm,
        train=train,
        scope_start=lo,
        scope_stop=hi,
        trains=trains,
    )


def _prefix(backbone, freeze: float | str, counts: list[int]) -> int:
    """Length of the frozen prefix ``model.freeze`` asks for."""
    if not isinstance(freeze, str):
        return choose_prefix(counts, freeze)
    names = [layer.name for layer in backbone.layers]
    if freeze not in names:
        import difflib

        close = difflib.get_close_matches(freeze, names, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UserError(
            f"The 'model.freeze' parameter names layer {freeze!r}, which {backbone.name} does not have."
            f"{hint} Run 'tlexp plan' to see the freeze plan, or give a share such as 0.3."
        )
    return names.index(freeze) + 1


def apply_freeze(backbone, plan: FreezePlan, start: int | None = None) -> FreezePlan:
    """Set ``trainable`` on every backbone layer (and variable) per ``plan``; fill in the counts.

    Layers outside the scope are frozen; inside it, ``biases`` and ``norm`` freeze every
    variable but the selected ones. Frozen layers (BatchNorm included) run in inference
    mode: Keras 3 layers with ``trainable=False`` do. With ``batchnorm='frozen'`` every
    BatchNorm layer is frozen. The caller must (re)compile the model afterwards.

    Args:
        start: train only the scope's layers from this index on (a schedule's stage that
            trains the top of the scope); default: the whole scope.

    Raises:
        UserError: nothing of the backbone would train (``norm`` on a backbone without
            normalisation layers, or with ``batchnorm='frozen'``).
    """
    import keras

    lo = plan.scope_start if start is None else max(start, plan.scope_start)
    for i, layer in enumerate(backbone.layers):
        layer.trainable = lo <= i < plan.scope_stop
        # Each variable's own flag too: Keras' setter leaves them alone when the layer's flag
        # does not change, so a backbone reused with another plan (a schedule's next stage,
        # the plan of another sweep cell) would keep the last plan's per-variable choice.
        keep = None if plan.train not in ("biases", "norm") else {id(v) for v in _selected(layer, plan.train)}
        for sub in layer._flatten_layers(include_self=True, recursive=True):
            for v in sub._trainable_variables:
                v.trainable = layer.trainable and (keep is None or id(v) in keep)
        if not layer.trainable:
            continue
        if plan.batchnorm == "frozen":
            # Also BatchNormalization inside a nested block (ConvNeXt's stems are Sequential
            # models): setting the block's flag above set theirs, so they are set after it.
            for sub in layer._flatten_layers(include_self=True, recursive=True):
                if isinstance(sub, keras.layers.BatchNormalization):
                    sub.trainable = False
    plan.backbone_trainable = count(backbone.trainable_weights)
    plan.backbone_non_trainable = count(backbone.non_trainable_weights)
    if start is None and plan.train != "all" and plan.backbone_trainable == 0:
        raise UserError(
            f"The 'model.train' parameter is {plan.train!r}, but nothing of {backbone.name} would train: it has "
            f"no such variables in {plan.trains}"
            + (" (and model.batchnorm is 'frozen')" if plan.batchnorm == "frozen" else "")
            + ". Choose another model.train value, or model.train: all."
        )
    return plan


_NORMS = ("BatchNormalization", "LayerNormalization", "GroupNormalization")


def _selected(layer, train: str) -> list:
    """The variables of ``layer`` (and its sublayers) that ``biases`` or ``norm`` trains.

    ``biases``: every bias vector, and the offsets (beta) of normalisation layers, as
    BitFit trains (Zaken et al. 2022). ``norm``: the scale and offset of every
    normalisation layer. Only variables Keras made trainable (never moving statistics).
    """
    import keras

    norms = tuple(getattr(keras.layers, n) for n in _NORMS)
    out = []
    for sub in layer._flatten_layers(include_self=True, recursive=True):
        is_norm = isinstance(sub, norms)
        for v in sub._trainable_variables:
            bias = v.name == "bias" or (is_norm and v.name == "beta")
            if (train == "norm" and is_norm) or (train == "biases" and bias):
                out.append(v)
    return out


def _size(v) -> int:
    return int(np.prod(v.shape))


def count(weights) -> int:
    """Number of scalars in a list of Keras variables."""
    return int(sum(np.prod(w.shape) for w in weights))
