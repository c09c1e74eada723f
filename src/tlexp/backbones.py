"""Backbone registry, ImageNet weights, and freezing a share of a backbone's parameters.

Adding a backbone is one ``REGISTRY`` entry (and its name in ``config.BACKBONES``).
The weights file names and MD5 hashes are the ones Keras' own loaders use; a test
checks them against the installed Keras.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tlexp.errors import UserError, WeightsError

log = logging.getLogger("tlexp")

_KERAS_APPS = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one ``keras.applications`` backbone and feed it.

    Attributes:
        constructor: attribute of ``keras.applications`` (e.g. ``"VGG16"``).
        module: submodule whose ``preprocess_input`` matches the ImageNet training.
        preprocess_mode: for humans: 'caffe' (RGB->BGR, mean subtracted) or 'torch'
            (scaled to [0, 1], ImageNet mean/std).
        weights_file, weights_url, weights_md5: the no-top ImageNet file Keras downloads.
    """

    constructor: str
    module: str
    preprocess_mode: str
    weights_file: str
    weights_url: str
    weights_md5: str


REGISTRY: dict[str, BackboneSpec] = {
    "vgg16": BackboneSpec(
        "VGG16", "vgg16", "caffe",
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        _KERAS_APPS + "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "6d6bbae143d832006294945121d1f1fc",
    ),
    "resnet50": BackboneSpec(
        "ResNet50", "resnet50", "caffe",
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        _KERAS_APPS + "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "4d473c1dd8becc155b73f8504c6f6626",
    ),
    "densenet121": BackboneSpec(
        "DenseNet121", "densenet", "torch",
        "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
        _KERAS_APPS + "densenet/densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "30ee3e1110167f948a6b9946edeeb738",
    ),
}  # fmt: skip


# --------------------------------------------------------------------------- building


def build_backbone(name: str, image_size: int, weights_path: Path | None = None):
    """Build a no-top ``keras.applications`` backbone.

    Args:
        name: a key of ``REGISTRY``.
        image_size: input is (image_size, image_size, 3), 0-255 RGB after preprocessing.
        weights_path: no-top weights file to load, or ``None`` for random init.

    Raises:
        WeightsError: the file does not fit this backbone (e.g. a with-top file).
    """
    import keras

    spec = REGISTRY[name]
    ctor = getattr(keras.applications, spec.constructor)
    model = ctor(include_top=False, weights=None, input_shape=(image_size, image_size, 3))
    if weights_path is not None:
        import warnings

        try:
            # Keras 3 only *warns* when parts of a .weights.h5 file do not match the model
            # and leaves those layers randomly initialised; for a study that would be a
            # silently wrong result, so any warning while loading is an error.
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                model.load_weights(str(weights_path))
        except Exception as e:  # noqa: BLE001 - h5py/Keras raise many kinds of errors here
            raise WeightsError(
                f"Could not load weights '{weights_path}' into {spec.constructor} without its top: "
                f"{type(e).__name__}: {str(e)[:300]}. Use the no-top weights file for this backbone "
                f"(Keras names it '{spec.weights_file}')."
            ) from None
    return model


def preprocess_fn(name: str):
    """The backbone's ``preprocess_input``: 0-255 RGB float -> what the backbone expects."""
    import importlib

    return importlib.import_module(f"keras.applications.{REGISTRY[name].module}").preprocess_input


# --------------------------------------------------------------------------- freezing


@dataclass
class FreezePlan:
    """Which bottom part of a backbone is frozen, and the resulting parameter counts."""

    requested: float | str
    layers_frozen: int  # a prefix of backbone.layers (the input layer counts as one)
    layers_total: int
    last_frozen_layer: str | None
    frozen_params: int
    total_params: int
    frozen_share: float  # frozen_params / total_params: what "freeze 30 %" achieved
    batchnorm: str
    backbone_trainable: int = 0
    backbone_non_trainable: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def choose_prefix(param_counts: Sequence[int], share: float) -> int:
    """Length of the prefix of layers whose share of all parameters is closest to ``share``.

    Ties go to the longer prefix, so parameter-free layers (pooling, padding) right after
    the cut are frozen with it: 50 % of VGG16 freezes through ``block4_pool``, as in the
    study.

    Args:
        param_counts: parameters of each layer, bottom first, shape (n_layers,).
        share: target share in [0, 1).
    """
    cum = np.concatenate([[0], np.cumsum(param_counts, dtype=np.int64)])
    total = cum[-1]
    if total == 0:
        return 0
    err = np.abs(cum / total - share)
    best = err.min()
    # The longest prefix among the best ones (with a float tolerance for exact ties).
    return int(np.flatnonzero(err <= best + 1e-12)[-1])


def plan_freeze(backbone, freeze: float | str, batchnorm: str) -> FreezePlan:
    """Decide the frozen prefix of ``backbone.layers`` for ``model.freeze``.

    Raises:
        UserError: ``freeze`` names a layer the backbone does not have.
    """
    layers = backbone.layers
    counts = [layer.count_params() for layer in layers]
    if isinstance(freeze, str):
        names = [layer.name for layer in layers]
        if freeze not in names:
            import difflib

            close = difflib.get_close_matches(freeze, names, n=3)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise UserError(
                f"The 'model.freeze' parameter names layer {freeze!r}, which {backbone.name} does not have."
                f"{hint} Run 'tlexp plan' to see the freeze plan, or give a share such as 0.3."
            )
        k = names.index(freeze) + 1
    else:
        k = choose_prefix(counts, freeze)
    total = int(sum(counts))
    frozen = int(sum(counts[:k]))
    return FreezePlan(
        requested=freeze,
        layers_frozen=k,
        layers_total=len(layers),
        last_frozen_layer=layers[k - 1].name if k else None,
        frozen_params=frozen,
        total_params=total,
        frozen_share=frozen / total if total else 0.0,
        batchnorm=batchnorm,
    )


def apply_freeze(backbone, plan: FreezePlan) -> FreezePlan:
    """Set ``trainable`` on every backbone layer per ``plan``; fill in the counts.

    Frozen layers (BatchNorm included) run in inference mode: Keras 3 layers with
    ``trainable=False`` do. With ``batchnorm='frozen'`` every BatchNorm layer is frozen.
    The caller must (re)compile the model afterwards.
    """
    import keras

    for i, layer in enumerate(backbone.layers):
        trainable = i >= plan.layers_frozen
        if plan.batchnorm == "frozen" and isinstance(layer, keras.layers.BatchNormalization):
            trainable = False
        layer.trainable = trainable
    plan.backbone_trainable = count(backbone.trainable_weights)
    plan.backbone_non_trainable = count(backbone.non_trainable_weights)
    return plan


def count(weights) -> int:
    """Number of scalars in a list of Keras variables."""
    return int(sum(np.prod(w.shape) for w in weights))
