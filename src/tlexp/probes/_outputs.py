"""The files of a probe folder: ``probe.json`` (the record, written last), ``probe.csv`` (one
row per depth and classifier), ``probe.png`` (test accuracy against depth) and ``probe.log``.

``probe.json``::

    {"version": 1, "backbone": "densenet121", "weights": "imagenet", "image_size": 32, "seed": 0,
     "n": {"train": 240, "val": 120, "test": 840}, "skipped": 0, "classes": ["Shirt", "T-shirt_top"],
     "source": "images", "seconds": {"features": 12.3, "fit": 4.5, "total": 17.0},
     "depths": [{"stage": 1, "label": "conv1", "cut": 7, "last_layer": "pool1",
                 "params_below": 9664, "share_below": 0.0014, "features": 64,
                 "classifiers": {"logreg": {"val_accuracy": ..., "test_accuracy": ..., "test_correct": ...,
                                            "test_n": ..., "test_low": ..., "test_high": ...}}}]}

``cut``: the depth is the output of ``backbone.layers[:cut]``; ``params_below``: the
parameters of those layers, ``share_below`` their share of the backbone's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tlexp import files

VERSION = 1

_DEPTH_COLUMNS = ["stage", "label", "cut", "last_layer", "params_below", "share_below", "features"]
_SCORE_COLUMNS = ["val_accuracy", "test_accuracy", "test_correct", "test_n", "test_low", "test_high"]


def depth_entry(stage, params_below: int, total: int, n_features: int, scores: dict[str, Any]) -> dict[str, Any]:
    """One element of ``depths``: a :class:`tlexp.model.Stage`'s boundary and each classifier's
    :class:`tlexp.probes._fit.Score` there."""
    return {
        "stage": stage.index,
        "label": stage.label,
        "cut": stage.stop,
        "last_layer": stage.last_layer,
        "params_below": int(params_below),
        "share_below": params_below / total if total else 0.0,
        "features": int(n_features),
        "classifiers": {name: s.to_dict() for name, s in scores.items()},
    }


def write_csv(path: Path, depths: list[dict[str, Any]]) -> None:
    rows = [
        [d[c] for c in _DEPTH_COLUMNS] + [name] + [s[c] for c in _SCORE_COLUMNS]
        for d in depths
        for name, s in d["classifiers"].items()
    ]
    files.write_csv(path, [*_DEPTH_COLUMNS, "classifier", *_SCORE_COLUMNS], rows)


def plot(path: Path, record: dict[str, Any]) -> None:
    """Test accuracy at each depth with its 95 % interval, one line per classifier."""
    from matplotlib.figure import Figure

    depths = record["depths"]
    x = list(range(len(depths)))
    fig = Figure(figsize=(max(6.0, 0.9 * len(depths) + 2), 4.2), layout="constrained")
    ax = fig.subplots()
    names = list(depths[0]["classifiers"]) if depths else []
    for k, name in enumerate(names):
        acc = [d["classifiers"][name]["test_accuracy"] for d in depths]
        low = [a - d["classifiers"][name]["test_low"] for a, d in zip(acc, depths, strict=True)]
        high = [d["classifiers"][name]["test_high"] - a for a, d in zip(acc, depths, strict=True)]
        shift = (k - (len(names) - 1) / 2) * 0.06  # side by side, so the intervals do not hide each other
        ax.errorbar([i + shift for i in x], acc, yerr=[low, high], fmt="-o", capsize=3, markersize=5, label=name)
    ax.set_xticks(x, [f"{d['label']}\n{_percent(d['share_below'])}" for d in depths])
    ax.set_xlabel("stage (its end), and the share of the backbone's parameters below it")
    ax.set_ylabel(f"test accuracy (n={depths[0]['classifiers'][names[0]]['test_n']})" if names else "test accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    weights = "random weights" if record["weights"] == "none" else f"{record['weights']} weights"
    ax.set_title(f"{record['backbone']} ({weights}, {record['image_size']} px): features at each depth, 95 % CI")
    ax.legend(loc="lower right")
    with files.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight", facecolor="white")


def _percent(share: float) -> str:
    p = 100 * share
    return "<0.1 %" if p < 0.1 else f"{p:.1f} %" if p < 10 else f"{p:.0f} %"
