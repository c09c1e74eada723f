"""Freezing by share of parameters, on real Keras backbones built with weights=None."""

from __future__ import annotations

import numpy as np
import pytest

from tlexp.errors import UserError
from tlexp.model import REGISTRY, apply_freeze, build_backbone, choose_prefix, plan_freeze

pytestmark = pytest.mark.slow


def test_choose_prefix_closest_share_ties_go_longer():
    counts = [0, 10, 10, 0, 20, 60]  # total 100; cumulative 0,0,10,20,20,40,100
    assert choose_prefix(counts, 0.0) == 0  # 0 freezes nothing, not even the 0-param input layer
    assert choose_prefix(counts, 0.001) == 1  # any other share: 0-param layers come along
    assert choose_prefix(counts, 0.2) == 4  # 20 % reached after layer 3, layer 4 has no params
    assert choose_prefix(counts, 0.31) == 5  # |0.40-0.31| < |0.20-0.31|
    assert choose_prefix(counts, 0.29) == 4
    assert choose_prefix(counts, 0.95) == 6


@pytest.fixture(scope="module")
def vgg16():
    return build_backbone("vgg16", 32)


# The study's exact VGG16 counts (seed-study.md, "What freeze x % means").
@pytest.mark.parametrize(
    ("share", "last", "trainable", "non_trainable"),
    [
        (0.3, "block4_conv2", 9_439_232, 5_275_456),
        (0.5, "block4_pool", 7_079_424, 7_635_264),
        (0.7, "block5_conv1", 4_719_616, 9_995_072),
    ],
)
def test_vgg16_matches_the_study(vgg16, share, last, trainable, non_trainable):
    plan = apply_freeze(vgg16, plan_freeze(vgg16, share, "inference"))
    assert plan.last_frozen_layer == last
    assert (plan.backbone_trainable, plan.backbone_non_trainable) == (trainable, non_trainable)
    assert plan.total_params == 14_714_688
    assert plan.frozen_share == pytest.approx(non_trainable / 14_714_688)
    # the frozen part is exactly a prefix of the layers
    flags = [layer.trainable for layer in vgg16.layers]
    assert flags == [False] * plan.layers_frozen + [True] * (len(flags) - plan.layers_frozen)


@pytest.mark.parametrize(
    ("name", "layers", "total", "non_trainable_bn"),
    [("resnet50", 175, 23_587_712, 53_120), ("densenet121", 427, 7_037_504, 83_648)],
)
def test_bn_backbones(name, layers, total, non_trainable_bn):
    bb = build_backbone(name, 32)
    assert len(bb.layers) == layers
    for share in (0.1, 0.3, 0.5, 0.7):
        plan = apply_freeze(bb, plan_freeze(bb, share, "inference"))
        assert plan.total_params == total
        assert abs(plan.frozen_share - share) < 0.04, (share, plan.frozen_share)
        # no other prefix is closer to the requested share
        counts = [layer.count_params() for layer in bb.layers]
        best = min(abs(sum(counts[:k]) / total - share) for k in range(len(counts) + 1))
        assert abs(plan.frozen_share - share) == pytest.approx(best)
        # moving statistics are never trainable; everything else above the cut is
        assert plan.backbone_trainable + plan.backbone_non_trainable == total
        assert plan.backbone_non_trainable >= plan.frozen_params
        assert plan.backbone_non_trainable - plan.frozen_params <= non_trainable_bn
    # freeze 0 freezes nothing: no layer, not even the input and the padding before conv1
    none = apply_freeze(bb, plan_freeze(bb, 0.0, "inference"))
    assert (none.layers_frozen, none.last_frozen_layer, none.frozen_params) == (0, None, 0)
    assert all(layer.trainable for layer in bb.layers)
    assert none.backbone_non_trainable == non_trainable_bn  # only the BN moving statistics
    # batchnorm='frozen' also freezes the scale/offset of BN layers above the cut
    inference = apply_freeze(bb, plan_freeze(bb, 0.3, "inference")).backbone_trainable
    frozen = apply_freeze(bb, plan_freeze(bb, 0.3, "frozen")).backbone_trainable
    assert frozen < inference


def test_freeze_through_named_layer(vgg16):
    plan = apply_freeze(vgg16, plan_freeze(vgg16, "block3_pool", "inference"))
    assert plan.last_frozen_layer == "block3_pool" and plan.layers_frozen == 11
    assert plan.frozen_params == 1_735_488


def test_unknown_layer_name_suggests(vgg16):
    with pytest.raises(UserError, match=r"does not have. Did you mean 'block4_pool'"):
        plan_freeze(vgg16, "block4_poll", "inference")


def test_registry_matches_config_choices():
    """Every backbone the config accepts can be built, and every built one can be asked for."""
    from tlexp.config import BACKBONE_NAMES

    assert list(REGISTRY) == list(BACKBONE_NAMES)


# --------------------------------------------------------------------------- every keras.applications backbone


def test_catalog_matches_installed_keras():
    """The generated catalog names every keras.applications classifier, as the installed Keras has it.

    Cheap for all of them (no model is built); the weights files of a few are asked of
    Keras itself below. On failure: python scripts/backbone_catalog.py.
    """
    import inspect

    from tlexp.model import _discover as discover

    found = discover.constructors()
    assert list(found) == list(REGISTRY), "Keras offers other backbones: run scripts/backbone_catalog.py"
    # ResNetV2 loads its files in resnet.py: look for the hashes in every application module.
    source = "".join({inspect.getsource(inspect.getmodule(ctor)) for ctor in found.values()})
    for name, ctor in found.items():
        spec = REGISTRY[name]
        assert (ctor.__name__, discover.family(ctor)) == (spec.constructor, spec.module), name
        assert callable(discover.preprocess_input(spec.module)), name
        assert discover.min_input_size(ctor) == spec.min_size, name
        assert spec.weights_hash is None or spec.weights_hash in source, name
    assert len(REGISTRY) >= 40 and {"vgg16", "resnet50", "densenet121", "efficientnetv2b0", "xception"} <= set(REGISTRY)


@pytest.mark.parametrize("name", ["vgg16", "mobilenet", "mobilenetv3small", "efficientnetv2b0", "convnexttiny"])
def test_weights_file_is_the_one_keras_asks_for(name):
    """Exact name, URL and hash, from Keras' own loader (stopped before it downloads): one
    backbone per way the application modules spell their files."""
    import keras

    from tlexp.model import imagenet_file

    spec = REGISTRY[name]
    ctor = getattr(keras.applications, spec.constructor)
    assert imagenet_file(ctor, spec.min_size) == (spec.weights_file, spec.weights_url, spec.weights_hash)


def _smallest_per_family() -> list[str]:
    smallest: dict[str, str] = {}
    for name, spec in REGISTRY.items():
        if spec.module not in smallest or spec.params < REGISTRY[smallest[spec.module]].params:
            smallest[spec.module] = name
    return sorted(smallest.values())


FAMILIES = _smallest_per_family()


@pytest.mark.parametrize("name", FAMILIES)
def test_family_builds_freezes_and_caches_exactly(name):
    """The smallest backbone of each family, at its smallest input, random weights: it builds,
    "freeze 30 %" is the closest prefix, the BatchNorm policies hold, its preprocessing is
    applied once, and prefix segment + the rest of the model equals the whole model, at a
    cut that crosses residual / dense connections where the family has any."""
    import keras

    from tlexp.config import Config
    from tlexp.experiment._build import build_whole
    from tlexp.model import frontier, preprocess_fn, segment, suffix_model
    from tlexp.pipeline import blocker

    keras.utils.set_random_seed(0)
    spec = REGISTRY[name]
    size = max(32, spec.min_size)
    bb = build_backbone(name, size)
    assert bb.count_params() == spec.params

    # freeze 30 %: the prefix closest to 0.3 of the parameters
    plan = apply_freeze(bb, plan_freeze(bb, 0.3, "frozen"))
    counts = [layer.count_params() for layer in bb.layers]
    best = min(abs(sum(counts[:k]) / plan.total_params - 0.3) for k in range(len(counts) + 1))
    assert abs(plan.frozen_share - 0.3) == pytest.approx(best) and abs(plan.frozen_share - 0.3) < 0.1
    assert plan.backbone_trainable + plan.backbone_non_trainable == plan.total_params == spec.params
    flat = [sub for layer in bb.layers[plan.layers_frozen :] for sub in layer._flatten_layers()]
    assert not any(isinstance(sub, keras.layers.BatchNormalization) and sub.trainable for sub in flat)

    # preprocessing: in the model (and preprocess_input passes through), or by preprocess_input
    x = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")
    fed = np.asarray(preprocess_fn(name)(x.copy()))
    in_model = any(isinstance(layer, (keras.layers.Rescaling, keras.layers.Normalization)) for layer in bb.layers)
    assert in_model == np.array_equal(fed, x), "preprocessing must happen exactly once"

    # cached == uncached: the cut nearest to the plan's whose frontier has most tensors
    n = len(bb.layers)
    near = range(max(2, plan.layers_frozen - 12), min(n, plan.layers_frozen + 12))
    cut = max(near, key=lambda c: (len(frontier(bb, c)), -abs(c - plan.layers_frozen)))
    merges = any(len(node.input_tensors) > 1 for nodes in bb._nodes_by_depth.values() for node in nodes)
    assert len(frontier(bb, cut)) >= 2 or not merges, "a residual / dense backbone has a multi-tensor cut"
    apply_freeze(bb, plan_freeze(bb, bb.layers[cut - 1].name, "inference"))
    assert blocker(bb, cut, enabled=True, batchnorm="inference", distribute="none") is None
    cfg = Config.model_validate(
        {"data": {"image_size": size}, "model": {"backbone": name, "head": {"pooling": "avg", "dense": [8]}}}
    )
    whole = build_whole(cfg, bb, 2)
    uncached = np.asarray(whole.model(fed, training=False))
    cached = np.asarray(suffix_model(whole, cut, "inference").model(segment(bb, 1, cut)(fed), training=False))
    assert np.isfinite(uncached).all() and uncached.shape == (2, 1)
    np.testing.assert_allclose(cached, uncached, rtol=1e-4, atol=1e-5)


def test_random_layers_block_the_cache_when_training_can_reach_them():
    """EfficientNet's blocks hold Dropout: a prefix holding one is not cached under batchnorm=train."""
    import keras

    from tlexp.model import randomness
    from tlexp.pipeline import blocker

    bb = build_backbone("efficientnetv2b0", 32)
    first = next(i for i, layer in enumerate(bb.layers) if randomness(layer))
    assert type(bb.layers[first]).__name__ == "Dropout"
    apply_freeze(bb, plan_freeze(bb, bb.layers[first].name, "train"))
    kw = {"enabled": True, "distribute": "none"}
    assert "is random in training" in blocker(bb, first + 1, batchnorm="train", **kw)
    assert blocker(bb, first + 1, batchnorm="inference", **kw) is None
    assert blocker(bb, first, batchnorm="train", **kw) is None

    # Found without a list of classes: a seed generator, or a StochasticDepth-like name;
    # inside a nested block too.
    class StochasticDepth(keras.layers.Layer):
        def call(self, x, training=None):
            return x

    nested = keras.Sequential([keras.layers.Dense(2), keras.layers.GaussianNoise(0.1)])
    assert [randomness(x) for x in (StochasticDepth(), nested, keras.layers.Dense(2))] == ["training", "training", None]
    assert randomness(keras.layers.RandomFlip()) == "augmentation"


def test_too_small_image_is_a_clear_error():
    with pytest.raises(
        UserError, match=r"InceptionV3 \(model.backbone 'inceptionv3'\) for data.image_size 40.*at least 75"
    ):
        build_backbone("inceptionv3", 40)
