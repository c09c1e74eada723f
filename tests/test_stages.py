"""A backbone's natural blocks (tlexp.model.backbone_stages), on every keras.applications backbone."""

from __future__ import annotations

import pytest

from tlexp.errors import UserError
from tlexp.model import REGISTRY, apply_freeze, backbone_stages, build_backbone, find_stage, frontier, plan_freeze

pytestmark = pytest.mark.slow


def _structure(name: str, size: int | None = None):
    """The backbone's graph with its variables never initialised: the random initial values
    are most of the build time (6 s of 8 for EfficientNetV2L) and no test here reads one.
    Keras keeps a list of the variables made in the scope to initialise later; clearing the
    session forgets it (else the next scope that initialises would do all of them)."""
    import keras

    with keras.StatelessScope(initialize_variables=False):
        bb = build_backbone(name, size or max(32, REGISTRY[name].min_size))
    keras.backend.clear_session(free_memory=False)
    return bb


def _table(stages):
    return [(s.label, s.last_layer, s.params) for s in stages]


def test_vgg16_blocks_end_with_their_pool():
    bb = _structure("vgg16")
    stages = backbone_stages(bb)
    assert _table(stages) == [
        ("block1", "block1_pool", 38_720),
        ("block2", "block2_pool", 221_440),
        ("block3", "block3_pool", 1_475_328),
        ("block4", "block4_pool", 5_899_776),
        ("block5", "block5_pool", 7_079_424),
    ]
    assert [s.first_layer for s in stages] == [f"block{k}_conv1" for k in range(1, 6)]
    assert [(s.start, s.stop) for s in stages] == [(1, 4), (4, 7), (7, 11), (11, 15), (15, 19)]
    assert sum(s.params for s in stages) == bb.count_params() == 14_714_688


def test_resnet50_stages_begin_with_their_strided_unit():
    bb = _structure("resnet50")
    stages = backbone_stages(bb)
    assert _table(stages) == [
        ("conv1", "pool1_pool", 9_728),  # the stem, its max pooling included
        ("conv2", "conv2_block3_out", 220_032),
        ("conv3", "conv3_block4_out", 1_230_336),
        ("conv4", "conv4_block6_out", 7_129_088),
        ("conv5", "conv5_block3_out", 14_998_528),
    ]
    assert [s.first_layer for s in stages] == ["conv1_pad"] + [f"conv{k}_block1_1_conv" for k in range(2, 6)]
    assert sum(s.params for s in stages) == bb.count_params() == 23_587_712


def test_densenet121_dense_blocks_keep_their_transition():
    bb = _structure("densenet121")
    stages = backbone_stages(bb)
    assert _table(stages) == [
        ("conv1", "pool1", 9_664),
        ("conv2", "pool2_pool", 372_096),  # dense block 2, then its transition pool2_bn .. pool2_pool
        ("conv3", "pool3_pool", 1_063_168),
        ("conv4", "pool4_pool", 3_402_240),
        ("conv5", "relu", 2_190_336),  # with the final bn and relu
    ]
    assert [s.first_layer for s in stages[1:]] == [f"conv{k}_block1_0_bn" for k in range(2, 6)]
    assert sum(s.params for s in stages) == bb.count_params() == 7_037_504


def _smallest_per_family() -> list[str]:
    """One backbone per keras.applications module (family): the rule reads names and strides,
    which a family's members share; its larger members add only more of the same blocks."""
    smallest: dict[str, str] = {}
    for name, spec in REGISTRY.items():
        if spec.module not in smallest or spec.params < REGISTRY[smallest[spec.module]].params:
            smallest[spec.module] = name
    return sorted(smallest.values())


@pytest.mark.parametrize("name", _smallest_per_family())
def test_every_family_has_stages_at_single_tensor_cuts(name):
    bb = _structure(name)
    stages = backbone_stages(bb)
    layers = bb.layers
    assert 2 <= len(stages) <= 12, [s.label for s in stages]
    assert [s.index for s in stages] == list(range(1, len(stages) + 1))
    assert stages[0].start == 1 and stages[-1].stop == len(layers)
    for below, above in zip(stages, stages[1:], strict=False):
        assert below.stop == above.start  # contiguous
    for s in stages:
        assert s.start < s.stop and s.params > 0, s
        assert (s.first_layer, s.last_layer) == (layers[s.start].name, layers[s.stop - 1].name)
        assert len(frontier(bb, s.stop)) == 1, f"{s.label}: a skip connection crosses the cut after {s.last_layer}"
    assert sum(s.params for s in stages) == bb.count_params()
    labels = [s.label for s in stages]
    assert len(set(labels)) == len(labels) and not any(x.isdigit() for x in labels), labels


def test_stages_do_not_depend_on_the_image_size_or_on_freezing():
    """Read from strides and names, not shapes; and from what a layer *can* train."""
    small, large = _structure("mobilenetv2", 32), _structure("mobilenetv2", 96)
    assert [(s.start, s.stop, s.params) for s in backbone_stages(small)] == [
        (s.start, s.stop, s.params) for s in backbone_stages(large)
    ]
    bb = _structure("resnet50")
    before = backbone_stages(bb)
    apply_freeze(bb, plan_freeze(bb, 0.7, "frozen"))
    assert backbone_stages(bb) == before


def test_find_stage_by_number_or_label():
    stages = backbone_stages(_structure("vgg16"))
    assert find_stage("vgg16", stages, "3").label == "block3"
    assert find_stage("vgg16", stages, "block4").index == 4
    assert find_stage("vgg16", stages, "Block4").index == 4
    for bad in ("0", "6", "conv3", ""):
        with pytest.raises(UserError, match=r"has no stage .*1 block1 \(block1_conv1\.\.block1_pool\).*5 block5") as e:
            find_stage("vgg16", stages, bad)
        assert "from 1 to 5" in str(e.value)
