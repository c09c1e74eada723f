"""Freezing by share of parameters, on real Keras backbones built with weights=None."""

from __future__ import annotations

import pytest

from tlexp.errors import UserError
from tlexp.model.backbones import REGISTRY, build_backbone
from tlexp.model.freeze import apply_freeze, choose_prefix, plan_freeze

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
    from typing import get_args

    from tlexp.config import ModelConfig

    assert set(REGISTRY) == set(get_args(ModelConfig.model_fields["backbone"].annotation))


def test_weights_files_match_installed_keras():
    """The file names and hashes tlexp checks are the ones Keras itself downloads."""
    import importlib
    import inspect

    for name, spec in REGISTRY.items():
        module = importlib.import_module(
            f"keras.src.applications.{spec.module if spec.module != 'resnet50' else 'resnet'}"
        )
        src = inspect.getsource(module)
        assert spec.weights_file in src or spec.weights_file.replace(name, "") in src, name
        assert spec.weights_md5 in src, name
