"""Backbones: every ``keras.applications`` image classifier, built without its top.

The names, minimum sizes and ImageNet weights files come from :mod:`tlexp.catalog`,
generated from Keras itself; nothing here knows a family by name. Each backbone is fed
through its own submodule's ``preprocess_input``. Families that include their
preprocessing in the model (EfficientNet, EfficientNetV2, ConvNeXt, MobileNetV3: a
``Rescaling`` / ``Normalization`` layer at the bottom) have a pass-through
``preprocess_input``, so images are never preprocessed twice; a test checks that pairing
for every family.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from tlexp.catalog import BACKBONES
from tlexp.errors import UserError, WeightsError

log = logging.getLogger("tlexp")


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one ``keras.applications`` backbone and feed it.

    Attributes:
        constructor: attribute of ``keras.applications`` (e.g. ``"VGG16"``).
        module: submodule whose ``preprocess_input`` matches the ImageNet training.
        min_size: smallest image size the backbone accepts.
        params: parameters without the top.
        weights_file, weights_url: the no-top ImageNet file Keras downloads.
        weights_hash: its MD5 (or SHA-256: 64 hex digits); ``None`` where Keras has none.
    """

    constructor: str
    module: str
    min_size: int
    params: int
    weights_file: str
    weights_url: str
    weights_hash: str | None


REGISTRY: dict[str, BackboneSpec] = {row[0]: BackboneSpec(*row[1:]) for row in BACKBONES}


def build_backbone(name: str, image_size: int, weights_path: Path | None = None):
    """Build a no-top ``keras.applications`` backbone.

    Args:
        name: a key of ``REGISTRY``.
        image_size: input is (image_size, image_size, 3), 0-255 RGB after preprocessing.
        weights_path: no-top weights file to load, or ``None`` for random init.

    Raises:
        UserError: Keras refuses the image size (below the backbone's minimum, or a size
            its architecture cannot divide).
        WeightsError: the file does not fit this backbone (e.g. a with-top file).
    """
    import keras

    spec = REGISTRY[name]
    ctor = getattr(keras.applications, spec.constructor)
    try:
        model = ctor(include_top=False, weights=None, input_shape=(image_size, image_size, 3))
    except ValueError as e:  # checked in the config too; a size that passes there may still not fit
        raise UserError(
            f"Keras cannot build {spec.constructor} (model.backbone '{name}') for data.image_size {image_size}: "
            f"{str(e)[:300]}. Its minimum is {spec.min_size}; try data.image_size 224."
        ) from None
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
