"""The run record: what one run found, as one typed, versioned object. No TensorFlow.

``metrics.json`` in a run folder is a :class:`RunRecord`, and this module is the only
code that knows its JSON layout: a run writes it with :meth:`RunRecord.save`, and every
reader (sweeps, reports, MLflow tracking, benchmarks, tests) loads it with
:func:`load_record` and reads attributes. A file written by the first tlexp (no
``version`` field, the forest's scores at the top level, the head's and the other
classifiers' nested) is migrated on reading; a file of an unknown version is refused
with a message, never guessed at.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from tlexp.errors import UserError
from tlexp.files import write_json
from tlexp.runfolder import METRICS_FILE

VERSION = 2  # bump when the layout changes, and teach _migrate the old one


class _Part(BaseModel):
    # extra="forbid": a field this version does not know means the file is not what it claims.
    model_config = ConfigDict(extra="forbid")


class Scores(_Part):
    """Classification metrics of one classifier on one split (:func:`tlexp.results._metrics.classification_metrics`)."""

    n: int  # images scored
    accuracy: float  # share of them classified right
    log_loss: float | None  # the head's from its logits (exact); None where a class is missing
    precision: float | None  # None where undefined: the class (or every class) was never predicted
    recall: float | None  # None where undefined: the class never occurs
    f1: float | None  # of the positive class (two classes), else the macro average
    average: Literal["binary", "macro"]  # how precision, recall and F1 average over the classes
    positive_class: str | None  # two classes: the second in sorted order; else None
    roc_auc: float | None  # None where a class is missing from the split
    confusion: list[list[int]]  # rows: true class, columns: predicted, in class_names order
    class_names: list[str]


class ClassifierResult(_Part):
    """One classifier of a run: the dense head, the forest, or another scikit-learn one.

    Attributes:
        kind: ``head`` (the fine-tuned Keras model), ``forest`` (the Random Forest of
            the study) or ``sklearn`` (a classifier from the config's ``classifiers``).
        estimator: what it is, e.g. ``RandomForestClassifier`` or
            ``StandardScaler + LogisticRegression``.
        n_features: width of the penultimate activations it was fitted on (None for the head).
    """

    kind: Literal["head", "forest", "sklearn"]
    estimator: str
    n_features: int | None = None
    train: Scores  # scored on the training images by the finished model
    val: Scores
    test: Scores

    def split(self, name: str) -> Scores:
        return getattr(self, name)


class RunInfo(_Part):
    name: str  # the run folder's name
    dir: str  # the run folder, as the run saw it
    started: str  # ISO 8601, UTC
    finished: str  # ISO 8601, UTC, when metrics.json was written


class CheckInfo(_Part):
    """What the data check found (the run folder's rejected.csv and duplicates.csv list the files)."""

    variant: str  # the dataset recognised: kaggle-dogs-vs-cats-train, microsoft-petimages or custom
    files: int  # image files found
    usable: int  # files the run may use
    converted: int  # usable after conversion (CMYK, palette, 16-bit: decoded to RGB)
    rejected: int  # files left out, each with its reason in rejected.csv
    rejected_by_reason: dict[str, int]
    duplicate_groups: int  # groups of byte-identical usable files (each kept in one split)
    duplicate_groups_across_splits: int  # 0: a group is always kept in one split
    duplicate_groups_with_different_labels: int  # identical files under different labels
    duplicate_files_excluded: int = 0  # files of groups with different labels: left out of the run
    near_duplicate_groups: int = 0  # groups of near-identical images (near_duplicates.csv)
    near_duplicate_files: int = 0  # files in those groups
    near_duplicate_groups_across_splits: int = 0  # 0 unless data.group_near_duplicates is false
    near_duplicate_groups_with_different_labels: int = 0  # near-identical images under different labels
    near_duplicate_max_distance: int = 0  # perceptual-hash bits (of 64) within which images are compared
    # The largest pixel difference to a group's representative (tlexp.data._neardup); None: a record
    # made before groups were confirmed by pixels (they were then everything linked by hashes alone).
    near_duplicate_threshold: float | None = None
    seconds: float  # time of the check (cached verdicts are reused)


class DataInfo(_Part):
    root: str  # data.root, absolute
    layout: str  # folders or flat, as found
    class_names: list[str]  # sorted; the label index is the position here
    counts: dict[str, dict[str, int]]  # split -> class -> images assigned
    used: dict[str, int]  # split -> images actually decoded and scored
    skipped: int  # images that failed to decode during the run (skipped.csv)
    check: CheckInfo  # what the data check found
    decoded_cache: str | None  # folder of the decoded-image cache, None when decoding on the fly


class FreezeInfo(_Part):
    """The freeze plan (:class:`tlexp.model._freeze.FreezePlan`)."""

    requested: float | str  # model.freeze: a share, or the name of the last layer to freeze
    layers_frozen: int  # the frozen prefix, in layers of backbone.layers (the input layer counts)
    layers_total: int
    last_frozen_layer: str | None  # the prefix's last layer; None when nothing is frozen
    frozen_params: int  # backbone parameters that do not train (the prefix, and all model.train leaves out)
    total_params: int  # backbone parameters
    frozen_share: float  # frozen_params / total_params: what "freeze 30 %" achieved
    batchnorm: str  # model.batchnorm
    backbone_trainable: int  # backbone variables' scalars the optimizer trains
    backbone_non_trainable: int  # the others, BatchNorm's moving statistics included
    # What trains above the frozen prefix (model.train); records before it trained all of it.
    train: str = "all"
    scope_start: int | None = None  # the trained layers: backbone.layers[scope_start:scope_stop]
    scope_stop: int | None = None
    trains: str = ""  # what trains, in words, e.g. "block3 (block3_conv1 .. block3_pool)"


class ParamCounts(_Part):
    """Parameters of the whole model (backbone and head)."""

    trainable: int
    non_trainable: int
    total: int


class History(_Part):
    """Per-epoch values, one entry per epoch (Keras' running means over the epoch for the train ones)."""

    stage: list[str] = []  # the schedule's stage of each epoch (train.schedule)
    loss: list[float]  # training loss (the running mean over the epoch)
    accuracy: list[float]  # training accuracy (the running mean over the epoch)
    val_loss: list[float] = []  # after the epoch, on the validation split
    val_accuracy: list[float] = []
    seconds: list[float] = []  # wall time of each epoch, validation included

    @property
    def epochs(self) -> int:
        return len(self.loss)


class TrainingStage(_Part):
    """One stage of the schedule as it ran (:mod:`tlexp.experiment._schedule`)."""

    name: str  # fine-tune | probe | epoch 2 | epochs 3-5
    epochs: int  # epochs this stage ran
    first_epoch: int  # 1-based: this stage ran epochs first_epoch .. first_epoch + epochs - 1
    learning_rate: float  # the head's; the backbone's stages get less under layer_decay
    depth: int | None  # backbone stages trained, from the top of the trainable part; 0 = head only; None = all
    trains: str  # what it trained, in words
    trainable_params: int  # parameters it trained, head included
    layer_decay: float = 1.0  # train.layer_decay: each stage below the top trains at this times the one above


class TrainingInfo(_Part):
    """How the trainable part was trained (train.schedule) and the stages that ran."""

    schedule: str = "fine-tune"  # train.schedule
    stages: list[TrainingStage] = []  # in the order they ran


class PrefixCacheInfo(_Part):
    """Whether the frozen prefix was cached, and the entry used (or why not)."""

    used: bool  # whether training read cached activations of the frozen prefix
    reason: str | None = None  # why not, when not
    layer: str | None = None  # the last cached layer (the prefix's last)
    mb: float | None = None  # size of the cache entry
    dtype: str | None = None  # storage type of the cached activations
    tensors: list[list[int]] | None = None  # shape of each cached tensor per image (the frontier at the cut)
    source: str | None = None  # 'reused', 'images', or the shallower cached layer it was computed from
    seconds: float | None = None  # time to build the entry (0 when reused)
    folder: str | None = None  # the entry's folder in the cache
    decision: str | None = None  # the measured figures that decided (train.prefix_cache.enabled=auto)

    def describe(self) -> str:
        """The last cached layer, or why the prefix was not cached."""
        return str(self.layer) if self.used else f"no: {self.reason}"


class PrecisionDecisionInfo(_Part):
    """What ``train.precision: auto`` chose on a CPU, per part, and from what (:mod:`tlexp.model._precision`).

    Attributes:
        choice: part (``prefix``: the frozen layers; ``trained``: the layers above them and
            the head, training and forward passes) -> the Keras dtype policy it ran under.
        reason: why, per part, with the figures.
        source: ``measured`` (this run timed stages of its backbone), ``reused`` (figures
            earlier runs timed), ``cached`` (the cut's activations were cached in that
            precision: nothing to compute), or ``skipped`` (no fast bfloat16,
            train.deterministic, too little work to measure).
        margin: how much faster bfloat16 had to make the prefix to be chosen.
        seconds: what deciding cost this run (the timing, and building the backbone again
            where the decision differs from the policy it was built under).
        figures: ``prefix`` -> ms per image forward in each precision (the sum of its
            stage pieces'), the images the run sends through it, the seconds that makes each
            way, their ratio (``speedup``), the number of pieces, and the layer each
            precision computes from (``<policy>_from_layer``: 1 from the images, else the
            cut of its cached shallower entry).
    """

    choice: dict[str, str]
    reason: str
    source: Literal["measured", "reused", "cached", "skipped"]
    margin: float
    cpu: str
    seconds: float = 0.0
    figures: dict[str, dict[str, float | int]] = {}


class AcceleratorInfo(_Part):
    gpus: list[str]
    precision: str  # the policy the model was built under (the frozen prefix's where the parts differ)
    jit_compile: bool | str
    distribute: str
    deterministic: bool = False  # TensorFlow's op determinism (train.deterministic)
    replicas: int = 1  # devices each batch was split over (train.distribute: mirrored)
    # train.precision auto on a CPU; None on GPUs, for a precision asked, and in records made before it
    precision_decision: PrecisionDecisionInfo | None = None


class EnvironmentInfo(_Part):
    device: str  # the CPU, or the GPUs, the run used
    python: str  # its version
    # The Keras backend; records written before tlexp ran on JAX were all TensorFlow's.
    backend: str = "tensorflow"
    backend_version: str | None = None
    tensorflow: str | None = None  # its version when the backend is TensorFlow
    keras: str  # versions of the libraries that make the numbers
    scikit_learn: str
    numpy: str
    platform: str  # the operating system and machine


class RunRecord(_Part):
    """Everything one finished run found. ``metrics.json`` holds exactly this.

    Attributes:
        config: the resolved config the run used (as in its ``config.yaml``).
        classifiers: by name, in report order: ``head``, ``forest`` (if enabled), then
            the config's other classifiers; every one in the same shape.
        timings_s: seconds per phase (weights, data, build, decode, prefix, train,
            predict, fit_<classifier>, plots) and ``total``.
    """

    version: Literal[2] = VERSION
    run: RunInfo
    config: dict[str, Any]
    data: DataInfo
    freeze: FreezeInfo
    params: ParamCounts
    classifiers: dict[str, ClassifierResult]
    history: History
    # Records made before schedules trained one fine-tune stage; they have no stage list.
    training: TrainingInfo = TrainingInfo()
    prefix_cache: PrefixCacheInfo
    timings_s: dict[str, float]
    accelerator: AcceleratorInfo
    environment: EnvironmentInfo

    @property
    def head(self) -> ClassifierResult:
        return self.classifiers["head"]

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def save(self, run_dir: str | os.PathLike) -> Path:
        """Write ``metrics.json`` atomically; its presence marks the run as finished."""
        path = Path(run_dir) / METRICS_FILE
        write_json(path, self.to_dict())
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, config: dict[str, Any] | None = None, source: str = "") -> RunRecord:
        """Validate ``data`` (migrating an older layout first).

        Args:
            config: the run's ``config.yaml``, for files of the first layout, which did
                not hold the config.
            source: where ``data`` came from, for error messages.

        Raises:
            RecordError: an unknown version, or content that does not fit the layout.
        """
        where = f" {source}" if source else ""
        version = data.get("version", 1) if isinstance(data, dict) else None
        if version == 1:
            data = _migrate_v1(data, config)
        elif version != VERSION:
            raise RecordError(
                f"The run record{where} has version {version!r}; this tlexp reads versions 1 to "
                f"{VERSION}. Upgrade tlexp to read it (pip install -U tlexp)."
            )
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            first = e.errors()[0]
            at = ".".join(str(p) for p in first["loc"])
            raise RecordError(
                f"The run record{where} is not a valid tlexp version-{VERSION} record: {at}: "
                f"{first['msg']} ({e.error_count()} problem(s)). Was it edited by hand? Re-run the "
                "run to write it again."
            ) from None


class RecordError(UserError):
    """A ``metrics.json`` that tlexp cannot read as a run record."""


def load_record(run_dir: str | os.PathLike) -> RunRecord:
    """The record of a finished run folder.

    Raises:
        RecordError: no ``metrics.json`` (the run did not finish), or one tlexp cannot read.
    """
    run_dir = Path(run_dir)
    path = run_dir / METRICS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecordError(
            f"'{run_dir}' has no {METRICS_FILE}: the run did not finish (or this is not a run folder)."
        ) from None
    except (OSError, ValueError) as e:
        raise RecordError(f"Cannot read '{path}' as JSON: {e}.") from None
    config = None
    if isinstance(data, dict) and "version" not in data:  # the first layout kept the config beside it only
        import yaml

        from tlexp.runfolder import CONFIG_FILE

        config_file = run_dir / CONFIG_FILE
        config = yaml.safe_load(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    return RunRecord.from_dict(data, config=config, source=f"'{path}'")


def _migrate_v1(old: dict[str, Any], config: dict[str, Any] | None) -> dict[str, Any]:
    """The first layout (tlexp 0.1 before records) -> version 2.

    Version 1 had ``head`` and ``forest`` (with ``n_features``) at the top level and the
    other classifiers under ``classifiers``; no ``version`` and no ``config``.
    """
    new = {k: v for k, v in old.items() if k not in ("head", "forest", "classifiers")}
    new["version"] = VERSION
    new["config"] = config or {}
    classifiers: dict[str, Any] = {"head": {"kind": "head", "estimator": "dense head", **old["head"]}}
    if old.get("forest"):
        forest = dict(old["forest"])
        classifiers["forest"] = {
            "kind": "forest",
            "estimator": "RandomForestClassifier",
            "n_features": forest.pop("n_features", None),
            **forest,
        }
    for name, scores in (old.get("classifiers") or {}).items():
        estimator = ((new["config"].get("classifiers") or {}).get(name) or {}).get("estimator", name)
        classifiers[name] = {"kind": "sklearn", "estimator": str(estimator).rpartition(".")[2], **scores}
    new["classifiers"] = classifiers
    new.setdefault("prefix_cache", {"used": False, "reason": "not recorded (run made before the prefix cache)"})
    return new
