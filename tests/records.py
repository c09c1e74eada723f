"""Run records with known numbers for tests, built through the record type (never by hand)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tlexp.results import RunRecord

SPLITS = ("train", "val", "test")


def scores(
    acc: float,
    loss: float | None = 0.1,
    *,
    f1: float | None = None,
    auc: float | None = 0.99,
    classes: Sequence[str] = ("cat", "dog"),
    n: int = 20,
) -> dict[str, Any]:
    """One split's metrics, in the shape tlexp.results._metrics.classification_metrics returns.

    The confusion matrix holds ``n`` images, split as evenly as the classes allow (the
    first classes get the remainder), each class right on about ``acc`` of its images.
    """
    k = len(classes)
    per_class = [n // k + (i < n % k) for i in range(k)]
    confusion = [[0] * k for _ in classes]
    for i, m in enumerate(per_class):
        right = round(acc * m)
        confusion[i][i] += right
        confusion[i][(i + 1) % k] += m - right
    return {
        "n": n,
        "accuracy": acc,
        "log_loss": loss,
        "precision": acc,
        "recall": acc,
        "f1": acc if f1 is None else f1,
        "average": "binary" if len(classes) == 2 else "macro",
        "positive_class": classes[1] if len(classes) == 2 else None,
        "roc_auc": auc,
        "confusion": confusion,
        "class_names": list(classes),
    }


def make_record(
    name: str,
    run_dir: str,
    config: dict[str, Any],
    classifiers: dict[str, dict[str, dict[str, Any]]],  # name -> split -> scores()
    *,
    share: float = 0.36,
    freeze: float | str = 0.3,
    epochs: int = 2,
    wall: float = 10.0,
    trainable: int = 1000,
    prefix_cache: dict[str, Any] | None = None,
    classes: Sequence[str] = ("cat", "dog"),
    last_epoch: float = 0.8,
    train_s: float | None = None,
    timings: dict[str, float] | None = None,
) -> RunRecord:
    """A valid record: ``classifiers`` in order (head first), everything else plausible.

    ``last_epoch`` is Keras' running train accuracy of the last epoch (``history.accuracy[-1]``);
    ``train_s`` the train phase's seconds (default: half of ``wall``); ``timings`` more phases
    (e.g. ``prefix``, ``predict``), or other values for these.
    """
    kinds = {"head": ("head", "dense head"), "forest": ("forest", "RandomForestClassifier")}
    return RunRecord(
        run={
            "name": name,
            "dir": run_dir,
            "started": "2026-01-02T03:04:05+00:00",
            "finished": "2026-01-02T03:05:05+00:00",
        },
        config=config,
        data={
            "root": "/data",
            "layout": "flat",
            "class_names": list(classes),
            "counts": {s: {c: 10 for c in classes} for s in SPLITS},
            "used": {s: 10 * len(classes) for s in SPLITS},
            "skipped": 0,
            "decoded_cache": None,
            "check": {
                "variant": "custom",
                "files": 60,
                "usable": 60,
                "converted": 0,
                "rejected": 0,
                "rejected_by_reason": {},
                "duplicate_groups": 0,
                "duplicate_groups_across_splits": 0,
                "duplicate_groups_with_different_labels": 0,
                "seconds": 0.1,
            },
        },
        freeze={
            "requested": freeze,
            "layers_frozen": 13,
            "layers_total": 19,
            "last_frozen_layer": "block4_conv2",
            "frozen_params": int(share * 1000),
            "total_params": 1000,
            "frozen_share": share,
            "batchnorm": "inference",
            "backbone_trainable": 640,
            "backbone_non_trainable": 360,
        },
        params={"trainable": trainable, "non_trainable": 500, "total": trainable + 500},
        classifiers={
            n: {
                "kind": kinds.get(n, ("sklearn",))[0],
                "estimator": kinds.get(n, (None, n))[1],
                "n_features": None if n == "head" else 64,
                **splits,
            }
            for n, splits in classifiers.items()
        },
        history={
            "loss": [0.5] * epochs,
            "accuracy": ([0.8] * (epochs - 1) + [last_epoch]) if epochs else [],
            "val_loss": [0.4] * epochs,
            "val_accuracy": [0.85] * epochs,
            "seconds": [1.0] * epochs,
        },
        prefix_cache=prefix_cache or {"used": False, "reason": "train.prefix_cache.enabled is false"},
        timings_s={"train": wall / 2 if train_s is None else train_s, "total": wall, **(timings or {})},
        accelerator={"gpus": [], "precision": "float32", "jit_compile": False, "distribute": "none"},
        environment={
            "device": "CPU (test)",
            "python": "3.11",
            "tensorflow": "2.x",
            "keras": "3.x",
            "scikit_learn": "1.x",
            "numpy": "2.x",
            "platform": "test",
        },
    )


def first_layout(new: dict[str, Any]) -> dict[str, Any]:
    """A version-2 record as the first tlexp wrote it: no version, no config, the head's
    and the forest's scores at the top level (the forest with its ``n_features``), the
    other classifiers' under ``classifiers``."""
    old = {k: v for k, v in new.items() if k not in ("version", "config", "classifiers")}
    clfs = new["classifiers"]
    old["head"] = {s: clfs["head"][s] for s in SPLITS}
    old["forest"] = (
        {"n_features": clfs["forest"]["n_features"], **{s: clfs["forest"][s] for s in SPLITS}}
        if "forest" in clfs
        else None
    )
    old["classifiers"] = {n: {s: c[s] for s in SPLITS} for n, c in clfs.items() if n not in ("head", "forest")}
    return old
