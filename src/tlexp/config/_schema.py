"""The config schema: its sections as pydantic models, every key with its type, default,
constraint and description, in one place.

``tlexp config`` prints this schema (:func:`tlexp.config._keys.describe` reads it); it is
never written twice. No TensorFlow: a config is validated before any deep-learning import.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tlexp.catalog import BACKBONES


def _true_false_auto(v: Any) -> Any:
    """true, false or 'auto', and nothing pydantic would coerce into one ("yes", 1)."""
    if v is not True and v is not False and v != "auto":
        raise ValueError("must be true, false or 'auto'")
    return v


def _int_is_float(v: Any) -> Any:
    """YAML reads "0" and "1" as ints; let them reach a float field's range check as floats (not bools)."""
    return float(v) if isinstance(v, int) and not isinstance(v, bool) else v


class _Section(BaseModel):
    # strict: a YAML string "2" is not silently an int; extra="forbid": typos are errors.
    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)


class SyntheticConfig(_Section):
    enabled: bool = Field(
        False,
        description="Write tlexp's built-in two-class demo dataset (real JPEG files) into "
        "data.root first, if it is not there yet. Never touches an existing non-demo folder.",
    )
    per_class: int = Field(150, ge=2, description="Demo images generated per class.")


class DataConfig(_Section):
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

    _fractions_are_floats = field_validator("val_fraction", "test_fraction", mode="before")(_int_is_float)


class HeadConfig(_Section):
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

    _dropout_is_float = field_validator("dropout", mode="before")(_int_is_float)


# Every keras.applications image classifier, from the generated catalog (no Keras import:
# a config is checked before TensorFlow starts). A plain str checked by a validator rather
# than a Literal of 41 names: the error then suggests the closest name, and 'tlexp config'
# does not print all of them as the type.
BACKBONE_NAMES: tuple[str, ...] = tuple(row[0] for row in BACKBONES)


class ModelConfig(_Section):
    backbone: str = Field(
        "vgg16",
        description="keras.applications image classifier without its top, by lowercase constructor name: vgg16, "
        "resnet50, densenet121, efficientnetv2b0, convnexttiny, mobilenetv3small, xception, ... "
        f"({len(BACKBONE_NAMES)} in all; 'tlexp weights' lists them with their ImageNet files).",
    )
    weights: str = Field(
        "imagenet",
        description="'imagenet' (Keras download and cache), 'none' (random init), or the path "
        "of a no-top weights file (.h5 / .weights.h5) for this backbone.",
    )
    download: bool = Field(
        True,
        description="Let Keras download ImageNet weights that are not cached yet. false = offline: "
        "fail at once with the file name and folder to put it in.",
    )
    freeze: float | str = Field(
        0.3,
        description="Share of backbone parameters to freeze, bottom layers first, in [0, 1) "
        "(the prefix of layers whose share is closest), or the name of the last layer to freeze.",
    )
    batchnorm: Literal["inference", "frozen", "train"] = Field(
        "inference",
        description="BatchNorm layers in the trainable part: 'inference' (moving statistics fixed, "
        "scale/offset trained; Keras' fine-tuning advice), 'frozen' (not trained at all), "
        "'train' (batch statistics, moving averages updated). Frozen-part BN is always inference.",
    )
    head: HeadConfig = Field(default_factory=HeadConfig)

    @field_validator("freeze", mode="before")
    @classmethod
    def _check_freeze(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("must be a float in [0, 1) or a layer name")
        if isinstance(v, int):
            v = float(v)
        if isinstance(v, float) and not 0.0 <= v < 1.0:
            raise ValueError(
                "must be a float in the range [0.0, 1.0) (a share of backbone parameters; "
                "0.3 freezes about 30 %) or a layer name"
            )
        if isinstance(v, str) and not v.strip():
            raise ValueError("must be a float in [0, 1) or a layer name, not an empty string")
        return v

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, v: str) -> str:
        if v not in BACKBONE_NAMES:
            import difflib

            close = difflib.get_close_matches(v.lower().replace("-", "").replace("_", ""), BACKBONE_NAMES, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(
                f"must be one of the {len(BACKBONE_NAMES)} keras.applications backbones{hint}, by lowercase "
                f"constructor name: {', '.join(BACKBONE_NAMES)} ('tlexp weights' lists them with their files)"
            )
        return v

    @field_validator("weights", mode="before")
    @classmethod
    def _none_weights(cls, v: Any) -> Any:
        return "none" if v is None else v


class PrefixCacheConfig(_Section):
    enabled: bool | Literal["auto"] = Field(
        "auto",
        description="Run the frozen part of the backbone once per image, keep its activations on disk "
        "(cache_dir/activations, shared by the cells of a sweep) and train only the rest on them, reading each "
        "batch from disk. auto = where that pays, decided per cut from measured figures (bytes per image and the "
        "disk's read rate against the prefix's compute time on this device) and logged with them; true = wherever "
        "it is correct and fits max_gb; false = always the ordinary path (whole model every epoch). The run record "
        "says which path was taken, and why.",
    )

    _enabled_is_switch = field_validator("enabled", mode="before")(_true_false_auto)

    dtype: Literal["auto", "float16", "float32"] = Field(
        "auto",
        description="Storage type of cached activations; auto = the compute dtype (exact: float32 on CPU, "
        "16-bit under mixed precision); float16 halves a float32 cache at a relative rounding error below 5e-4.",
    )
    max_gb: float | Literal["auto"] = Field(
        "auto",
        description="Disk budget of the activation cache, in GB; auto = what the cache holds plus the free space "
        "of its disk above 5 % of the disk (at most 10 GB), which is left free for everything else. An entry "
        "larger than the budget is not cached (the log says so, with the figures); the least recently used "
        "entries are removed to stay within it, also when the budget is lowered.",
    )

    @field_validator("max_gb", mode="before")
    @classmethod
    def _gb_or_auto(cls, v: Any) -> Any:
        if v == "auto":
            return v
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
            return float(v)
        raise ValueError("must be a number of GB greater than 0, or 'auto' (the disk's free space)")


class TrainConfig(_Section):
    epochs: int = Field(2, ge=1, description="Fine-tuning epochs (the study used 2).")
    batch_size: int = Field(32, ge=1, description="Images per training step.")
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = Field("adam", description="Keras optimizer.")
    learning_rate: float = Field(1e-4, gt=0.0, description="Learning rate of the optimizer.")
    precision: Literal["auto", "float32", "mixed_float16", "mixed_bfloat16"] = Field(
        "auto",
        description="Compute dtype; the output layer and loss stay float32. auto = mixed_bfloat16 on GPUs "
        "of compute capability >= 8.0, mixed_float16 on 7.x, float32 on CPU.",
    )
    jit_compile: bool | Literal["auto"] = Field(
        "auto", description="XLA compilation of the train step; auto = Keras' choice (on for GPUs, off on CPU)."
    )

    _jit_is_switch = field_validator("jit_compile", mode="before")(_true_false_auto)

    distribute: Literal["auto", "none", "mirrored"] = Field(
        "auto",
        description="Several GPUs in one machine: auto = data parallel over all GPUs when more than one is "
        "visible (train.batch_size is the global batch), none = one device, mirrored = data parallel over all "
        "devices: tf.distribute.MirroredStrategy on TensorFlow, keras.distribution.DataParallel on JAX (there "
        "train.batch_size must be a multiple of the device count).",
    )
    deterministic: bool = Field(
        False,
        description="Bit-identical results for the same seed on the same machine: TensorFlow's op determinism "
        "(deterministic kernels only; an op without one is an error). Slower; the README gives the measured cost. "
        "On JAX: XLA is deterministic on a CPU; on a GPU set XLA_FLAGS=--xla_gpu_deterministic_ops=true.",
    )
    prefix_cache: PrefixCacheConfig = Field(default_factory=PrefixCacheConfig)


class ForestConfig(_Section):
    enabled: bool = Field(True, description="Fit a Random Forest on the penultimate activations of the trained model.")
    n_estimators: int = Field(100, ge=1, description="Trees in the forest.")
    max_depth: int | None = Field(None, ge=1, description="Maximum tree depth; null = grow until leaves are pure.")
    n_jobs: int = Field(-1, description="Parallel jobs for fitting (-1 = all cores).")

    @field_validator("n_jobs")
    @classmethod
    def _nonzero(cls, v: int) -> int:
        if v == 0:
            raise ValueError("must be a positive number of jobs or -1 (all cores), not 0")
        return v


class ClassifierConfig(_Section):
    estimator: str = Field(description="Dotted path of a scikit-learn classifier with predict_proba.")
    params: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of the estimator.")
    scale: bool = Field(True, description="Standardise the features first (StandardScaler).")

    @field_validator("estimator")
    @classmethod
    def _sklearn_only(cls, v: str) -> str:
        # Only scikit-learn classes: a config file must not be a way to import arbitrary code.
        parts = v.split(".")
        if parts[0] != "sklearn" or len(parts) < 3 or not all(p.isidentifier() for p in parts):
            raise ValueError("must be the dotted path of a scikit-learn class, e.g. sklearn.svm.SVC")
        return v


DEFAULT_CLASSIFIERS = {
    "logreg": {"estimator": "sklearn.linear_model.LogisticRegression", "params": {"max_iter": 1000}, "scale": True},
}


class ResourcesConfig(_Section):
    cpus: float = Field(1.0, gt=0.0, description="CPUs one sweep cell asks of Ray ('tlexp sweep --executor ray').")
    gpus: float = Field(0.0, ge=0.0, description="GPUs one sweep cell asks of Ray; 1 = one cell per GPU.")


class OutputConfig(_Section):
    dir: str = Field("results", description="Parent folder of run folders.")
    save_model: bool = Field(
        True,
        description="Save the fine-tuned model (model.keras) and every fitted classifier (<name>.joblib) in the "
        "run folder, for 'tlexp predict'.",
    )


class MlflowConfig(_Section):
    uri: str | None = Field(
        None,
        description="MLflow tracking URI (file:./mlruns, http://host:5000, ...); null = no MLflow. "
        "Needs pip install 'tlexp[mlflow]'.",
    )
    experiment: str = Field("tlexp", description="MLflow experiment the runs are logged to.")


class TrackingConfig(_Section):
    tensorboard: bool = Field(
        False,
        description="Write TensorBoard logs into the run folder (tensorboard/); view with "
        "'tensorboard --logdir results/'.",
    )
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)


class Config(_Section):
    name: str | None = Field(
        None,
        description="Run folder name; null = '<backbone>_f<freeze %>_s<seed>'. Never overwritten: name2, name3, ...",
    )
    seed: int = Field(0, ge=0, description="Seed for the split, weight init, shuffling and the forest.")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    forest: ForestConfig = Field(default_factory=ForestConfig)
    classifiers: dict[str, ClassifierConfig | None] = Field(
        default_factory=lambda: {k: ClassifierConfig(**v) for k, v in DEFAULT_CLASSIFIERS.items()},
        description="More scikit-learn classifiers fitted on the same penultimate features as the forest, "
        "by name: {estimator, params, scale}. A name set to null is dropped.",
    )
    output: OutputConfig = Field(default_factory=OutputConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    sweep: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="Grid for 'tlexp sweep': config key -> list of values, e.g. {model.freeze: [0.1, 0.3]}. "
        "Every combination is one cell (an ordinary run). Empty for a single run.",
    )

    @field_validator("sweep", mode="before")
    @classmethod
    def _scalars_are_lists(cls, v: Any) -> Any:
        # `sweep.seed=0` on the command line narrows a grid to one value.
        return {k: x if isinstance(x, list) else [x] for k, x in v.items()} if isinstance(v, dict) else v

    @field_validator("classifiers")
    @classmethod
    def _names(cls, v: dict[str, ClassifierConfig | None]) -> dict[str, ClassifierConfig | None]:
        bad = [k for k in v if not k.isidentifier() or k in ("head", "forest")]
        if bad:
            raise ValueError(f"names must be identifiers other than 'head' and 'forest' (bad: {bad})")
        return {k: c for k, c in v.items() if c is not None}

    def run_name(self) -> str:
        """The run folder name: ``name`` if set, else e.g. ``vgg16_f30_s0``."""
        if self.name:
            return self.name
        f = self.model.freeze
        tag = f"f{round(f * 100)}" if isinstance(f, float) else f"to-{f}"
        return f"{self.model.backbone}_{tag}_s{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        """Plain dict in schema order, as written to the run folder's config.yaml."""
        return self.model_dump(mode="json")
