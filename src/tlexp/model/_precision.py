"""The compute precision of a run on a CPU, chosen by measurement (``train.precision: auto``).

Many CPUs multiply bfloat16 far faster than float32 (AVX512-BF16: two products per float32
lane; AMX: whole tiles), and oneDNN uses that under Keras' ``mixed_bfloat16`` policy. Whether
a model gains depends on its layers: on this project's 2-core EPYC, VGG16 at 64 px trained
and predicted about twice as fast, while ResNet50 at 128 px was measured once predicting
slower. So ``auto`` times the run's own layers both ways and keeps bfloat16 only where it
wins by :data:`MARGIN`.

A run has two parts:

* the **frozen prefix** (the layers that make the activation cache, or run forward in every
  step when nothing is cached): forward passes only. ``auto`` times it and decides.
* the **trained part** (the layers above the cut and the head, its training steps and its
  forward passes: validation and the final prediction pass). ``auto`` keeps it in float32
  and does not time it (:data:`TRAINED_STAYS_F32` says why: bfloat16 training moved the
  demo's head accuracy outside the float32 run's 95 % interval; bfloat16 in the frozen
  prefix alone did not). ``train.precision: mixed_bfloat16`` asks for bfloat16 everywhere.

**Figures per stage, reused across cuts.** A prefix is timed piece by piece: each of the
backbone's stages (:func:`tlexp.model.backbone_stages`) wholly below the cut, then the part
of the stage the cut falls in (:func:`prefix_pieces`). The figures are kept per backbone,
image size, batch size, libraries and CPU, not per cut, so a sweep over freeze shares times
each stage once: the 30 % cell reuses the stages the 10 % cell timed and times only what
lies above them. A prefix's figure is the sum of its pieces'.

**Against what the activation cache already holds.** In a sweep, a deeper cut computes its
prefix from a shallower cell's cached activations (:mod:`tlexp.pipeline._prefix`), and only in
the precision they were computed in. A cut cached whole in one precision takes it (nothing to
compute). A cut whose only cached shallower entry is in the precision last chosen for this
backbone keeps it untimed: the cells of one backbone share the first cell's measured choice,
and the cache's nesting with it (timing each later cell cost more than its prefix could save:
1-2 s a cell at 64 px against 0.2-1 s). Otherwise each precision is charged only the layers it
would still have to compute: float32 from its deepest cached float32 entry, bfloat16 from its
own. Without that, a ResNet50 whose 10 % cell kept float32 gave its 30 % cell bfloat16 for the
whole prefix (1.3x faster) over float32 for the two stages above the cached ones (far cheaper).

The timing runs on the run's own backbone (the layers' policies switched and restored), so
deciding builds nothing. The backbone is built under the policy last chosen for it on this
CPU (:attr:`Kept.last`), so that a graph whose tensors carry the prefix's dtype is usually
built once; where the decision differs, the run builds it again under the decided one. The
activation cache then stores the prefix's compute dtype (its key holds it), and the trained
part's layers get float32 (:func:`tlexp.model.apply_precision`). Variables stay float32
under both policies, and the output layer and the loss stay float32 always.

Not measured (float32, the reason recorded): a CPU without ``avx512_bf16`` / ``amx_bf16``
(Linux's /proc/cpuinfo; elsewhere tlexp cannot tell), ``train.deterministic``, data
parallel runs, and prefixes whose measurement could cost more than bfloat16 could save.
No Keras here.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

F32, BF16 = "float32", "mixed_bfloat16"
# bfloat16 must make the prefix at least this much faster. The same step timed a few times on
# a 2-core machine that others share varied by up to 10-20 % between rounds, and a few steps'
# speed-up overstated the whole run's by up to 15 % (VGG16 at 64 px: the prefix 1.93x timed,
# 1.7x over the run); bfloat16 also rounds every activation to 8 significant bits. A pick
# inside that noise could as well be slower and would trade digits for nothing.
MARGIN = 1.2
ROUNDS = 3  # timed calls per piece and precision, after one untimed call (the trace); the median counts
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# Why auto keeps the trained part in float32 on a CPU, however fast bfloat16 trains: on the
# demo (VGG16 from random weights, 48 px, seed 0) bfloat16 training moved the head's test
# accuracy to 0.858, outside the float32 run's 95 % interval [0.941, 0.995] (0.983), while
# bfloat16 in the frozen prefix alone kept it inside. A forward pass through frozen layers
# only rounds what the trained part reads; training in bfloat16 also rounds its updates.
TRAINED_STAYS_F32 = (
    "auto trains in float32 on a CPU (bfloat16 training moved the demo's head accuracy outside the float32 "
    "run's 95 % interval); train.precision=mixed_bfloat16 asks for it"
)

Piece = tuple[int, int]  # backbone.layers[start:stop], timed as one forward pass
# piece key ("start:stop") -> policy -> seconds per image
Figures = dict[str, dict[str, float]]


@dataclass(frozen=True)
class CpuInfo:
    """What decides whether bfloat16 can be fast here.

    Attributes:
        model: the CPU's model name.
        flags: the bfloat16 flags it has (of :data:`BF16_FLAGS`).
        known: whether the flags could be read (Linux' /proc/cpuinfo).
        threads: CPUs this process may run on.
        all_flags: every flag, hashed into the figures' key (kernels are picked by them).
    """

    model: str
    flags: tuple[str, ...]
    known: bool
    threads: int
    all_flags: str = ""

    @property
    def cap(self) -> float | None:
        """The most bfloat16 can speed a step up, where the hardware bounds it: AVX512-BF16
        does two bfloat16 products per float32 lane (2x); AMX tiles are not bounded so."""
        return 2.0 if self.flags == ("avx512_bf16",) else None

    def describe(self) -> str:
        flags = ", ".join(self.flags) if self.flags else "no bfloat16 flag"
        return f"{self.model} ({flags}; {self.threads} threads)"


def cpu_info(cpuinfo: str | None = None, system: str | None = None) -> CpuInfo:
    """This CPU's model, bfloat16 flags and threads. ``cpuinfo`` / ``system``: the text of
    /proc/cpuinfo and ``platform.system()``, given by tests (read here otherwise)."""
    system = system or platform.system()
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if cpuinfo is None and system == "Linux":
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = None
    if not cpuinfo:
        return CpuInfo(platform.processor() or platform.machine(), (), False, threads)
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        fields.setdefault(name.strip(), value.strip())  # the first CPU's; all are alike
    flags = fields.get("flags", "").split()
    model = fields.get("model name") or platform.processor() or platform.machine()
    return CpuInfo(model, tuple(f for f in BF16_FLAGS if f in flags), True, threads, " ".join(sorted(flags)))


def prefix_pieces(stage_stops: Sequence[int], cut: int, start: int = 1) -> list[Piece]:
    """The pieces the prefix ``backbone.layers[start:cut]`` is timed in: each stage wholly
    inside it, then the part of the stage the cut falls in (none where the cut is a stage's
    end). A ``start`` inside a stage (a cached shallower cut) begins with the rest of that stage.

    Args:
        stage_stops: where each stage ends (``Stage.stop``), bottom first; the first starts at 1.
        cut: the prefix's layer count (``FreezePlan.layers_frozen``).
        start: the first layer to compute (1: from the images).
    """
    pieces = []
    for stop in stage_stops:
        if stop > cut:
            break
        if stop > start:
            pieces.append((start, stop))
            start = stop
    if start < cut:
        pieces.append((start, cut))
    return pieces


def piece_key(piece: Piece) -> str:
    return f"{piece[0]}:{piece[1]}"


def measured_images(batch_size: int) -> int:
    """Image-passes through the prefix that timing it both ways takes: per piece, a trace call
    each way, one float32 call, then :data:`ROUNDS` calls each way, a batch each."""
    return (3 + 2 * ROUNDS) * batch_size


def most_saved(cap: float | None) -> float:
    """The largest share of a pass bfloat16 can save: ``1 - 1/cap``, or all of it unbounded."""
    return 1.0 - 1.0 / cap if cap else 1.0


def can_pay(images: int, batch_size: int, cap: float | None) -> str | None:
    """Why measuring the prefix cannot pay for itself, or None where it might (before any trace).

    bfloat16 saves at most ``1 - 1/cap`` of the prefix's time (all of it, unbounded); timing
    it runs the same layers for :func:`measured_images` images.
    """
    if images == 0:
        return "the run sends no image through the frozen prefix"
    if images * most_saved(cap) > measured_images(batch_size):
        return None
    bound = f"at most {1 - 1 / cap:.0%} of it" if cap else "at most all of it"
    return (
        f"too little work to measure: {images:,} image-passes through the prefix in the run, bfloat16 could save "
        f"{bound}, timing both precisions takes {measured_images(batch_size):,}"
    )


def complete(figures: Figures, pieces: Sequence[Piece], policies: tuple[str, ...] = (F32, BF16)) -> bool:
    return all(p in figures.get(piece_key(piece), {}) for piece in pieces for p in policies)


def per_image(figures: Figures, pieces: Sequence[Piece], policy: str) -> float:
    """Seconds per image through the whole prefix under ``policy``: the sum of its pieces'."""
    return sum(figures[piece_key(piece)][policy] for piece in pieces)


def worth_bf16(f32_s: float, floor_s: float, cost_s: float) -> str | None:
    """Why timing the prefix in bfloat16 cannot pay, from float32's seconds over the run; None
    where it might.

    Args:
        f32_s: what float32 would compute, over the run (from its cached entry, if any).
        floor_s: the least bfloat16 could take over the run: its layers' float32 seconds
            over the CPU's bound (:attr:`CpuInfo.cap`), 0 unbounded.
        cost_s: what timing the missing pieces' float32 side took (tracing their steps,
            then running them), about what their bfloat16 side would take. Tracing a
            DenseNet's stages costs seconds that a small run's forward passes never earn back.
    """
    if f32_s < MARGIN * floor_s:
        return (
            f"bfloat16 cannot win: float32 computes {f32_s:.3g} s over this run, bfloat16 would take at "
            f"least {floor_s:.3g} s"
        )
    best = f32_s - floor_s
    if best > cost_s:
        return None
    return (
        f"too little work to measure: float32 takes {f32_s:.3g} s over this run, bfloat16 could save at most "
        f"{best:.3g} s, timing it would take about {cost_s:.3g} s"
    )


@dataclass
class PrecisionDecision:
    """What ``auto`` chose on a CPU, per part, and from what.

    Attributes:
        choice: part (``prefix``, ``trained``) -> Keras dtype policy.
        reasons: part -> why, with the figures.
        source: ``measured`` (this run timed at least one piece), ``reused`` (figures of
            earlier runs only), ``cached`` (the cut's activations are cached in that
            precision), ``skipped``.
        cpu: the CPU, its bfloat16 flags and threads.
        seconds: what deciding cost this run (timing, and building the backbone again
            where the decision differs from the policy it was built under).
        figures: part -> the record's figures (ms per image each way, images, totals).
    """

    choice: dict[str, str]
    reasons: dict[str, str]
    source: str
    cpu: str
    seconds: float = 0.0
    figures: dict[str, dict[str, float]] = field(default_factory=dict)
    margin: float = MARGIN

    @property
    def build_policy(self) -> str:
        """The policy the model is built under: the prefix's where there is one (the
        activation cache then holds its compute dtype), else the trained part's."""
        return self.choice.get("prefix", self.choice.get("trained", F32))

    def line(self) -> str:
        """The decision and its figures, for the log."""
        parts = "; ".join(f"{_NAMES[p]} {self.choice[p]} ({self.reasons[p]})" for p in self.choice)
        how = {
            "measured": f"measured in {self.seconds:.1f} s",
            "reused": f"figures of earlier runs reused ({self.seconds:.1f} s)",
            "cached": f"decided in {self.seconds:.1f} s",
        }
        return f"auto on {self.cpu}: {parts}; bfloat16 where >= {self.margin:g}x faster" + (
            f"; {how[self.source]}" if self.source in how else ""
        )

    def to_dict(self) -> dict[str, Any]:
        """What ``metrics.json`` keeps (``accelerator.precision_decision``)."""
        reason = "; ".join(f"{_NAMES[p]}: {self.reasons[p]}" for p in self.choice)
        return {
            "choice": dict(self.choice),
            "reason": reason,
            "source": self.source,
            "margin": self.margin,
            "cpu": self.cpu,
            "seconds": round(self.seconds, 2),
            "figures": {p: dict(f) for p, f in self.figures.items()},
        }


_NAMES = {"prefix": "frozen prefix", "trained": "trained part"}


def skipped(parts: tuple[str, ...], reason: str, cpu: str) -> PrecisionDecision:
    """float32 for every part, for one reason."""
    return PrecisionDecision({p: F32 for p in parts}, {p: reason for p in parts}, "skipped", cpu)


def decide_precision(
    figures: Figures,
    pieces: Sequence[Piece] | dict[str, Sequence[Piece]],
    images: int,
    cpu: str,
    why_not: str | None = None,
) -> PrecisionDecision:
    """float32 or bfloat16 for the frozen prefix, from measured seconds per image of its pieces
    (pure: tests inject them); the trained part stays float32 (:data:`TRAINED_STAYS_F32`).

    Args:
        pieces: what each precision would compute for this run: one list for both (nothing
            cached), or policy -> its pieces (from its own cached shallower entry, if any).
        why_not: why bfloat16 was not measured (the prefix stays float32).

    The prefix gets bfloat16 only when every piece is timed and bfloat16's share of the run
    is at least :data:`MARGIN` times faster than float32's.
    """
    sides = {p: list(pieces) for p in (F32, BF16)} if not isinstance(pieces, dict) else dict(pieces)
    if why_not is not None or not all(complete(figures, sides[p], (p,)) for p in (F32, BF16)):
        reasons = {"prefix": why_not or "not measured", "trained": TRAINED_STAYS_F32}
        return PrecisionDecision({"prefix": F32, "trained": F32}, reasons, "skipped", cpu)
    f32, bf16 = (per_image(figures, sides[p], p) for p in (F32, BF16))
    speedup = f32 / bf16 if bf16 > 0 else float("inf")
    verdict = ">=" if speedup >= MARGIN else "<"
    slower = ", slower" if round(speedup, 2) < 1 else ""
    same = sides[F32] == sides[BF16]
    if same:
        where = f"layers {_span(sides[F32])} timed in {_count(sides[F32])}"
        forward = f"forward {1e3 * f32:.3g} -> {1e3 * bf16:.3g} ms/image, {where}"
    else:
        forward = "; ".join(
            f"{_SHORT[p]} {_span(sides[p])}{_cached_below(sides[p])}: {1e3 * t:.3g} ms/image"
            for p, t in ((F32, f32), (BF16, bf16))
        )
    reason = (
        f"{forward}; over {images:,} images: {images * f32:.3g} s -> {images * bf16:.3g} s, "
        f"{speedup:.2f}x {verdict} {MARGIN:g}x{slower}"
    )
    record = {
        f"forward_{F32}_ms": round(1e3 * f32, 4),
        f"forward_{BF16}_ms": round(1e3 * bf16, 4),
        "forward_images": images,
        f"{F32}_s": round(images * f32, 3),
        f"{BF16}_s": round(images * bf16, 3),
        "speedup": round(speedup, 3),
        "pieces": len(set(sides[F32]) | set(sides[BF16])),
        f"{F32}_from_layer": sides[F32][0][0],
        f"{BF16}_from_layer": sides[BF16][0][0],
    }
    return PrecisionDecision(
        {"prefix": BF16 if speedup >= MARGIN else F32, "trained": F32},
        {"prefix": reason, "trained": TRAINED_STAYS_F32},
        "measured",
        cpu,
        figures={"prefix": record},
    )


def cached_whole(policy: str, cut: int, cpu: str) -> PrecisionDecision:
    """The prefix in ``policy``, whose activations at this cut the cache holds already: nothing to compute."""
    reason = f"its activations at layer {cut} are cached in {policy} for these images: nothing to compute"
    return PrecisionDecision(
        {"prefix": policy, "trained": F32}, {"prefix": reason, "trained": TRAINED_STAYS_F32}, "cached", cpu
    )


def cached_below(policy: str, held: int, cut: int, cpu: str) -> PrecisionDecision:
    """The prefix in ``policy``, the precision last chosen for this backbone here, whose
    activations up to layer ``held`` are cached (and none in the other precision): the cells
    of one backbone keep one precision, and the cache's nesting with it."""
    other = BF16 if policy == F32 else F32
    reason = (
        f"layers 1-{held} of {cut} are cached in {policy}, the precision last chosen for this backbone here; "
        f"{other} would compute them again from the images"
    )
    return PrecisionDecision(
        {"prefix": policy, "trained": F32}, {"prefix": reason, "trained": TRAINED_STAYS_F32}, "cached", cpu
    )


_SHORT = {F32: "float32", BF16: "bfloat16"}


def _span(pieces: Sequence[Piece]) -> str:
    """``backbone.layers[a:b]`` as layers counted from 1 with the input layer, as the freeze
    plan counts them ("13 frozen layers": layers 1-13); from the images, the input layer is in."""
    a, b = pieces[0][0], pieces[-1][1]
    return f"{1 if a == 1 else a + 1}-{b}"


def _count(pieces: Sequence[Piece]) -> str:
    return f"{len(pieces)} stage piece{'s' if len(pieces) > 1 else ''}"


def _cached_below(pieces: Sequence[Piece]) -> str:
    return f" (layers 1-{pieces[0][0]} cached)" if pieces[0][0] > 1 else ""
