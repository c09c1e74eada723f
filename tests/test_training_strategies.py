"""What each strategy trains: the variables a fit changes, and those it leaves bit-identical.

Every ``model.train`` value and every ``train.schedule`` runs through the run's own
schedule code (:func:`tlexp.experiment._schedule.run_schedule`) on a real
keras.applications backbone, and each stage's fit is checked variable by variable. The
file is backend-neutral: the slow leg runs it on TensorFlow, the JAX leg on JAX.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from tlexp.config import Config
from tlexp.errors import UserError

pytestmark = pytest.mark.slow

BACKBONE = "mobilenetv3small"  # small, with biases, BatchNorm and several stages
SIZE = 32


@pytest.fixture(scope="module")
def parts():
    """The backbone, the whole model on it, its initial weights, the stages and a batch of data."""
    from tlexp.model import HeadSpec, backbone_stages, build_backbone, build_model

    backbone = build_backbone(BACKBONE, SIZE, None)
    whole = build_model(backbone, 2, image_size=SIZE, head=HeadSpec(pooling="avg", dense=()), seed=0)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (16, SIZE, SIZE, 3)).astype("float32")
    y = np.array([0, 1] * 8, dtype="float32")
    return SimpleNamespace(
        backbone=backbone,
        whole=whole,
        initial=[np.array(w) for w in whole.model.get_weights()],
        stages=backbone_stages(backbone),
        x=x,
        y=y,
    )


def config(**train) -> Config:
    model = {k: train.pop(k) for k in ("freeze", "train", "batchnorm") if k in train}
    return Config.model_validate(
        {"model": {"backbone": BACKBONE, **model}, "train": {"learning_rate": 0.001, "epochs": 1, **train}}
    )


def values(model) -> dict[int, np.ndarray]:
    return {id(v): np.array(v.numpy()) for v in model.weights}


def schedule(parts, cfg: Config):
    """Run ``cfg``'s schedule from the initial weights; the variables each stage changed."""
    from tlexp.experiment._build import Built
    from tlexp.experiment._schedule import run_schedule
    from tlexp.model import apply_freeze, compile_model, param_counts, plan_freeze

    parts.whole.model.set_weights(parts.initial)
    plan = apply_freeze(
        parts.backbone, plan_freeze(parts.backbone, cfg.model.freeze, cfg.model.batchnorm, cfg.model.train)
    )
    trainer = parts.whole.trainer
    compile_model(trainer, 2, optimizer=cfg.train.optimizer, learning_rate=cfg.train.learning_rate)
    built = Built(parts.whole, plan, None, param_counts(parts.whole.model), parts.stages)
    feed = SimpleNamespace(network=parts.whole, dataset=SimpleNamespace(class_names=["a", "b"]))
    changed: list[tuple[set[int], set[int]]] = []  # per stage: (stepped, changed)

    def fit_stage(epochs: int, initial_epoch: int) -> dict:
        before = values(parts.whole.model)
        trained = {id(v) for v in trainer.trainable_variables}
        trainer.run_eagerly = True  # what is trained does not depend on tracing; two steps eagerly beat a trace
        h = trainer.fit(parts.x, parts.y, batch_size=8, epochs=epochs, initial_epoch=initial_epoch, verbose=0)
        after = values(parts.whole.model)
        changed.append((trained, {k for k in before if not np.array_equal(before[k], after[k])}))
        return {k: [float(v) for v in vs] for k, vs in h.history.items()}

    history, stages = run_schedule(cfg, feed, built, fit_stage)
    return plan, changed, stages, history


def variables_of(parts, layers=None, *, head: bool = False, keep=lambda layer, v: True) -> set[int]:
    """ids of the trainable-by-construction variables of some backbone layers (and/or the head)."""
    out = set()
    for layer in parts.backbone.layers if layers is None else layers:
        for sub in layer._flatten_layers(include_self=True, recursive=True):
            out |= {id(v) for v in sub._trainable_variables if keep(sub, v)}
    if head:
        out |= {id(v) for layer in parts.whole.head for v in layer.trainable_weights}
    return out


def same(parts, stage: tuple[set[int], set[int]], want: set[int]) -> None:
    """A stage trained exactly ``want``: the optimizer stepped exactly ``want``, every other
    variable is bit-identical after the fit, and ``want`` did move: the head, and some of
    the backbone's part where it has one. (Not every variable: from random weights many
    gradients in the backbone are around 1e-12, and Adam's step then falls below a float32
    weight's resolution, more of them on JAX than on TensorFlow.)"""
    trained, changed = stage
    names = {id(v): v.path for v in parts.whole.model.weights}
    assert trained == want, {
        "trained, should not have": sorted(names[k] for k in trained - want),
        "not trained, should have": sorted(names[k] for k in want - trained),
    }
    assert changed <= want, sorted(names[k] for k in changed - want)
    backbone = {id(v) for v in parts.backbone.weights}
    assert changed - backbone  # the head moved
    assert not want & backbone or changed & backbone  # and so did the backbone's part, where it trains


def is_norm(layer) -> bool:
    return type(layer).__name__ == "BatchNormalization"


def test_the_backbone_has_what_the_strategies_need(parts):
    kinds = {
        (is_norm(s), v.name) for layer in parts.backbone.layers for s in layer._flatten_layers() for v in s.weights
    }
    assert {(False, "bias"), (False, "kernel"), (True, "gamma"), (True, "beta"), (True, "moving_mean")} <= kinds
    assert len(parts.stages) >= 3


def test_all_above_the_cut(parts):
    plan, changed, stages, _ = schedule(parts, config(freeze=0.5))
    above = parts.backbone.layers[plan.layers_frozen :]
    want = variables_of(parts, above, head=True)
    assert len(changed) == 1
    same(parts, changed[0], want)  # the trainable part changed, everything else is bit-identical
    assert not variables_of(parts, parts.backbone.layers[: plan.layers_frozen]) & changed[0][1]
    assert [s["name"] for s in stages] == ["fine-tune"]


def test_biases_only(parts):
    def bias(layer, v):
        return v.name == "bias" or (is_norm(layer) and v.name == "beta")

    plan, changed, _, _ = schedule(parts, config(freeze=0.0, train="biases"))
    want = variables_of(parts, keep=bias) | variables_of(parts, head=True, layers=[])
    assert len(changed) == 1
    same(parts, changed[0], want)
    assert plan.backbone_trainable == sum(
        int(np.prod(v.shape))
        for layer in parts.backbone.layers
        for s in layer._flatten_layers()
        for v in s.weights
        if bias(s, v)
    )


def test_normalisation_layers_only(parts):
    plan, changed, _, _ = schedule(parts, config(freeze=0.0, train="norm"))
    want = variables_of(parts, keep=lambda layer, v: is_norm(layer)) | variables_of(parts, [], head=True)
    assert len(changed) == 1
    same(parts, changed[0], want)
    # BatchNorm's moving statistics are never trained (the backbone runs in inference mode).
    stats = {
        id(v)
        for layer in parts.backbone.layers
        for s in layer._flatten_layers()
        for v in s.weights
        if "moving" in v.name
    }
    assert stats and not stats & changed[0][1]


def test_one_stage_alone(parts):
    stage = parts.stages[1]
    plan, changed, _, _ = schedule(parts, config(freeze=0.0, train="block:2"))
    assert (plan.scope_start, plan.scope_stop) == (stage.start, stage.stop)
    assert plan.layers_frozen == stage.start  # everything below the stage is a frozen prefix (cacheable)
    want = variables_of(parts, parts.backbone.layers[stage.start : stage.stop], head=True)
    assert len(changed) == 1
    same(parts, changed[0], want)
    # By label too; and a stage inside the frozen share is refused with what to do.
    plan2, _, _, _ = schedule(parts, config(freeze=0.0, train=f"block:{stage.label}"))
    assert (plan2.scope_start, plan2.scope_stop) == (stage.start, stage.stop)
    with pytest.raises(UserError, match="lies wholly in the part model.freeze=0.9 freezes"):
        schedule(parts, config(freeze=0.9, train="block:1"))


def test_lp_ft_trains_the_head_first_then_the_rest_at_a_lower_rate(parts):
    cfg = config(freeze=0.3, schedule="lp-ft", probe_epochs=2, epochs=1, finetune_lr_factor=0.1)
    plan, changed, stages, history = schedule(parts, cfg)
    head = variables_of(parts, [], head=True)
    same(parts, changed[0], head)  # the probe: the head alone
    same(parts, changed[1], variables_of(parts, parts.backbone.layers[plan.layers_frozen :], head=True))
    assert [(s["name"], s["epochs"], s["first_epoch"], s["depth"]) for s in stages] == [
        ("probe", 2, 1, 0),
        ("fine-tune", 1, 3, None),
    ]
    assert stages[0]["learning_rate"] == 0.001 and stages[1]["learning_rate"] == pytest.approx(0.0001)
    assert stages[0]["trainable_params"] < stages[1]["trainable_params"]
    assert history["stage"] == ["probe", "probe", "fine-tune"] and len(history["loss"]) == 3


def test_gradual_unfreezing_adds_one_stage_per_epoch_from_the_top(parts):
    plan, changed, stages, _ = schedule(parts, config(freeze=0.0, schedule="gradual", epochs=3))
    top, second = parts.stages[-1], parts.stages[-2]
    layers = parts.backbone.layers
    same(parts, changed[0], variables_of(parts, [], head=True))
    same(parts, changed[1], variables_of(parts, layers[top.start : top.stop], head=True))
    same(parts, changed[2], variables_of(parts, layers[second.start : top.stop], head=True))
    assert [(s["name"], s["depth"]) for s in stages] == [("epoch 1", 0), ("epoch 2", 1), ("epoch 3", 2)]
    assert top.label in stages[1]["trains"] and second.label in stages[2]["trains"]


def test_layer_decay_gives_each_stage_its_rate(parts):
    """The schedule compiles an optimizer whose step for a variable in the stage ``d`` below
    the top is ``lr * decay**d`` (the head's is ``lr``): with plain SGD and a gradient of
    ones, each variable moves by exactly its rate."""
    from tlexp.experiment._build import Built
    from tlexp.experiment._schedule import run_schedule
    from tlexp.model import apply_freeze, param_counts, plan_freeze

    parts.whole.model.set_weights(parts.initial)
    cfg = config(freeze=0.0, optimizer="sgd", learning_rate=0.01, layer_decay=0.5)
    plan = apply_freeze(parts.backbone, plan_freeze(parts.backbone, 0.0, "inference"))
    built = Built(parts.whole, plan, None, param_counts(parts.whole.model), parts.stages)
    feed = SimpleNamespace(network=parts.whole, dataset=SimpleNamespace(class_names=["a", "b"]))
    trainer = parts.whole.trainer

    def fit_stage(epochs: int, initial_epoch: int) -> dict:
        trainer.run_eagerly = True
        trainer.fit(parts.x[:8], parts.y[:8], batch_size=8, epochs=1, verbose=0)  # builds the optimizer
        return {"loss": [0.0]}

    run_schedule(cfg, feed, built, fit_stage)
    variables = trainer.trainable_variables
    before = [np.array(v.numpy()) for v in variables]
    trainer.optimizer.apply([np.ones(v.shape, "float32") for v in variables], variables)
    step = {id(v): b - np.array(v.numpy()) for v, b in zip(variables, before, strict=True)}
    layers = parts.backbone.layers
    expected = [(variables_of(parts, [], head=True), 0.01)]
    for d, stage in enumerate(reversed(parts.stages), start=1):
        expected.append((variables_of(parts, layers[stage.start : stage.stop]), 0.01 * 0.5**d))
    assert sum(len(ids) for ids, _ in expected) == len(variables)  # every trained variable has a stage
    for ids, rate in expected:
        for k in ids:
            np.testing.assert_allclose(step[k], rate, rtol=1e-3)


def test_norm_on_a_backbone_without_normalisation_layers_is_refused():
    from tlexp.model import apply_freeze, build_backbone, plan_freeze

    vgg = build_backbone("vgg16", 32, None)
    with pytest.raises(UserError, match="nothing of vgg16 would train"):
        apply_freeze(vgg, plan_freeze(vgg, 0.0, "inference", "norm"))
