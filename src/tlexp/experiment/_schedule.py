"""How the trainable part trains (``train.schedule``): the stages of a run, each one fit.

- ``fine-tune``: one stage, everything ``model.freeze`` / ``model.train`` leave trainable,
  ``train.epochs`` epochs at ``train.learning_rate``.
- ``lp-ft`` (Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features and
  Underperform Out-of-Distribution"): a linear-probe stage first, the head alone on the
  frozen backbone for ``train.probe_epochs``, then fine-tuning of the whole trainable
  part for ``train.epochs`` at ``learning_rate * train.finetune_lr_factor``, so the
  backbone is not pulled about by a random head's large early gradients.
- ``gradual`` (Howard and Ruder 2018, ULMFiT's gradual unfreezing): epoch 1 trains the
  head alone, each later epoch one more backbone stage from the top, until the whole
  trainable part trains; ``train.epochs`` epochs in all. Consecutive epochs with the
  same trainable set are one stage.

Each stage recompiles (a fresh optimizer: Keras must, after ``trainable`` changes) and
runs on the same feed: everything a stage trains lies above the run's frozen prefix, so a
cached prefix serves every stage. A run is never resumed mid-schedule: a sweep reruns a
stopped cell whole, in a new folder.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

log = logging.getLogger("tlexp")


@dataclass(frozen=True)
class Stage:
    """One fit of a schedule.

    Attributes:
        name: ``fine-tune``, ``probe``, or ``epochs 2-3`` (gradual).
        epochs: epochs it runs.
        learning_rate: its base rate (the head's; backbone stages get less under layer decay).
        depth: backbone stages that train, counted from the top of the trainable part;
            0 = the head alone; None = all of it.
    """

    name: str
    epochs: int
    learning_rate: float
    depth: int | None


def plan_schedule(train: Any, n_stages: int) -> list[Stage]:
    """The stages of ``train.schedule`` for a trainable part spanning ``n_stages`` backbone stages.

    Args:
        train: the config's ``train`` section.
        n_stages: backbone stages (:func:`tlexp.model.backbone_stages`) that hold a
            trainable layer; gradual unfreezing adds one per epoch.
    """
    lr = train.learning_rate
    if train.schedule == "lp-ft":
        return [
            Stage("probe", train.probe_epochs, lr, 0),
            Stage("fine-tune", train.epochs, lr * train.finetune_lr_factor, None),
        ]
    if train.schedule == "fine-tune":
        return [Stage("fine-tune", train.epochs, lr, None)]
    depths = [min(e, n_stages) for e in range(train.epochs)]  # epoch e+1 trains the top e stages
    out: list[Stage] = []
    first = 1
    for e in range(1, train.epochs + 1):
        if e == train.epochs or depths[e] != depths[e - 1]:
            d = depths[e - 1]
            name = f"epoch {first}" if first == e else f"epochs {first}-{e}"
            out.append(Stage(name, e - first + 1, lr, None if d >= n_stages else d))
            first = e + 1
    return out


def describe(stage: Stage, *, trains: str, trainable_params: int, layer_decay: float, epoch_from: int) -> dict:
    """What the run record keeps of a stage that ran (``training.stages``)."""
    return {
        **asdict(stage),
        "first_epoch": epoch_from + 1,
        "trains": trains,
        "trainable_params": trainable_params,
        "layer_decay": layer_decay,
    }


def stage_start(plan: Any, stages: Sequence[Any], depth: int | None) -> int | None:
    """The first backbone layer that trains at ``depth`` (None: the whole trainable part).

    ``depth`` counts the backbone stages holding a trainable layer, from the top; at 0 no
    backbone layer trains (the index is past the trainable part).
    """
    if depth is None:
        return None
    if depth == 0:
        return plan.scope_stop
    return max(plan.scope_start, _inside(plan, stages)[-depth].start)


def stages_in_scope(plan: Any, stages: Sequence[Any]) -> int:
    """How many backbone stages hold a layer of the trainable part."""
    return len(_inside(plan, stages))


def _inside(plan: Any, stages: Sequence[Any]) -> list[Any]:
    """The backbone stages that hold a layer of the trainable part, bottom first."""
    return [s for s in stages if s.stop > plan.scope_start and s.start < plan.scope_stop]


def run_schedule(cfg: Any, feed: Any, built: Any, fit_stage: Callable[..., dict]) -> tuple[dict, list[dict]]:
    """Fit every stage of the run's schedule on ``feed``; the history of all epochs and the stages run.

    Args:
        built: the run's :class:`tlexp.experiment._build.Built` (backbone, freeze plan, stages).
        fit_stage: ``fit_stage(epochs=, initial_epoch=)`` fits ``feed.network.trainer`` as
            compiled and returns its history (Keras' per-epoch lists).
    """
    from tlexp.model import apply_freeze, compile_model, param_counts, stage_depths

    t, backbone, plan = cfg.train, built.whole.backbone, built.plan
    schedule = plan_schedule(t, stages_in_scope(plan, built.stages))
    scales = None
    if t.layer_decay != 1.0:
        scales = {v: t.layer_decay**d for v, d in stage_depths(backbone, built.stages).items()}
    history: dict[str, list] = {}
    ran: list[dict] = []
    done = 0
    for i, stage in enumerate(schedule):
        plain = len(schedule) == 1 and stage.depth is None and scales is None
        if not plain:  # build() compiled the plain case already: the same model, the same optimizer
            apply_freeze(backbone, plan, start=stage_start(plan, built.stages, stage.depth))
            compile_model(
                feed.network.trainer,
                len(feed.dataset.class_names),
                optimizer=t.optimizer,
                learning_rate=stage.learning_rate,
                jit_compile=t.jit_compile,
                lr_scales=scales,
            )
        what = trains(plan, built.stages, stage)
        n = param_counts(built.whole.model)["trainable"]
        log.info(
            "train: stage %d/%d %s: %d epoch(s) at lr=%g, training %s (%s parameters)%s",
            i + 1,
            len(schedule),
            stage.name,
            stage.epochs,
            stage.learning_rate,
            what,
            f"{n:,}",
            f", layer decay {t.layer_decay:g} per stage" if scales else "",
        )
        h = fit_stage(epochs=done + stage.epochs, initial_epoch=done)
        for k, v in h.items():
            history.setdefault(k, []).extend(v)
        history.setdefault("stage", []).extend([stage.name] * len(h.get("loss", [])))
        ran.append(describe(stage, trains=what, trainable_params=n, layer_decay=t.layer_decay, epoch_from=done))
        done += stage.epochs
        if not h.get("loss"):  # no training image decoded: the caller says so
            break
    if len(schedule) > 1:
        apply_freeze(backbone, plan)  # the record's counts are the whole trainable part's
    return history, ran


def trains(plan: Any, stages: Sequence[Any], stage: Stage) -> str:
    """What a stage trains, in words."""
    if stage.depth is None:
        return f"the head and {plan.trains}"
    if stage.depth == 0:
        return "the head alone"
    top = _inside(plan, stages)[-stage.depth :]
    return f"the head and {', '.join(s.label for s in top)} of {plan.trains}"
