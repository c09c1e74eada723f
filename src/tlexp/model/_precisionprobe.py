"""Timing a backbone's stages in float32 and in ``mixed_bfloat16``, and giving a run's parts their policies.

The figures :mod:`tlexp.model._precision` decides from are timed on the run's own backbone,
after it is built and frozen and before anything of it is traced (random or pretrained
weights time the same). Keras lets a built layer's compute dtype change (the
``dtype_policy`` setter; variables stay float32 under both policies), and a traced function
keeps the dtypes it was traced with. So each piece's forward pass is traced under float32
through a segment model over the backbone's own layers, then again under bfloat16, and the
two sides are timed in alternation, round by round: a load that comes and goes on a shared
machine slows both sides alike instead of the one that ran during it. The layers get their
policies back afterwards.

The same setter gives a run's trained part float32 (:func:`apply_precision`), on TensorFlow
and on JAX.
"""

from __future__ import annotations

import contextlib
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
    Piece,
    PrecisionDecision,
    cached_below,
    cached_whole,
    can_pay,
    complete,
    cpu_info,
    decide_precision,
    per_image,
    piece_key,
    prefix_pieces,
    skipped,
    worth_bf16,
)
from tlexp.model._precisionstore import FigureStore, Kept, figures_key

PINNED = ("logits", "output")  # float32 under every policy: the loss is computed from them (tlexp.model._head)


class PrecisionProbe:
    """``train.precision: auto`` on a CPU for one run: the policy to build the backbone under
    (:meth:`build_policy`), then float32 or mixed_bfloat16 for its frozen prefix (:meth:`decide`;
    the trained part stays float32).

    Args:
        key: what identifies the backbone's timing besides the CPU (backbone, image size,
            batch size, backend and versions): the figures' file.
        store: folder of kept figures (None: keep none).
        deterministic, distribute: the run's settings (either keeps float32 unmeasured).
        cpu, timer, stage_stops: this CPU, :class:`PieceTimer` and where the backbone's
            stages end, replaced by tests.
    """

    def __init__(
        self,
        key: dict[str, Any],
        store: Path | None,
        *,
        deterministic: bool,
        distribute: str,
        cpu: CpuInfo | None = None,
        timer: Callable[[Any, int], PieceTimer] | None = None,
        stage_stops: Callable[[Any], list[int]] | None = None,
    ):
        self.cpu = cpu or cpu_info()
        self.why_not = _not_measured(self.cpu, deterministic, distribute)
        self.what = {**key, "cpu": self.cpu.model, "flags": self.cpu.all_flags, "threads": self.cpu.threads}
        self.name, self.store = figures_key(**self.what), FigureStore(store)
        self.timer, self.stage_stops = timer or PieceTimer, stage_stops or _stage_stops

    def build_policy(self, images: int, batch_size: int) -> str:
        """The policy to build the backbone under: the one last chosen for it on this CPU
        (float32 where none was, or where this run cannot measure or could not repay it)."""
        if self.why_not is not None or can_pay(images, batch_size, self.cpu.cap) is not None:
            return F32
        return self.store.load(self.name).last or F32

    def decide(
        self, backbone, cut: int, *, images: int, batch_size: int, cached: dict[str, int] | None = None
    ) -> PrecisionDecision:
        """The prefix ``backbone.layers[:cut]``'s precision, from its pieces timed on ``backbone``
        (float32 first, then both ways where bfloat16 could repay its timing).

        Args:
            backbone: the run's backbone, built and frozen, nothing traced yet; its layers
                have their policies back when this returns.
            cut: the frozen prefix's layer count (``FreezePlan.layers_frozen``).
            images: image-passes through the frozen prefix in the run (0: nothing is frozen).
            batch_size: rows per forward pass, the run's and the measurement's.
            cached: policy -> the deepest cut up to ``cut`` whose activations the cache holds
                for this run's images (0 or absent: none).
        """
        started = time.perf_counter()
        decision = self._decide(backbone, cut, images, batch_size, cached or {})
        decision.seconds = time.perf_counter() - started
        if "prefix" in decision.choice and decision.source != "skipped":
            self.store.save(self.name, Kept(last=decision.choice["prefix"]), self.what)
        return decision

    def _decide(self, backbone, cut: int, images: int, batch_size: int, cached: dict[str, int]) -> PrecisionDecision:
        cpu = self.cpu.describe()
        if self.why_not is not None:
            return skipped(("prefix", "trained") if images else ("trained",), self.why_not, cpu)
        if not images or cut <= 1:
            return skipped(("trained",), TRAINED_STAYS_F32, cpu)
        for policy in (F32, BF16):  # a cut cached whole: nothing to compute, float32 first
            if cached.get(policy) == cut:
                return cached_whole(policy, cut, cpu)
        kept = self.store.load(self.name)
        held = [(p, j) for p, j in cached.items() if j > 1]
        if len(held) == 1 and held[0][0] == kept.last:
            # A later cell of a sweep over freeze shares: the precision an earlier cell of this
            # backbone chose by measurement holds the layers below, the other would compute
            # them again from the images. Timing the rest costs more than the prefix's
            # few seconds could repay (64 px study: 1-2 s a cell against 0.2-1 s to save).
            return cached_below(*held[0], cut, cpu)
        why = can_pay(images, batch_size, self.cpu.cap)  # before anything is traced
        if why is not None:
            return decide_precision({}, [], images, cpu, why)
        stops = self.stage_stops(backbone)
        sides = {p: prefix_pieces(stops, cut, max(1, cached.get(p, 0))) for p in (F32, BF16)}
        if complete(kept.figures, sides[F32], (F32,)) and complete(kept.figures, sides[BF16], (F32, BF16)):
            return _sourced(decide_precision(kept.figures, sides, images, cpu), "reused")
        timed, why = _time_pieces(self.timer(backbone, batch_size), sides, kept, images, self.cpu.cap)
        self.store.save(self.name, timed, self.what)
        decision = decide_precision(kept.merged(timed).figures, sides, images, cpu, why)
        return _sourced(decision, "measured" if timed.figures else decision.source)


def _sourced(decision: PrecisionDecision, source: str) -> PrecisionDecision:
    decision.source = source
    return decision


def _time_pieces(
    timer: PieceTimer, sides: dict[str, list[Piece]], kept: Kept, images: int, cap: float | None
) -> tuple[Kept, str | None]:
    """Time the pieces ``kept`` lacks: float32 first (both sides' pieces: bfloat16's best
    is bounded by them), then both ways where bfloat16 could win and repay its timing; the
    new figures, and why bfloat16 was not timed (or None)."""
    every = sorted({*sides[F32], *sides[BF16]})
    try:
        todo = [p for p in every if not complete(kept.figures, [p], (F32,))]
        new = timer.float32(todo) if todo else Kept()
        now = kept.merged(new)
        lacking = [p for p in sides[BF16] if not complete(now.figures, [p])]
        cost = sum(now.cost_s.get(piece_key(p), 0.0) for p in lacking)
        f32_s = images * per_image(now.figures, sides[F32], F32)
        floor_s = images * per_image(now.figures, sides[BF16], F32) / cap if cap else 0.0
        why = worth_bf16(f32_s, floor_s, cost)
        if why is None and lacking:
            new = new.merged(timer.both(lacking))
        return new, why
    finally:
        timer.restore()


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

    Each piece's layers are switched to the side's policy before its step is traced;
    :meth:`restore` gives every layer back the policy it had.
    """

    def __init__(self, backbone, batch_size: int):
        self.backbone, self.batch_size = backbone, batch_size
        self.rng = np.random.default_rng(0)
        self.steps: dict[str, dict[Piece, Callable[[], Any]]] = {F32: {}, BF16: {}}
        self.policies = [layer.dtype_policy.name for layer in backbone.layers]

    def float32(self, pieces: Sequence[Piece]) -> Kept:
        """Each piece traced and timed once in float32: seconds per image, and what timing
        its bfloat16 side would cost (its trace, and the rounds both ways)."""
        figures, cost = {}, {}
        for piece in pieces:
            t = time.perf_counter()
            step = self._step(piece, F32)
            call = _timed(step)
            traced = time.perf_counter() - t - call
            figures[piece_key(piece)] = {F32: call / self.batch_size}
            cost[piece_key(piece)] = traced + (1 + 2 * ROUNDS) * call
        return Kept(figures, cost)

    def both(self, pieces: Sequence[Piece]) -> Kept:
        """Each piece in both precisions, :data:`ROUNDS` calls each, in alternation; the medians."""
        for piece in pieces:
            for policy in (F32, BF16):
                if piece not in self.steps[policy]:
                    self._step(piece, policy)
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

    def restore(self) -> None:
        """Every layer's policy as it was built."""
        for layer, policy in zip(self.backbone.layers, self.policies, strict=True):
            _set_policy([layer], policy)

    def _step(self, piece: Piece, policy: str) -> Callable[[], Any]:
        """The piece's forward pass with its layers under ``policy``, traced (run once, untimed)."""
        from tlexp.model._segments import inference_fn, segment

        _set_policy(self.backbone.layers[piece[0] : piece[1]], policy)
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
def global_policy(policy: str) -> Iterator[None]:
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
