"""The model of a run: inputs checked, backbone built and frozen, head on, compiled.

Also what a run would do without training (:func:`plan_experiment`): everything that
needs no decoded image and no weights.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tlexp.config import Config
from tlexp.data import data_summary, prepare_data

log = logging.getLogger("tlexp")


def head_spec(cfg: Config):
    """The config's ``model.head`` as the model's :class:`tlexp.model.HeadSpec`."""
    from tlexp.model import HeadSpec

    h = cfg.model.head
    return HeadSpec(pooling=h.pooling, dense=tuple(h.dense), activation=h.activation, dropout=h.dropout)


def build_whole(cfg: Config, backbone, n_classes: int):
    """The backbone with the config's head on top (:func:`tlexp.model.build_model`)."""
    from tlexp.model import build_model

    return build_model(
        backbone,
        n_classes,
        image_size=cfg.data.image_size,
        head=head_spec(cfg),
        batchnorm=cfg.model.batchnorm,
        seed=cfg.seed,
    )


def plan_experiment(cfg: Config, cache: dict[Any, Any] | None = None) -> dict[str, Any]:
    """What a run would do, without decoding an image or loading weights.

    Args:
        cfg: the config.
        cache: pass the same dict to plan many configs (a sweep's cells): the dataset and
            each backbone are then found / built once.

    Returns:
        ``{"config", "data", "freeze", "model", "stages", "schedule"}``: the resolved
        config, the dataset found (layout, classes, counts per split), the freeze plan
        (with backbone parameter counts and what trains), the whole model's parameter
        counts, the backbone's stages and the schedule's stages.
    """
    from tlexp.model import import_backend

    cache = {} if cache is None else cache
    data_key = ("data", json.dumps(cfg.data.model_dump(mode="json"), sort_keys=True), cfg.seed)
    if data_key not in cache:
        cache[data_key] = prepare_data(cfg, check=False)[0]
    ds = cache[data_key]
    import_backend()
    from tlexp.experiment._schedule import plan_schedule, stages_in_scope, trains
    from tlexp.model import apply_freeze, backbone_stages, build_backbone, param_counts, plan_freeze

    model_key = ("backbone", cfg.model.backbone, cfg.data.image_size)
    if model_key not in cache:
        cache[model_key] = build_backbone(cfg.model.backbone, cfg.data.image_size, None)
    backbone = cache[model_key]
    plan = apply_freeze(backbone, plan_freeze(backbone, cfg.model.freeze, cfg.model.batchnorm, cfg.model.train))
    whole = build_whole(cfg, backbone, len(ds.class_names))
    stages = backbone_stages(backbone)
    schedule = plan_schedule(cfg.train, stages_in_scope(plan, stages))
    return {
        "config": cfg.to_dict(),
        "data": data_summary(ds),
        "freeze": plan.to_dict(),
        "model": param_counts(whole.model),
        "stages": [asdict(s) for s in stages],
        "schedule": [{**asdict(s), "trains": trains(plan, stages, s)} for s in schedule],
    }


def check_inputs(cfg: Config) -> tuple[Path | None, dict[str, Any]]:
    """The weights file and the unfitted classifiers; missing weights, a bad classifier
    or a missing MLflow fail here, in seconds, before any data work (and so does a
    Keras backend that is not installed)."""
    from tlexp.classifiers import build_classifiers
    from tlexp.model import check_backend, resolve_weights

    check_backend()
    weights_path = resolve_weights(cfg.model.backbone, cfg.model.weights, cfg.model.download)
    classifiers = build_classifiers(cfg)
    if cfg.tracking.tensorboard:  # Keras' TensorBoard callback writes with tf.summary
        from tlexp.model import require_tensorflow

        require_tensorflow("tracking.tensorboard (Keras' TensorBoard callback)")
    if cfg.tracking.mlflow.uri:
        from tlexp.results import require_mlflow

        require_mlflow(cfg.tracking.mlflow.uri)
    return weights_path, classifiers


@dataclass
class Built:
    """The model of a run and what it was built from."""

    whole: Any  # tlexp.model.TransferModel: image in, class probabilities out
    plan: Any  # tlexp.model.FreezePlan
    accel: Any  # tlexp.model.Accel
    counts: dict[str, int]
    stages: list[Any]  # tlexp.model.Stage: the backbone's stages, bottom first


def build(cfg: Config, ds, check, weights_path: Path | None, on_devices: contextlib.ExitStack) -> Built:
    """Backbone with weights, frozen per plan, head on top, compiled; logs the counts.

    ``ds`` and ``check``: the run's dataset and data check (``train.precision: auto`` weighs
    what the activation cache holds for these images). ``on_devices`` gets the run's device
    context (JAX's data parallel distribution), which must hold from the first variable made
    to the last prediction: the caller's stack closes it when the run ends.
    """
    from tlexp.model import import_backend

    import_backend()
    import keras

    from tlexp.model import (
        accel_scope,
        apply_precision,
        backbone_stages,
        compile_model,
        data_parallel,
        global_policy,
        param_counts,
        resolve_accel,
        set_determinism,
    )

    t = cfg.train
    set_determinism(t.deterministic)
    accel = resolve_accel(t.precision, t.distribute, t.jit_compile, t.deterministic, t.batch_size)
    probe = _precision_probe(cfg, accel) if t.precision == "auto" and not accel.gpus else None
    images = _prefix_images(cfg, ds)
    if probe is not None:  # built under the policy last chosen for this backbone here: usually the one chosen now
        accel.precision = probe.build_policy(images, t.batch_size)
    keras.utils.set_random_seed(cfg.seed)
    on_devices.enter_context(data_parallel(accel))
    with accel_scope(accel):
        backbone, plan = _frozen_backbone(cfg, weights_path)
        choice = None
        if probe is not None:
            backbone, plan, choice = _choose_precision(
                cfg, ds, check, probe, backbone, plan, accel, weights_path, images=images
            )
        with global_policy(accel.precision):
            whole = build_whole(cfg, backbone, len(ds.class_names))
        if choice:  # built under the prefix's policy; the trained part gets its own
            apply_precision(whole, plan.layers_frozen, choice)
        compile_model(
            whole.trainer,
            len(ds.class_names),
            optimizer=t.optimizer,
            learning_rate=t.learning_rate,
            jit_compile=t.jit_compile,
        )
    accel.jit_compile = bool(whole.trainer.jit_compile)  # what Keras resolved "auto" to
    counts = param_counts(whole.model)
    _log_model(cfg, accel, plan, counts)
    return Built(whole, plan, accel, counts, backbone_stages(backbone))


def _frozen_backbone(cfg: Config, weights_path: Path | None):
    """The backbone with its weights, under Keras' global policy now, frozen per the config."""
    from tlexp.model import apply_freeze, build_backbone, plan_freeze

    m = cfg.model
    backbone = build_backbone(m.backbone, cfg.data.image_size, weights_path)
    return backbone, apply_freeze(backbone, plan_freeze(backbone, m.freeze, m.batchnorm, m.train))


def _precision_probe(cfg: Config, accel):
    """``train.precision: auto`` on a CPU: where its figures are kept, and what keys them."""
    from tlexp.data import cache_dir
    from tlexp.model import PrecisionProbe, numerics_fingerprint

    t = cfg.train
    key = {  # what changes a backbone's timing (the CPU is added by the probe)
        "backbone": cfg.model.backbone,
        "image_size": cfg.data.image_size,
        "batch_size": t.batch_size,
        "jit_compile": t.jit_compile,
        "libraries": numerics_fingerprint([]),  # backend, its version, Keras, NumPy
    }
    return PrecisionProbe(key, cache_dir(cfg) / "precision", deterministic=t.deterministic, distribute=accel.distribute)


def _choose_precision(cfg: Config, ds, check, probe, backbone, plan, accel, weights_path: Path | None, *, images: int):
    """The frozen prefix's precision, timed on the run's own backbone against what the
    activation cache holds (:class:`tlexp.model.PrecisionProbe`); logged, and kept in
    ``accel`` for the record.

    Where it is not the policy the backbone was built under, the backbone is built again
    under it, from the same seed (the same weights): its graph's tensors carry the policy
    it was built under, and the activation cache stores the frontier's dtype. ``images``:
    the run's image-passes through the prefix (:func:`_prefix_images`).

    Returns:
        the backbone and its freeze plan, and part -> policy.
    """
    import gc
    import time

    import keras

    from tlexp.model import BF16, F32, global_policy
    from tlexp.pipeline import cached_cuts

    cut = plan.layers_frozen
    measured = images and probe.why_not is None
    cached = cached_cuts(cfg, ds, check, backbone, cut, accel.distribute, (F32, BF16)) if measured else {}
    decision = probe.decide(backbone, cut, images=images, batch_size=cfg.train.batch_size, cached=cached)
    t, rebuilt = time.perf_counter(), decision.build_policy != accel.precision
    if rebuilt:
        accel.precision = decision.build_policy
        keras.utils.set_random_seed(cfg.seed)
        with global_policy(accel.precision):
            backbone, plan = _frozen_backbone(cfg, weights_path)
        log.info("model: built again under %s, the precision chosen", accel.precision)
    if decision.source == "measured" or rebuilt:
        # The timing's segment models and traces (and a backbone built again: the first one)
        # are garbage in reference cycles: tens of thousands of objects that every full
        # collection during the first epoch's tracing would scan again until one frees them.
        # (DenseNet121 cells that had timed took 2-4 s longer over their first epoch, the one
        # that traces, and no longer over the second.) A collection here takes about 0.2 s.
        gc.collect()
    decision.seconds += time.perf_counter() - t
    accel.precision_decision = decision.to_dict()
    log.info("model: precision %s", decision.line())
    return backbone, plan, decision.choice


def _prefix_images(cfg: Config, ds) -> int:
    """About how many image-passes the run makes through its frozen prefix (0: none frozen)."""
    t, m = cfg.train, cfg.model
    if m.freeze == 0 and not str(m.train).startswith("block:"):
        return 0
    epochs = t.epochs + (t.probe_epochs if t.schedule == "lp-ft" else 0)
    # A cached prefix runs once per image; uncached, in every epoch and in the prediction pass.
    return len(ds.paths) * (1 if t.prefix_cache.enabled is not False else epochs + 1)


def _log_model(cfg: Config, accel, plan, counts: dict[str, int]) -> None:
    choice = (accel.precision_decision or {}).get("choice", {})
    precision = accel.precision
    if len(set(choice.values())) > 1:
        precision = f"{choice['prefix']} (frozen prefix), {choice['trained']} (trained part)"
    log.info(
        "model: %s, precision %s, XLA %s, distribution %s",
        ", ".join(accel.gpus) or "CPU",
        precision,
        "on" if accel.jit_compile else "off",
        accel.distribute if accel.distribute == "none" else f"{accel.distribute} over {accel.replicas} devices",
    )
    log.info(
        "model: %s, frozen prefix %d/%d layers%s; trains %s: %.1f %% of backbone parameters frozen (asked %s%s); "
        "trainable %s, non-trainable %s",
        cfg.model.backbone,
        plan.layers_frozen,
        plan.layers_total,
        f" through {plan.last_frozen_layer}" if plan.last_frozen_layer else "",
        plan.trains,
        100 * plan.frozen_share,
        plan.requested,
        "" if plan.train == "all" else f", model.train {plan.train}",
        f"{counts['trainable']:,}",
        f"{counts['non_trainable']:,}",
    )
