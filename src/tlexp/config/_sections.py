"""The config's data and head sections, and what every section shares: strict parsing,
unknown keys as errors. Part of the schema (:mod:`tlexp.config._schema`); no TensorFlow.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


def true_false_auto(v: Any) -> Any:
    """true, false or 'auto', and nothing pydantic would coerce into one ("yes", 1)."""
    if v is not True and v is not False and v != "auto":
        raise ValueError("must be true, false or 'auto'")
    return v


def int_is_float(v: Any) -> Any:
    """YAML reads "0" and "1" as ints; let them reach a float field's range check as floats (not bools)."""
    return float(v) if isinstance(v, int) and not isinstance(v, bool) else v


class Section(BaseModel):
    # strict: a YAML string "2" is not silently an int; extra="forbid": typos are errors.
    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)


class SyntheticConfig(Section):
    enabled: bool = Field(
        False,
        description="Write tlexp's built-in two-class demo dataset (real JPEG files) into "
        "data.root first, if it is not there yet. Never touches an existing non-demo folder.",
    )
    per_class: int = Field(150, ge=2, description="Demo images generated per class.")


class DataConfig(Section):
    root: str = Field(
        "data/dogs-vs-cats/train",
        description="Dataset folder: class sub-folders (root/cat/*.jpg) or the Kaggle flat "
        "layout (root/cat.0.jpg, label = name before the first dot).",
    )
    layout: Literal["auto", "folders", "flat"] = Field(
        "auto", description="Dataset layout; 'auto' detects it and logs which was found."
    )
    image_size: int = Field(224, ge=32, description="Images are resized to image_size x image_size pixels.")
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="Share of each class held out for validation.")
    test_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="Share of each class held out for the final test.")
    split_seed: int | None = Field(
        None,
        ge=0,
        description="Seed of the train/val/test split; null = the run's seed. Sweeps fix it so all "
        "cells share one split.",
    )
    limit_per_class: int | None = Field(
        None, ge=3, description="Use at most this many images per class (a seeded random subset); null = all."
    )
    cache_dir: str | None = Field(
        None,
        description="Where tlexp keeps data checks and decoded-image caches (never inside data.root); "
        "null = $TLEXP_CACHE_DIR, else ~/.cache/tlexp.",
    )
    decoded_cache: bool = Field(
        True,
        description="Decode and resize every image once per (dataset, image_size) into a uint8 cache in "
        "cache_dir, shared by all runs (224 px: about 150 kB per image); false = decode on the fly every epoch.",
    )
    group_near_duplicates: bool = Field(
        True,
        description="Keep near-identical images (resized, recompressed or recoloured copies of one picture) in "
        "one split, as byte-identical ones always are; false = group only identical bytes.",
    )
    near_duplicate_threshold: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="How close an image must be to its near-duplicate group's representative: the largest "
        "relative difference of their 32x32 grayscale pixels after matching brightness (within 25 %), among "
        "images whose perceptual hashes differ in at most 6 bits. Lower it if near_duplicates.csv groups "
        "different pictures; 0 = only pixel-identical ones.",
    )
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)

    _fractions_are_floats = field_validator("val_fraction", "test_fraction", mode="before")(int_is_float)


class HeadConfig(Section):
    pooling: Literal["flatten", "avg", "max"] = Field(
        "flatten", description="How backbone feature maps become a vector: Flatten, or global average/max pooling."
    )
    dense: list[int] = Field(
        [256, 64], description="Units of the hidden Dense layers, in order (the study's VGG16 head: [256, 64])."
    )
    activation: Literal["relu", "gelu", "swish", "elu", "tanh"] = Field(
        "relu", description="Activation of the hidden Dense layers."
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout rate after each hidden Dense layer.")

    @field_validator("dense")
    @classmethod
    def _positive_units(cls, v: list[int]) -> list[int]:
        bad = [u for u in v if u < 1]
        if bad:
            raise ValueError(f"must hold whole numbers >= 1 only (bad entries: {bad})")
        return v

    _dropout_is_float = field_validator("dropout", mode="before")(int_is_float)
