"""Timing a run's own model in float32 and in ``mixed_bfloat16``, and giving its parts their policies.

The figures :mod:`tlexp.model._precision` decides from come from a copy of the run's model
(same backbone, image size, head, frozen prefix and trained layers; random weights, which
time the same) built once. Keras lets a built layer's compute dtype change (the
``dtype_policy`` setter; variables stay float32 under both policies), and a traced step
keeps the dtypes it was traced with. So the float32 steps are traced first, the layers
are switched to bfloat16 and traced again through new model objects over the same layers,
and then the two sides' steps are timed in alternation, round by round: a load that comes
and goes on a shared machine slows both sides alike instead of the one that ran during it.

The same setter gives a real run's trained part its own policy after the model is built
(:func:`apply_precision`), on TensorFlow and on JAX.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tlexp.model._precision import (
    BF16,
    F32,
    KINDS,
    ROUNDS,
    TRAINED_STAYS_F32,
    CpuInfo,
    FigureStore,
    Kept,
    PrecisionDecision,
    Work,
    can_pay,
    complete,
    cpu_info,
    decide_precision,
    figures_key,
    skipped,
    worth_bf16,
)

PINNED = ("logits", "output")  # float32 under every policy: the loss is computed from them (tlexp.model._head)


def choose_precision(
    make_model: Callable[[], tuple[Any, Any]],
    *,
    work: Work,
    key: dict[str, Any],
    store: Path | None,
    deterministic: bool,
    distribute: str,
    compile_args: dict[str, Any],
    cpu: CpuInfo | None = None,
    measure: Callable[..., tuple[Kept, dict[str, str]]] | None = None,
) -> PrecisionDecision:
    """``train.precision: auto`` on a CPU: float32 or mixed_bfloat16 for each part of the run.

    Args:
        make_model: builds the run's model, random weights, frozen as the run's:
            ``(TransferModel, FreezePlan)``, under the Keras dtype policy in force.
        work: images per part of the run (``work.prefix`` 0 where nothing is frozen).
        key: what identifies the model's timing besides the CPU (backbone, image size,
            batch size, head, classes, what is frozen and trains, backend and versions).
        store: folder of kept figures (None: keep none).
        compile_args: :func:`tlexp.model.compile_model`'s keywords (classes, optimizer, ...).
        cpu, measure: this CPU and :func:`measure_precision`, replaced by tests.
    """
    cpu = cpu or cpu_info()
    parts = ("prefix", "trained") if work.prefix else ("trained",)
    if deterministic:
        why = "train.deterministic keeps float32 unless asked (train.precision=mixed_bfloat16)"
        return skipped(parts, why, cpu.describe())
    if distribute != "none":
        return skipped(parts, "data parallel training: not measured", cpu.describe())
    if not cpu.known:
        return skipped(parts, f"cannot tell whether this CPU ({cpu.model}) computes bfloat16 fast", cpu.describe())
    if not cpu.flags:
        return skipped(parts, "no avx512_bf16 or amx_bf16 flag: bfloat16 would be emulated", cpu.describe())
    what = {**key, "cpu": cpu.model, "flags": cpu.all_flags, "threads": cpu.threads}
    name, kept_store = figures_key(**what), FigureStore(store)
    kept = kept_store.load(name)
    if kept.cut is not None:
        parts = ("prefix", "trained") if kept.cut > 1 else ("trained",)
    why_not = {"trained": TRAINED_STAYS_F32}
    for part in parts:
        if part in why_not or complete(kept.figures, part):
            continue
        why = can_pay(part, work, cpu.cap)
        if why is None and part in kept.cost_s and complete(kept.figures, part, (F32,)):
            why = worth_bf16(kept.figures, part, work, cpu.cap, kept.cost_s[part])
        if why is not None:
            why_not[part] = why
    todo = [p for p in parts if not complete(kept.figures, p) and p not in why_not]
    t = time.perf_counter()
    if todo:
        new, more = (measure or measure_precision)(make_model, todo, work, cpu.cap, compile_args)
        kept = _merge(kept, new)
        why_not.update(more)
        parts = tuple(p for p in parts if p != "prefix" or (kept.cut or 0) > 1)
        kept_store.save(name, kept, what)
    decision = decide_precision(kept.figures, work, parts, cpu.describe(), why_not)
    decision.seconds = time.perf_counter() - t
    decision.source = "measured" if todo else ("reused" if decision.figures else "skipped")
    return decision


def _merge(old: Kept, new: Kept) -> Kept:
    figures = {p: {k: dict(v) for k, v in kinds.items()} for p, kinds in old.figures.items()}
    for part, kinds in new.figures.items():
        for kind, policies in kinds.items():
            figures.setdefault(part, {}).setdefault(kind, {}).update(policies)
    return Kept(figures, new.cut if new.cut is not None else old.cut, {**old.cost_s, **new.cost_s})


def measure_precision(
    make_model: Callable[[], tuple[Any, Any]],
    parts: list[str],
    work: Work,
    cap: float | None,
    compile_args: dict[str, Any],
) -> tuple[Kept, dict[str, str]]:
    """Seconds per image of each step of ``parts`` in float32 and in mixed_bfloat16.

    Each step is traced and run once untimed per precision, then timed :data:`ROUNDS` times
    per precision in alternation (the median counts). First, one timed float32 call per
    step: a part whose float32 figures show that bfloat16 could not save what timing it
    costs is not timed in bfloat16.

    Returns:
        The figures (with the cut and each part's float32 timing cost), and why a part
        was not timed in bfloat16.
    """
    with _global_policy(F32):
        whole, plan = make_model()
    cut = plan.layers_frozen
    parts = [p for p in parts if p != "prefix" or cut > 1]
    rng = np.random.default_rng(0)
    steps: dict[str, dict[tuple[str, str], Callable[[], Any]]] = {F32: {}, BF16: {}}
    first, cost, why_not = {}, {}, {}
    for part in parts:
        t = time.perf_counter()
        made = _steps(whole, plan, part, work.batch_size, compile_args, rng)
        why = _float32_side(made, first, work, cap)
        if why:
            why_not[part] = why
            continue
        steps[F32].update(made)
        # What the bfloat16 side would add: the same build and traces, and the timed rounds.
        cost[part] = time.perf_counter() - t + 2 * ROUNDS * sum(first[k] for k in made)
    parts = [p for p in parts if p not in why_not]
    figures = {p: {k: {F32: first[(p, k)] / work.batch_size} for k in KINDS[p]} for p in parts}
    why_not.update({p: why for p in parts if (why := worth_bf16(figures, p, work, cap, cost[p]))})
    again = [p for p in parts if p not in why_not]
    if again:
        set_policy(whole, 0, BF16)
        with _global_policy(BF16):
            for part in again:
                made = _steps(whole, plan, part, work.batch_size, compile_args, rng)
                for step in made.values():
                    step()  # the trace
                steps[BF16].update(made)
        times: dict[tuple[str, str, str], list[float]] = {}
        for r in range(ROUNDS):  # in alternation, each round in the other order
            for kind in steps[BF16]:
                for policy in (BF16, F32) if r % 2 == 0 else (F32, BF16):
                    times.setdefault((*kind, policy), []).append(_timed(steps[policy][kind]))
        for part, kind in steps[BF16]:
            figures[part][kind] = {p: float(np.median(times[(part, kind, p)])) / work.batch_size for p in (F32, BF16)}
    return Kept(figures, cut, cost), why_not


def _float32_side(made: dict, first: dict, work: Work, cap: float | None) -> str | None:
    """Trace each step of ``made`` (the forward pass first) and time it once into ``first``.

    The trained part is given up after its forward pass where even an optimistic figure
    shows bfloat16 cannot repay the rest: a training step costs about 3 forward passes,
    and tracing one at least what tracing the forward pass did (it holds the forward pass),
    three more of which are left (float32 training; bfloat16 forward and training).

    Returns:
        Why the part is not timed further, or None.
    """
    for (part, kind), step in made.items():
        t = time.perf_counter()
        step()
        first[(part, kind)] = _timed(step)
        if part == "trained" and kind == "forward":
            s = first[(part, kind)] / work.batch_size
            guess = {part: {"forward": {F32: s}, "train": {F32: 3 * s}}}
            why = worth_bf16(guess, part, work, cap, 3 * (time.perf_counter() - t))
            if why:
                return f"{why} (estimated from its forward pass)"
    return None


def _steps(whole, plan, part: str, batch_size: int, compile_args: dict[str, Any], rng) -> dict:
    """``(part, kind) -> step`` for the policy the layers have now, the forward pass first;
    not yet run (the first run traces).

    The prefix: its forward pass as the activation cache computes it. The trained part:
    a training step and a forward pass of the network the run trains (the layers after the
    cut fed at the cut, or the whole model when nothing is frozen), on random inputs.
    """
    import keras

    from tlexp.model._head import Network, suffix_model
    from tlexp.model._segments import inference_fn, segment
    from tlexp.model._training import compile_model

    cut = plan.layers_frozen
    if part == "prefix":
        prefix = inference_fn(segment(whole.backbone, 1, cut))
        x = _random(whole.backbone.inputs, batch_size, rng)
        made = {("prefix", "forward"): lambda: _ready(prefix(x))}
    else:
        if cut > 1:
            net = suffix_model(whole, cut, plan.batchnorm)
        else:  # new model objects over the same layers: traced anew under the policy in force
            net = Network(
                whole.model,
                keras.Model(whole.predictor.inputs, whole.predictor.outputs),
                trainer=keras.Model(whole.trainer.inputs, whole.trainer.outputs),
            )
        compile_model(net.trainer, **compile_args)
        net.trainer.optimizer.build(net.trainer.trainable_variables)  # one trace, as tlexp.model.fit does
        x = _random(net.trainer.inputs, batch_size, rng)
        two = compile_args["n_classes"] == 2
        y = np.zeros(batch_size, np.float32 if two else np.int32)
        feed = list(x) if isinstance(x, tuple) else x
        made = {
            ("trained", "forward"): lambda: _ready(net.predict_step(feed)),
            ("trained", "train"): lambda: net.trainer.train_on_batch(feed, y),
        }
    return made


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
    layers = [*whole.backbone.layers[cut:], *(h for h in whole.head if h.name not in PINNED)]
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
