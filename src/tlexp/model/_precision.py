"""The compute precision of a run on a CPU, chosen by measurement (``train.precision: auto``).

Many CPUs multiply bfloat16 far faster than float32 (AVX512-BF16: two products per float32
lane; AMX: whole tiles), and oneDNN uses that under Keras' ``mixed_bfloat16`` policy. Whether
a model gains depends on its layers: on this project's 2-core EPYC, VGG16 at 64 px trained
and predicted about twice as fast, while ResNet50 at 128 px was measured once predicting
slower. So ``auto`` times the run's own model both ways and keeps bfloat16 only where it
wins by :data:`MARGIN`.

A run has two parts, decided apart because they are different layers:

* the **prefix** (the frozen layers that make the activation cache, or run forward in
  every step when nothing is cached): forward passes only, so its figure is ms per image
  forward;
* the **trained part** (the layers above the cut and the head): its training steps, plus
  its forward passes (validation every epoch and the final prediction pass) weighted by
  how many images the run sends through each. ``auto`` keeps it in float32 and does not
  time it (:data:`TRAINED_STAYS_F32` says why: bfloat16 training moved the demo's head
  accuracy outside the float32 run's 95 % interval, bfloat16 in the frozen prefix alone did
  not); ``train.precision: mixed_bfloat16`` asks for bfloat16 everywhere. The machinery
  that would time and decide it stays (:func:`decide_precision`), for a CPU where
  bfloat16 training proves as accurate.

The model is built under the prefix's policy (so the activation cache is stored in the
prefix's compute dtype, which its key already holds), then the trained part's layers get
theirs (:func:`tlexp.model.apply_precision`). Variables stay float32 under both policies,
and the output layer and the loss stay float32 always.

Not measured (float32, the reason recorded): a CPU without ``avx512_bf16`` / ``amx_bf16``
(Linux's /proc/cpuinfo; elsewhere tlexp cannot tell), ``train.deterministic``, data
parallel runs, and parts whose measurement could cost more than bfloat16 could save.
Figures are kept under the cache folder, keyed by everything that changes the timing
(:func:`figures_key`), and reused by later runs of the same model on the same machine
(a sweep's cells with other seeds or learning rates). No Keras here.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

F32, BF16 = "float32", "mixed_bfloat16"
# bfloat16 must make a part at least this much faster. The same step timed a few times on a
# 2-core machine that others share varied by up to 10-20 % between rounds, and a few steps'
# speed-up overstated the whole run's by up to 15 % (VGG16 at 64 px: the prefix 1.93x timed,
# 1.7x over the run); bfloat16 also rounds every activation to 8 significant bits. A pick
# inside that noise could as well be slower and would trade digits for nothing.
MARGIN = 1.2
ROUNDS = 3  # timed calls per kind and precision, after one untimed call (the trace); the median counts
METHOD = 2  # of the measurement: figures measured another way are not reused (2: the prefix alone)
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# The kinds of step each part is timed at: the prefix only runs forward; the trained part trains
# and runs forward (validation, prediction).
KINDS = {"prefix": ("forward",), "trained": ("train", "forward")}
# Why auto keeps the trained part in float32 on a CPU, however fast bfloat16 trains: on the
# demo (VGG16 from random weights, 48 px, seed 0) bfloat16 training moved the head's test
# accuracy to 0.858, outside the float32 run's 95 % interval [0.941, 0.995] (0.983), while
# bfloat16 in the frozen prefix alone kept it inside. A forward pass through frozen layers
# only rounds what the trained part reads; training in bfloat16 also rounds its updates.
TRAINED_STAYS_F32 = (
    "auto trains in float32 on a CPU (bfloat16 training moved the demo's head accuracy outside the float32 "
    "run's 95 % interval); train.precision=mixed_bfloat16 asks for it"
)


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


@dataclass(frozen=True)
class Work:
    """Images each part of a run processes: what its figures are weighted by.

    Attributes:
        prefix: images through the frozen prefix (one pass when it is cached); 0 without one.
        train: training images of the trained part (epochs x train split).
        forward: forward images of the trained part (validation every epoch, the prediction pass).
        batch_size: rows per step (the measurement's too).
    """

    prefix: int
    train: int
    forward: int
    batch_size: int

    def images(self, part: str, kind: str) -> int:
        return self.prefix if part == "prefix" else getattr(self, kind)

    def measured(self, part: str) -> float:
        """Work a measurement of ``part`` does, both precisions, in the part's forward images
        (a training step counts 3: forward, and backward twice the forward's products): per
        step, a trace call each way, one float32 call, then :data:`ROUNDS` calls each way."""
        steps = (3 + 2 * ROUNDS) * self.batch_size
        return steps * sum(3 if k == "train" else 1 for k in KINDS[part])

    def total(self, part: str) -> float:
        """The run's own work in the same units."""
        return sum((3 if k == "train" else 1) * self.images(part, k) for k in KINDS[part])


def can_pay(part: str, work: Work, cap: float | None) -> str | None:
    """Why measuring ``part`` cannot pay for itself, or None where it might (before any trace).

    bfloat16 saves at most ``1 - 1/cap`` of the part's time (all of it, unbounded); measuring
    runs the same layers for :meth:`Work.measured` steps' worth of images.
    """
    if work.total(part) == 0:
        return f"the run sends no image through the {part} part"
    best = work.total(part) * (1.0 - 1.0 / cap if cap else 1.0)
    if best > work.measured(part):
        return None
    bound = f"at most {1 - 1 / cap:.0%} of it" if cap else "at most all of it"
    return (
        f"too little work to measure: {work.total(part):,.0f} image-passes in the run, bfloat16 could save {bound}, "
        f"timing both precisions takes {work.measured(part):,.0f}"
    )


# part -> kind -> policy -> seconds per image
Figures = dict[str, dict[str, dict[str, float]]]


def part_seconds(figures: Figures, part: str, work: Work, policy: str) -> float:
    """Seconds the run would spend in ``part`` under ``policy``."""
    return sum(work.images(part, k) * figures[part][k][policy] for k in KINDS[part])


def complete(figures: Figures, part: str, policies: tuple[str, ...] = (F32, BF16)) -> bool:
    return all(p in figures.get(part, {}).get(k, {}) for k in KINDS[part] for p in policies)


def worth_bf16(figures: Figures, part: str, work: Work, cap: float | None, cost_s: float) -> str | None:
    """Why timing ``part`` in bfloat16 cannot pay, from its float32 figures; None where it might.

    ``cost_s``: what timing its float32 side took (building and tracing its steps, then
    running them), about what the bfloat16 side would take. Tracing a DenseNet's training
    step costs seconds that a small run's steps never earn back.
    """
    f32 = part_seconds(figures, part, work, F32)
    best = f32 * (1.0 - 1.0 / cap if cap else 1.0)
    if best > cost_s:
        return None
    return (
        f"too little work to measure: float32 takes {f32:.3g} s over this run, bfloat16 could save at most "
        f"{best:.3g} s, timing it would take about {cost_s:.3g} s"
    )


@dataclass
class PrecisionDecision:
    """What ``auto`` chose on a CPU, per part, and from what.

    Attributes:
        choice: part (``prefix``, ``trained``) -> Keras dtype policy.
        reasons: part -> why, with the figures.
        source: ``measured`` (this run), ``reused`` (figures of an earlier run), ``skipped``.
        cpu: the CPU, its bfloat16 flags and threads.
        seconds: what measuring cost this run.
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
        how = {"measured": f"measured in {self.seconds:.1f} s", "reused": "figures reused from an earlier run"}
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
    figures: Figures, work: Work, parts: tuple[str, ...], cpu: str, why_not: dict[str, str] | None = None
) -> PrecisionDecision:
    """float32 or bfloat16 per part, from measured seconds per image (pure: tests inject them).

    A part gets bfloat16 only when its figures are complete and bfloat16 makes it at least
    :data:`MARGIN` times faster over the run's images; ``why_not[part]`` says why a part was
    not measured (it stays float32).
    """
    choice, reasons, record = {}, {}, {}
    for part in parts:
        if part in (why_not or {}) or not complete(figures, part):
            choice[part] = F32
            reasons[part] = (why_not or {}).get(part, "not measured")
            continue
        f32, bf16 = (part_seconds(figures, part, work, p) for p in (F32, BF16))
        speedup = f32 / bf16 if bf16 > 0 else float("inf")
        choice[part] = BF16 if speedup >= MARGIN else F32
        steps = ", ".join(
            f"{k} {1e3 * figures[part][k][F32]:.3g} -> {1e3 * figures[part][k][BF16]:.3g} ms/image" for k in KINDS[part]
        )
        verdict = ">=" if speedup >= MARGIN else "<"
        slower = ", slower" if round(speedup, 2) < 1 else ""
        reasons[part] = (
            f"{steps}; over {_images(part, work)}: {f32:.3g} s -> {bf16:.3g} s, "
            f"{speedup:.2f}x {verdict} {MARGIN:g}x{slower}"
        )
        record[part] = {
            **{f"{k}_{p}_ms": round(1e3 * figures[part][k][p], 4) for k in KINDS[part] for p in (F32, BF16)},
            **{f"{k}_images": work.images(part, k) for k in KINDS[part]},
            f"{F32}_s": round(f32, 3),
            f"{BF16}_s": round(bf16, 3),
            "speedup": round(speedup, 3),
        }
    return PrecisionDecision(choice, reasons, "measured", cpu, figures=record)


def _images(part: str, work: Work) -> str:
    if part == "prefix":
        return f"{work.prefix:,} images"
    return f"{work.train:,} training + {work.forward:,} forward images"


def figures_key(**what: Any) -> str:
    """The key of a model's figures: a hash of everything given (backbone, image size,
    batch size, head, what is frozen and what trains, backend and versions, CPU and its
    flags and threads), sorted, with :data:`METHOD`."""
    text = json.dumps({**what, "method": METHOD}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass
class Kept:
    """The figures of one model on one machine, as measured so far.

    Attributes:
        figures: part -> kind -> policy -> seconds per image.
        cut: the frozen prefix's layer count they were measured at (None: nothing measured).
        cost_s: part -> seconds its float32 side took to time (build, trace, steps).
    """

    figures: Figures = field(default_factory=dict)
    cut: int | None = None
    cost_s: dict[str, float] = field(default_factory=dict)


class FigureStore:
    """Measured figures on disk, one small JSON file per key (``<folder>/<key>.json``).

    One file per key, written atomically: concurrent sweep workers never lose each other's
    figures, and the worst a race does is measure the same model twice.
    """

    def __init__(self, folder: Path | None):
        self.folder = folder

    def load(self, key: str) -> Kept:
        """What is kept for ``key`` (an empty :class:`Kept` if nothing, or nothing readable)."""
        if self.folder is None:
            return Kept()
        try:
            data = json.loads((self.folder / f"{key}.json").read_text(encoding="utf-8"))
            return Kept(data["figures"], int(data["cut"]), {p: float(s) for p, s in data["cost_s"].items()})
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return Kept()  # none yet, or unreadable: measured again

    def save(self, key: str, kept: Kept, what: dict[str, Any]) -> None:
        if self.folder is None:
            return
        from tlexp.files import write_json

        data = {"key": what, "cut": kept.cut, "figures": kept.figures, "cost_s": kept.cost_s}
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_json(self.folder / f"{key}.json", data)
        except OSError:
            pass  # a read-only or full cache only costs measuring again next time
