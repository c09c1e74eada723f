"""A backbone's natural blocks ("stages"), found from its graph and its layer names.

A stage is a run of consecutive layers ``backbone.layers[start:stop]``; the stages cover
``backbone.layers[1:]`` (the input layer is below the first). Cuts are layer counts, as in
:mod:`tlexp.model._segments`: a stage boundary is a cut. Nothing here knows a family by
name; the rule, in order:

1. **Units.** A boundary is only placed at a cut whose frontier is *one* tensor, so that
   no shortcut crosses it and a probe pools one tensor there. The layers between two
   consecutive such cuts form a *unit* (a residual block, a dense layer, one convolution,
   one pooling layer) that no boundary splits.
2. **Names first.** Keras names the blocks of most families: ``block3_*`` (VGG,
   Xception, EfficientNet), ``conv4_*`` (ResNet, DenseNet), ``<model>_stage_2_*``
   (ConvNeXt), ``block35_*`` (Inception-ResNet), ``stem_*``. A unit takes the block name
   that holds most of the parameters of its named layers; consecutive units of one name
   form a stage. Unnamed units join the stage before them (ResNet's ``pool1``,
   DenseNet's transition ``pool2_*``, a final ``bn`` or ``top_*``), except from a strided
   layer with parameters on: a downsampling convolution begins the next stage (ConvNeXt's
   ``downsampling_block``, Inception-ResNet's reduction ``mixed_6a``). Unnamed units
   before the first named one are a ``stem`` stage when they hold trainable parameters.
3. **Resolution otherwise.** Where the names give fewer than 2 or more than 12 stages
   (MobileNets, InceptionV3, NASNet: no block names, or one per unit; Xception: 14
   blocks), a stage changes where spatial resolution drops, read from the layers'
   strides (not from tensor shapes, so the stages do not depend on the image size):

   - a strided unit *without* parameters (pooling) *ends* its stage;
   - a strided unit *with* parameters (a stride-2 convolution) *begins* one, together
     with the layers of the same block just before it (MobileNetV2's expansion and
     padding before its strided depthwise convolution).

   Why both: a pooling layer has nothing to train; it summarises the block whose
   features it pools, and VGG (``block1_pool``) and DenseNet (``pool2`` transition) name
   it with that block. A strided convolution learns the features of the new resolution;
   ResNet (``conv3_block1``), the MobileNets and Inception's reduction modules make it
   the first layer of the next block. The names follow the same two rules, so both ways
   agree where both apply (VGG16, ResNet50, DenseNet121 give the same stages either way).
4. Every stage holds trainable parameters; one without is merged into its neighbour.

Labels: the stage's block name (``block3``, ``conv4``, ``stage_2``, ``stem``); a range
(``block4-12``) where a resolution stage spans several names; else ``stage<k>``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

from tlexp.errors import UserError

_MAX_STAGES = 12

# A block name at the start of a layer name: "block3_conv1", "conv4_block2_0_bn",
# "stage_2_block_0_..." (after ConvNeXt's model-name prefix), "block2a_expand_conv"
# (EfficientNet's a/b/c units of block 2), "stem_conv". "conv2d_7" is not one.
_BLOCK_NAME = re.compile(r"^(?:(stem|conv\d+|stage_?\d+)|(block\d+)[a-z]?)(?=_|$)")
# The finer block of a layer, up to its first number: "block_1" (MobileNetV2's
# "block_1_expand"), "expanded_conv_3", "conv2d_230": which layers belong together.
_UNIT_NAME = re.compile(r"^(.*?\d+)(?=_|$)")
_RANGE = re.compile(r"^(.*?)(\d+)$")


@dataclass(frozen=True)
class Stage:
    """One natural block of a backbone: ``backbone.layers[start:stop]``.

    Attributes:
        index: 1-based, bottom first.
        label: its block name ("block3" for VGG16, "conv4" for ResNet50 / DenseNet121), a
            range of names ("block4-12"), or "stage<index>".
        start: index into ``backbone.layers`` of its first layer (a cut: the layers below
            it are ``backbone.layers[:start]``).
        stop: one past its last layer; the next stage starts here; the last stage's stop
            is ``len(backbone.layers)``. The frontier at ``stop`` is one tensor.
        params: parameters of its layers (trainable or not).
        first_layer, last_layer: names of ``backbone.layers[start]`` and ``[stop - 1]``.
    """

    index: int
    label: str
    start: int
    stop: int
    params: int
    first_layer: str
    last_layer: str


@dataclass
class _Unit:
    """Layers between two consecutive single-tensor cuts."""

    start: int
    stop: int
    trainable: int  # parameters in trainable variables (BatchNorm's statistics are not)
    downsamples: str | None  # "conv": a strided layer with parameters; "pool": strided, none with
    padding: bool  # only padding layers
    block: str | None  # block name (_BLOCK_NAME) holding most of its named parameters
    unit_name: str | None  # _UNIT_NAME of its first layer with parameters


def backbone_stages(backbone) -> list[Stage]:
    """The natural blocks of a ``keras.applications`` backbone, bottom first.

    Args:
        backbone: a functional Keras model whose ``layers[0]`` is its input layer.

    Returns:
        Stages covering ``backbone.layers[1:]`` contiguously; each boundary is a cut whose
        frontier (:func:`tlexp.model.frontier`) is one tensor; each stage has parameters.
        Between 2 and 12 stages where the graph has that many single-tensor cuts.
    """
    units = _units(backbone)
    groups = _by_name(units)
    named = groups is not None and 2 <= len(groups) <= _MAX_STAGES
    if not named:
        groups = _by_resolution(units)
    groups = _merge_untrainable(groups)
    labels = [_label(g, k, named) for k, g in enumerate(groups, 1)]
    repeated = {x for x, n in Counter(labels).items() if n > 1}
    labels = [f"stage{k}" if x in repeated else x for k, x in enumerate(labels, 1)]
    layers = backbone.layers
    stages = []
    for k, (group, label) in enumerate(zip(groups, labels, strict=True), 1):
        start, stop = group[0].start, group[-1].stop
        params = sum(layer.count_params() for layer in layers[start:stop])
        stages.append(Stage(k, label, start, stop, params, layers[start].name, layers[stop - 1].name))
    return stages


def find_stage(backbone_name: str, stages: list[Stage], spec: str) -> Stage:
    """The stage ``spec`` names: its 1-based number ("3") or its label ("conv4").

    Raises:
        UserError: no stage has that number or label; the message lists them.
    """
    text = str(spec).strip()
    if text.isdigit() and 1 <= int(text) <= len(stages):
        return stages[int(text) - 1]
    for stage in stages:
        if stage.label.lower() == text.lower():
            return stage
    listed = ", ".join(f"{s.index} {s.label} ({s.first_layer}..{s.last_layer})" for s in stages)
    raise UserError(
        f"Backbone '{backbone_name}' has no stage {spec!r}. Its {len(stages)} stages, bottom first: {listed}. "
        f"Give a stage number from 1 to {len(stages)} or a label."
    )


# --------------------------------------------------------------------------- units


def _units(backbone) -> list[_Unit]:
    layers = backbone.layers
    prefix = f"{backbone.name}_"
    bounds = [k for k, n in enumerate(_frontier_sizes(backbone), 1) if n == 1 and k > 1] or [len(layers)]
    if bounds[-1] != len(layers):  # cannot happen: the last cut's frontier is the model's one output
        bounds.append(len(layers))
    units, start = [], 1
    for stop in bounds:
        units.append(_unit(layers[start:stop], start, stop, prefix))
        start = stop
    return units


def _unit(layers, start: int, stop: int, prefix: str) -> _Unit:
    names = [layer.name.removeprefix(prefix) for layer in layers]
    weights = [_trainable(layer) for layer in layers]
    strided = [_strided(layer) for layer in layers]
    downsamples = None
    if any(strided):
        downsamples = "conv" if any(s and w for s, w in zip(strided, weights, strict=True)) else "pool"
    # The block holding most parameters among named layers; layer count when it has none.
    votes: Counter[str] = Counter()
    for name, w in zip(names, weights, strict=True):
        m = _BLOCK_NAME.match(name)
        if m:
            votes[m.group(1) or m.group(2)] += w if sum(weights) else 1
    block = max(votes, key=votes.__getitem__) if votes else None  # ties: the first named
    first = next((name for name, w in zip(names, weights, strict=True) if w), None)
    m = _UNIT_NAME.match(first) if first else None
    return _Unit(
        start=start,
        stop=stop,
        trainable=sum(weights),
        downsamples=downsamples,
        padding=all("Padding" in type(layer).__name__ for layer in layers),
        block=block,
        unit_name=m.group(1) if m else None,
    )


def _frontier_sizes(model) -> list[int]:
    """How many tensors the frontier at each cut ``1..len(model.layers)`` has.

    The same frontier as :func:`tlexp.model.frontier` (tensors made before the cut and
    used after it or returned), for all cuts in one pass: a tensor is in the frontier of
    the cuts between its producer and its last consumer.
    """
    layers, ops = model.layers, model.operations
    pos = {id(op): i for i, op in enumerate(ops)}
    made: dict[int, int] = {}
    used: dict[int, int] = {}
    for nodes in model._nodes_by_depth.values():
        for node in nodes:
            at = pos[id(node.operation)]
            for t in node.input_tensors:
                made[id(t)] = pos[id(t._keras_history.operation)]
                used[id(t)] = max(used.get(id(t), at), at)
    for t in model.outputs:
        made[id(t)] = pos[id(t._keras_history.operation)]
        used[id(t)] = len(ops)
    # A cut that runs the first ``s`` operations carries tensor t iff made < s <= used.
    change = [0] * (len(ops) + 2)
    for key, p in made.items():
        change[p + 1] += 1
        change[used[key] + 1] -= 1
    running, carried = 0, []
    for s in range(len(ops) + 1):
        running += change[s]
        carried.append(running)
    splits = [pos[id(layer)] for layer in layers[1:]] + [len(ops)]  # cut k runs ops before layers[k]
    return [carried[s] for s in splits]


def _trainable(layer) -> int:
    """Parameters a layer can train (not BatchNorm's statistics), whether it is frozen now or not.

    ``layer.trainable = False`` also sets ``variable.trainable`` to False; the list a
    variable was created in (trainable or not) stays.
    """
    return sum(
        math.prod(v.shape)
        for sub in layer._flatten_layers(include_self=True, recursive=True)
        for v in sub._trainable_variables
    )


def _strided(layer) -> bool:
    for sub in layer._flatten_layers(include_self=True, recursive=True):
        strides = getattr(sub, "strides", None)
        if strides is not None and any(s > 1 for s in ((strides,) if isinstance(strides, int) else strides)):
            return True
    return False


# --------------------------------------------------------------------------- grouping


def _by_name(units: list[_Unit]) -> list[list[_Unit]] | None:
    """Stages from block names (rule 2); ``None`` where a name comes back after another."""
    groups: list[list[_Unit]] = []
    keys: list[str] = []
    pending: list[_Unit] = []
    for unit in units:
        if unit.block is None:
            pending.append(unit)
            continue
        if keys and keys[-1] == unit.block:
            groups[-1] += [*pending, unit]
        elif not keys:
            if sum(u.trainable for u in pending) and unit.block != "stem":
                groups.append(pending)
                keys.append("stem")
                pending = []
            groups.append([*pending, unit])
            keys.append(unit.block)
        else:
            begin = _downsampling_start(pending)
            groups[-1] += pending[:begin]
            groups.append([*pending[begin:], unit])
            keys.append(unit.block)
        pending = []
    if not groups or len(set(keys)) < len(keys):
        return None
    groups[-1] += pending
    return groups


def _downsampling_start(pending: list[_Unit]) -> int:
    """Where, among unnamed units between two blocks, the next block begins: at the first
    downsampling convolution (with its padding), else after them all."""
    begin = next((i for i, u in enumerate(pending) if u.downsamples == "conv"), len(pending))
    while begin < len(pending) and begin > 0 and pending[begin - 1].padding:
        begin -= 1
    return begin


def _by_resolution(units: list[_Unit]) -> list[list[_Unit]]:
    """Stages from where the resolution drops (rule 3)."""
    cuts = set()
    for i, unit in enumerate(units):
        if unit.downsamples == "conv":
            cuts.add(_block_start(units, i))
        elif unit.downsamples == "pool":
            cuts.add(i + 1)
    groups, start = [], 0
    for cut in sorted(c for c in cuts if 0 < c < len(units)):
        groups.append(units[start:cut])
        start = cut
    groups.append(units[start:])
    return groups


def _block_start(units: list[_Unit], i: int) -> int:
    """The first unit of the block that strided unit ``i`` belongs to: back over the units
    of the same finer block (``block_1_expand`` before ``block_1_depthwise``), with the
    parameter-free units between them, and over the padding right before it."""
    name = units[i].unit_name
    j = i
    while True:
        k = j - 1
        while k >= 0 and not units[k].trainable and not units[k].downsamples:
            k -= 1
        if k >= 0 and name is not None and units[k].unit_name == name and not units[k].downsamples:
            j = k
            continue
        while j > 0 and units[j - 1].padding:
            j -= 1
        return j


def _merge_untrainable(groups: list[list[_Unit]]) -> list[list[_Unit]]:
    """A stage with nothing to train joins the next one (the last, the one before)."""
    out: list[list[_Unit]] = []
    carry: list[_Unit] = []
    for group in groups:
        group = carry + group
        if sum(u.trainable for u in group):
            out.append(group)
            carry = []
        else:
            carry = group
    if carry:
        if out:
            out[-1] = out[-1] + carry
        else:
            out.append(carry)
    return out


def _label(group: list[_Unit], index: int, named: bool) -> str:
    weight: Counter[str] = Counter()
    for unit in group:
        if unit.block is not None:
            weight[unit.block] += unit.trainable
    if named:  # the stage's block; its unnamed stem
        return max(weight, key=weight.__getitem__) if weight else "stem"
    blocks = [b for b in weight if weight[b]]
    if len(blocks) == 1:
        return blocks[0]
    parts = [_RANGE.match(b) for b in blocks]
    if len(parts) > 1 and all(parts) and len({p.group(1) for p in parts}) == 1:
        return f"{blocks[0]}-{parts[-1].group(2)}"
    return f"stage{index}"
