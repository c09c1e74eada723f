"""Backbone registry, ImageNet weights, and freezing a share of a backbone's parameters.

Adding a backbone is one ``REGISTRY`` entry (and its name in ``ModelConfig.backbone``'s choices; a test
checks that the two agree).
The weights file names and MD5 hashes are the ones Keras' own loaders use; a test
checks them against the installed Keras.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from tlexp.errors import WeightsError

log = logging.getLogger("tlexp")

_KERAS_APPS = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one ``keras.applications`` backbone and feed it.

    Attributes:
        constructor: attribute of ``keras.applications`` (e.g. ``"VGG16"``).
        module: submodule whose ``preprocess_input`` matches the ImageNet training.
        weights_file, weights_url, weights_md5: the no-top ImageNet file Keras downloads.
    """

    constructor: str
    module: str
    weights_file: str
    weights_url: str
    weights_md5: str


REGISTRY: dict[str, BackboneSpec] = {
    "vgg16": BackboneSpec(
        "VGG16", "vgg16",
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        _KERAS_APPS + "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "6d6bbae143d832006294945121d1f1fc",
    ),
    "resnet50": BackboneSpec(
        "ResNet50", "resnet50",
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        _KERAS_APPS + "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "4d473c1dd8becc155b73f8504c6f6626",
    ),
    "densenet121": BackboneSpec(
        "DenseNet121", "densenet",
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
        except Exception as e:
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
