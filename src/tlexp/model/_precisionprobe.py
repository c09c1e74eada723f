"""Timing a backbone's stages in float32 and in ``mixed_bfloat16``, and giving a run's parts their policies.

The figures :mod:`tlexp.model._precision` decides from come from a copy of the run's
backbone (same architecture and image size; random weights, which time the same), built
only when a run needs a piece no earlier run timed. Keras lets a built layer's compute
dtype change (the ``dtype_policy`` setter; variables stay float32 under both policies),
and a traced function keeps the dtypes it was traced with. So each piece's float32
forward pass is traced and timed first, the layers are switched to bfloat16 and the
pieces traced again through new segment models over the same layers, and then the two
sides are timed in alternation, round by round: a load that comes and goes on a shared
machine slows both sides alike instead of the one that ran during it.

The same setter gives a real run's trained part float32 after the model is built under
the prefix's policy (:func:`apply_precision`), on TensorFlow and on JAX.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tlexp.model._precision import (
    BF16,
    F32,
    ROUNDS,
    TRAINED_STAYS_F32,
    CpuInfo,
    FigureStore,
    Kept,
    Piece,
    PrecisionDecision,
    can_pay,
    complete,
    cpu_info,
    decide_precision,
    figures_key,
    per_image,
    piece_key,
    prefix_pieces,
    skipped,
    worth_bf16,
)

PINNED = ("logits", "output")  # float32 under every policy: the loss is computed from them (tlexp.model._head)


def choose_precision(
    make_backbone: Callable[[], Any],
    plan_cut: Callable[[Any], int],
    *,
    images: int,
    batch_size: int,
    key: dict[str, Any],
    plan: dict[str, Any],
    store: Path | None,
    deterministic: bool,
    distribute: str,
    cpu: CpuInfo | None = None,
    timer: Callable[[Any, int], PieceTimer] | None = None,
    stage_stops: Callable[[Any], list[int]] | None = None,
) -> PrecisionDecision:
    """``train.precision: auto`` on a CPU: float32 or mixed_bfloat16 for the frozen prefix
    (the trained part stays float32).

    Args:
        make_backbone: builds the run's backbone with random weights, under the Keras dtype
            policy in force.
        plan_cut: the run's cut on such a backbone (``FreezePlan.layers_frozen``).
        images: image-passes through the frozen prefix in the run (0: nothing is frozen).
        batch_size: rows per forward pass, the run's and the measurement's.
        key: what identifies the backbone's timing besides the CPU (backbone, image size,
            batch size, backend and versions): the figures' file.
        plan: what fixes the cut on that backbone (freeze share, what trains, BatchNorm
            policy): kept beside the figures, so a later run with the same plan builds nothing.
        store: folder of kept figures (None: keep none).
        cpu, timer, stage_stops: this CPU, :class:`PieceTimer` and where the backbone's
            stages end, replaced by tests.
    """
    cpu = cpu or cpu_info()
    why = _not_measured(cpu, deterministic, distribute)
    if why is not None:
        return skipped(("prefix", "trained") if images else ("trained",), why, cpu.describe())
    if not images:
        return skipped(("trained",), TRAINED_STAYS_F32, cpu.describe())
    started = time.perf_counter()
    what = {**key, "cpu": cpu.model, "flags": cpu.all_flags, "threads": cpu.threads}
    name, figure_store = figures_key(**what), FigureStore(store)
    kept, plan_name = figure_store.load(name), json.dumps(plan, sort_keys=True)
    new, backbone = Kept(), None

    def done(decision: PrecisionDecision, source: str | None = None) -> PrecisionDecision:
        if new.figures or new.cuts:
            figure_store.save(name, new, what)
        decision.seconds = time.perf_counter() - started
        decision.source = source or decision.source
        return decision

    why = can_pay(images, batch_size, cpu.cap)  # before anything is built or traced
    if plan_name not in kept.cuts:
        # The cut decides which pieces are needed; a run that cannot pay for measuring
        # builds nothing to find it.
        if why is not None:
            return done(decide_precision({}, [], images, cpu.describe(), why))
        backbone, _ = _built(make_backbone)
        new.cuts[plan_name] = [plan_cut(backbone), (stage_stops or _stage_stops)(backbone)]
        kept = kept.merged(new)
    cut, stops = kept.cuts[plan_name]
    if cut <= 1:
        return done(skipped(("trained",), TRAINED_STAYS_F32, cpu.describe()))
    pieces = prefix_pieces(stops, cut)
    if complete(kept.figures, pieces):
        return done(decide_precision(kept.figures, pieces, images, cpu.describe()), "reused")
    if why is None:
        timer = timer or PieceTimer
        timed, why = _time_pieces(backbone, make_backbone, timer, pieces, kept, images, batch_size, cpu.cap)
        new, kept = new.merged(timed), kept.merged(timed)
    decision = decide_precision(kept.figures, pieces, images, cpu.describe(), why)
    return done(decision, "measured" if new.figures else None)


def _built(make_backbone: Callable[[], Any]) -> tuple[Any, float]:
    """A backbone built under float32, and the seconds that took."""
    t = time.perf_counter()
    with _global_policy(F32):
        return make_backbone(), time.perf_counter() - t


def _time_pieces(
    backbone: Any | None,
    make_backbone: Callable[[], Any],
    timer: Callable[[Any, int], PieceTimer],
    pieces: list[Piece],
    kept: Kept,
    images: int,
    batch_size: int,
    cap: float | None,
) -> tuple[Kept, str | None]:
    """Time the pieces ``kept`` lacks, on ``backbone`` (built here if None): float32 first,
    then both ways where bfloat16 could repay its timing; the new figures, and why bfloat16
    was not timed (or None)."""
    built_s = 0.0  # not counted where finding the cut built the backbone: it was needed anyway
    if backbone is None:
        backbone, built_s = _built(make_backbone)
    pieces_timer, new = timer(backbone, batch_size), Kept()
    todo = [p for p in pieces if not complete(kept.figures, [p], (F32,))]
    if todo:
        new = pieces_timer.float32(todo, built_s)
    now = kept.merged(new)
    lacking = [p for p in pieces if not complete(now.figures, [p])]
    cost = sum(now.cost_s.get(piece_key(p), 0.0) for p in lacking)
    why = worth_bf16(images * per_image(now.figures, pieces, F32), cap, cost)
    if why is None:
        new = new.merged(pieces_timer.both(lacking))
    return new, why


def _not_measured(cpu: CpuInfo, deterministic: bool, distribute: str) -> str | None:
    """Why no part of this run is timed (float32 throughout), or None."""
    if deterministic:
        return "train.deterministic keeps float32 unless asked (train.precision=mixed_bfloat16)"
    if distribute != "none":
        return "data parallel training: not measured"
    if not cpu.known:
        return f"cannot tell whether this CPU ({cpu.model}) computes bfloat16 fast"
    if not cpu.flags:
        return "no avx512_bf16 or amx_bf16 flag: bfloat16 would be emulated"
    return None


def _stage_stops(backbone) -> list[int]:
    """Where the backbone's stages end (none where its graph gives none: the prefix is then timed whole)."""
    from tlexp.errors import UserError
    from tlexp.model._stages import backbone_stages

    try:
        return [s.stop for s in backbone_stages(backbone)]
    except UserError:
        return []


class PieceTimer:
    """Forward passes through pieces of one backbone, timed in float32 and in mixed_bfloat16.

    Built over a backbone made under float32; :meth:`both` switches its layers to bfloat16
    for good (it is the measurement's own copy).
    """

    def __init__(self, backbone, batch_size: int):
        self.backbone, self.batch_size = backbone, batch_size
        self.rng = np.random.default_rng(0)
        self.steps: dict[str, dict[Piece, Callable[[], Any]]] = {F32: {}, BF16: {}}

    def float32(self, pieces: Sequence[Piece], built_s: float = 0.0) -> Kept:
        """Each piece traced and timed once in float32: seconds per image, and what timing
        its bfloat16 side would cost (its share of ``built_s`` and its trace, and the
        rounds both ways)."""
        figures, cost = {}, {}
        for piece in pieces:
            t = time.perf_counter()
            step = self._step(piece, F32)
            call = _timed(step)
            traced = time.perf_counter() - t - call
            figures[piece_key(piece)] = {F32: call / self.batch_size}
            cost[piece_key(piece)] = built_s / len(pieces) + traced + (1 + 2 * ROUNDS) * call
        return Kept(figures, cost)

    def both(self, pieces: Sequence[Piece]) -> Kept:
        """Each piece in both precisions, :data:`ROUNDS` calls each, in alternation; the medians."""
        for piece in pieces:
            if piece not in self.steps[F32]:
                self._step(piece, F32)
        _set_policy(self.backbone.layers[1:], BF16)
        with _global_policy(BF16):
            for piece in pieces:
                self._step(piece, BF16)
        times: dict[tuple[Piece, str], list[float]] = {}
        for r in range(ROUNDS):  # in alternation, each round in the other order
            for piece in pieces:
                for policy in (BF16, F32) if r % 2 == 0 else (F32, BF16):
                    times.setdefault((piece, policy), []).append(_timed(self.steps[policy][piece]))
        figures = {
            piece_key(piece): {p: float(np.median(times[(piece, p)])) / self.batch_size for p in (F32, BF16)}
            for piece in pieces
        }
        return Kept(figures)

    def _step(self, piece: Piece, policy: str) -> Callable[[], Any]:
        """The piece's forward pass under the layers' policy now, traced (run once, untimed)."""
        from tlexp.model._segments import inference_fn, segment

        seg = segment(self.backbone, *piece)
        fn = inference_fn(seg)
        x = _random(seg.inputs, self.batch_size, self.rng)
        step = self.steps[policy][piece] = lambda: _ready(fn(x))
        step()
        return step


def _random(inputs, batch_size: int, rng):
    """Random rows shaped and typed like ``inputs`` (a tensor, or a tuple of them for several)."""

    def dtype(name: str) -> np.dtype:
        if name == "bfloat16":
            import ml_dtypes  # ships with TensorFlow and JAX

            return np.dtype(ml_dtypes.bfloat16)
        return np.dtype(name)

    xs = [rng.standard_normal((batch_size, *t.shape[1:])).astype(dtype(str(t.dtype))) for t in inputs]
    return xs[0] if len(xs) == 1 else tuple(xs)


def _ready(out) -> None:
    """Wait for a step's outputs (the backends return before computing them)."""
    for o in out if isinstance(out, list | tuple) else [out]:
        np.asarray(o)


def _timed(step: Callable[[], Any]) -> float:
    t = time.perf_counter()
    step()
    return time.perf_counter() - t


@contextlib.contextmanager
def _global_policy(policy: str) -> Iterator[None]:
    """Keras' global dtype policy for what is built inside, restored after."""
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def set_policy(whole, cut: int, policy: str) -> None:
    """Give ``policy`` to every layer after ``backbone.layers[:cut]`` and to the head, except the
    float32 output layers. Steps traced afterwards compute in it; the variables stay float32."""
    _set_policy([*whole.backbone.layers[cut:], *(h for h in whole.head if h.name not in PINNED)], policy)


def _set_policy(layers, policy: str) -> None:
    for layer in layers:
        if layer.dtype_policy.name != policy:
            layer.dtype_policy = policy


def apply_precision(whole, cut: int, choice: dict[str, str]) -> None:
    """Give the trained part of a run's model (built under the prefix's policy) its own policy.

    Call it before anything is traced (the first ``fit``, the first prediction).
    """
    trained = choice.get("trained")
    if trained is not None:
        set_policy(whole, cut, trained)
