"""The config schema: its sections as pydantic models, every key with its type, default,
constraint and description, in one place.

``tlexp config`` prints this schema (:func:`tlexp.config._keys.describe` reads it); it is
never written twice. No TensorFlow: a config is validated before any deep-learning import.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator

from tlexp.catalog import BACKBONES
from tlexp.config._sections import (
    DataConfig,
    HeadConfig,
    Section,
    SyntheticConfig,
    int_is_float,
    true_false_auto,
)

__all__ = ["DataConfig", "HeadConfig", "SyntheticConfig"]


# Every keras.applications image classifier, from the generated catalog (no Keras import:
# a config is checked before TensorFlow starts). A plain str checked by a validator rather
# than a Literal of every name: the error then suggests the closest name, and 'tlexp config'
# does not print all of them as the type.
BACKBONE_NAMES: tuple[str, ...] = tuple(row[0] for row in BACKBONES)


class ModelConfig(Section):
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
    train: str = Field(
        "all",
        description="What trains of the backbone part above model.freeze: 'all'; 'biases' (bias vectors and "
        "normalisation offsets only: BitFit); 'norm' (normalisation layers' scale and offset only); or "
        "'block:<k>' (one stage of the backbone only, by number from 1 or by name, e.g. block:3, block:conv4: "
        "surgical fine-tuning; 'tlexp plan' lists a backbone's stages). The head always trains; set "
        "model.freeze: 0 for the whole backbone as the scope.",
    )
    head: HeadConfig = Field(default_factory=HeadConfig)

    @field_validator("train")
    @classmethod
    def _check_train(cls, v: str) -> str:
        kind, colon, block = v.partition(":")
        if v in ("all", "biases", "norm") or (kind == "block" and colon and re.fullmatch(r"[\w.-]+", block)):
            return v
        raise ValueError("must be 'all', 'biases', 'norm' or 'block:<number or name>' (e.g. block:3, block:conv4)")

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


class PrefixCacheConfig(Section):
    enabled: bool | Literal["auto"] = Field(
        "auto",
        description="Run the frozen part of the backbone once per image, keep its activations on disk "
        "(cache_dir/activations, shared by the cells of a sweep) and train only the rest on them, reading each "
        "batch from disk. auto = where that pays, decided per cut from measured figures (bytes per image and the "
        "disk's read rate against the prefix's compute time on this device) and logged with them; true = wherever "
        "it is correct and fits max_gb; false = always the ordinary path (whole model every epoch). The run record "
        "says which path was taken, and why.",
    )

    _enabled_is_switch = field_validator("enabled", mode="before")(true_false_auto)

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


class TrainConfig(Section):
    epochs: int = Field(2, ge=1, description="Fine-tuning epochs (the study used 2).")
    batch_size: int = Field(32, ge=1, description="Images per training step.")
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = Field("adam", description="Keras optimizer.")
    learning_rate: float = Field(1e-4, gt=0.0, description="Learning rate of the optimizer.")
    precision: Literal["auto", "float32", "mixed_float16", "mixed_bfloat16"] = Field(
        "auto",
        description="Compute dtype; the output layer and loss stay float32. auto = mixed_bfloat16 on GPUs "
        "of compute capability >= 8.0, mixed_float16 on 7.x; on a CPU with avx512_bf16 or amx_bf16, measured: "
        "the frozen prefix runs in mixed_bfloat16 where its backbone's stages, timed both ways, make it at least "
        "1.2x faster, and the trained part trains in float32 (bfloat16 training moved the demo's accuracy outside "
        "float32's interval; mixed_bfloat16 asks for it); the stages' figures are kept under data.cache_dir per "
        "backbone, image size and batch size (a sweep's freeze shares time each stage once), logged and recorded "
        "as accelerator.precision_decision; float32 on other CPUs and with train.deterministic.",
    )
    jit_compile: bool | Literal["auto"] = Field(
        "auto", description="XLA compilation of the train step; auto = Keras' choice (on for GPUs, off on CPU)."
    )

    _jit_is_switch = field_validator("jit_compile", mode="before")(true_false_auto)

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
        "(deterministic kernels only; an op without one is an error). Slower; docs/benchmarks.md gives the measured "
        "cost. "
        "On JAX: XLA is deterministic on a CPU; on a GPU set XLA_FLAGS=--xla_gpu_deterministic_ops=true.",
    )
    schedule: Literal["fine-tune", "lp-ft", "gradual"] = Field(
        "fine-tune",
        description="How the trainable part trains: 'fine-tune' (all of it, train.epochs epochs); 'lp-ft' (a "
        "linear-probe stage first: the head alone on the frozen backbone for train.probe_epochs, then all of it "
        "for train.epochs at learning_rate x train.finetune_lr_factor; Kumar et al. 2022); 'gradual' (the head "
        "alone in epoch 1, then one more backbone stage per epoch from the top; ULMFiT). The run record lists "
        "the stages run.",
    )
    probe_epochs: int = Field(2, ge=1, description="train.schedule lp-ft: epochs of its head-only first stage.")
    finetune_lr_factor: float = Field(
        0.1,
        gt=0.0,
        le=1.0,
        description="train.schedule lp-ft: its fine-tuning stage trains at learning_rate times this.",
    )
    layer_decay: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="Layer-wise learning-rate decay: the head trains at the learning rate, the backbone's top "
        "stage at rate x layer_decay, the next at x layer_decay^2, ... (BEiT; timm --layer-decay); 1 = one "
        "rate for all.",
    )
    prefix_cache: PrefixCacheConfig = Field(default_factory=PrefixCacheConfig)

    _factors_are_floats = field_validator("finetune_lr_factor", "layer_decay", mode="before")(int_is_float)


class ForestConfig(Section):
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


class ClassifierConfig(Section):
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


class ResourcesConfig(Section):
    cpus: float = Field(1.0, gt=0.0, description="CPUs one sweep cell asks of Ray ('tlexp sweep --executor ray').")
    gpus: float = Field(0.0, ge=0.0, description="GPUs one sweep cell asks of Ray; 1 = one cell per GPU.")


class OutputConfig(Section):
    dir: str = Field("results", description="Parent folder of run folders.")
    save_model: bool = Field(
        True,
        description="Save the fine-tuned model (model.keras) and every fitted classifier (<name>.joblib) in the "
        "run folder, for 'tlexp predict'.",
    )


class MlflowConfig(Section):
    uri: str | None = Field(
        None,
        description="MLflow tracking URI (file:./mlruns, http://host:5000, ...); null = no MLflow. "
        "Needs pip install 'tlexp[mlflow]'.",
    )
    experiment: str = Field("tlexp", description="MLflow experiment the runs are logged to.")


class TrackingConfig(Section):
    tensorboard: bool = Field(
        False,
        description="Write TensorBoard logs into the run folder (tensorboard/); view with "
        "'tensorboard --logdir results/'.",
    )
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)


class ProbeConfig(Section):
    enabled: bool = Field(
        False,
        description="'tlexp sweep' also runs the depth probe ('tlexp probe') once per backbone of its grid: the "
        "forest and the classifiers section fitted on the pooled activations at every stage boundary of the "
        "frozen backbone, 'how good are the features at depth d'; the report draws the curve.",
    )


class Config(Section):
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
    probe: ProbeConfig = Field(default_factory=ProbeConfig)
    sweep: dict[str, list[Any]] | list[dict[str, list[Any]]] = Field(
        default_factory=dict,
        description="Grid for 'tlexp sweep': config key -> list of values, e.g. {model.freeze: [0.1, 0.3]}. "
        "Every combination is one cell (an ordinary run). A list of such grids runs the cells of each (as "
        "scikit-learn's param_grid), e.g. freeze shares in one and single blocks at model.freeze 0 in another. "
        "Empty for a single run.",
    )

    @field_validator("sweep", mode="before")
    @classmethod
    def _scalars_are_lists(cls, v: Any) -> Any:
        # `sweep.seed=0` on the command line narrows a grid to one value.
        def lists(grid: Any) -> Any:
            return {k: x if isinstance(x, list) else [x] for k, x in grid.items()} if isinstance(grid, dict) else grid

        return [lists(g) for g in v] if isinstance(v, list) else lists(v)

    def grids(self) -> list[dict[str, list[Any]]]:
        """The sweep as a list of grids (one for the mapping form); [] for a single run."""
        if isinstance(self.sweep, dict):
            return [self.sweep] if self.sweep else []
        return [g for g in self.sweep if g]

    def swept_keys(self) -> list[str]:
        """Every key some grid of the sweep varies, in order of first appearance."""
        return list(dict.fromkeys(k for g in self.grids() for k in g))

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
        tags = [self.model.backbone, f"f{round(f * 100)}" if isinstance(f, float) else f"to-{f}"]
        if self.model.train != "all":
            tags.append(self.model.train.replace(":", ""))
        if self.train.schedule != "fine-tune":
            tags.append(self.train.schedule)
        return "_".join([*tags, f"s{self.seed}"])

    def to_dict(self) -> dict[str, Any]:
        """Plain dict in schema order, as written to the run folder's config.yaml."""
        return self.model_dump(mode="json")
