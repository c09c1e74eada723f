"""A run's charts: training curves, confusion matrices, ROC curves; and how every chart is saved. No TensorFlow.

Figures are built on ``matplotlib.figure.Figure`` directly rather than through pyplot:
pyplot keeps global state (open figures, the backend), and switching a notebook's
backend to Agg from inside a library call would break its inline plots. A bare Figure
renders PNGs with Agg whatever backend the caller has chosen. Every PNG is written
atomically through :func:`tlexp.files.atomic_path`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tlexp.files import atomic_path

if TYPE_CHECKING:  # matplotlib stays a lazy import at run time
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 120
# (history key, legend label, line style) per panel; train solid, val dashed so the
# two stay distinguishable in a greyscale printout too.
_HISTORY_PANELS = {
    "Loss": [("loss", "train", "-o"), ("val_loss", "val", "--s")],
    "Accuracy": [("accuracy", "train", "-o"), ("val_accuracy", "val", "--s")],
}
# Above these class counts, cell annotations would overlap: show counts only, then none.
_MAX_K_PERCENT = 20
_MAX_K_COUNTS = 40


def plot_history(history: dict[str, Sequence[float]], path: str | os.PathLike) -> Path:
    """Plot loss and accuracy per epoch, train and val, as two side-by-side panels.

    Args:
        history: Keras-style history, each value a list of per-epoch values (length
            n_epochs). Uses ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``;
            missing keys are skipped, other keys ignored.
        path: Where to write the PNG.

    Returns:
        ``path`` as a Path.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(10, 4), layout="constrained")
    for ax, (title, series) in zip(fig.subplots(1, 2), _HISTORY_PANELS.items(), strict=True):
        drawn = False
        for key, label, style in series:
            values = np.asarray(history.get(key, []), dtype=float)
            if values.size:
                epochs = np.arange(1, values.size + 1)
                ax.plot(epochs, values, style, label=label, markersize=6)
                drawn = True
        ax.set_title(title)
        ax.set_xlabel("Epoch")
        ax.set_ylabel(title.lower())
        ax.grid(True, alpha=0.3)
        # Epochs are whole numbers; with 2 epochs the default locator would show 1.25 etc.
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if drawn:
            ax.legend()
        else:
            _no_data(ax, f"no {title.lower()} recorded")
    return save_figure(fig, path)


def plot_confusions(
    matrices: dict[str, Sequence[Sequence[int]]],
    class_names: Sequence[str],
    path: str | os.PathLike,
    title: str | None = None,
) -> Path:
    """Plot one confusion matrix per classifier, side by side (stacked for many classes).

    Each cell shows the count and the row-normalised percentage (share of that true
    class); cell colour is that percentage, so imbalanced classes stay comparable.

    Args:
        matrices: Classifier name -> confusion matrix, shape (k, k), rows = true
            class, columns = predicted class, e.g. ``{"head": cm1, "forest": cm2}``.
        class_names: The k class names, in matrix order.
        path: Where to write the PNG.
        title: Optional figure title above all panels.

    Returns:
        ``path`` as a Path.

    Raises:
        ValueError: If ``matrices`` is empty or a matrix is not k x k non-negative.
    """
    from matplotlib.figure import Figure

    names = list(class_names)
    k = len(names)
    cms = {name: _check_confusion(name, cm, k) for name, cm in matrices.items()}
    if not cms:
        raise ValueError("matrices must hold at least one confusion matrix. Got {} instead.")

    # Cells keep a fixed size in inches, so the figure grows with k and text stays
    # legible; for many classes panels are stacked to keep the width bounded.
    side = max(4.5, 0.55 * k + 2.0)
    ncols = min(len(cms), 3) if k <= 15 else 1
    nrows = -(-len(cms) // ncols)
    fig = Figure(figsize=(side * ncols + 1.0, side * nrows), layout="constrained")
    grid = fig.subplots(nrows, ncols, squeeze=False)
    items = iter(cms.items())
    for row in grid:
        used = []
        for ax in row:
            item = next(items, None)
            if item is None:
                ax.set_visible(False)
                continue
            image = _draw_confusion(ax, item[0], item[1], names)
            used.append(ax)
        # One colour bar per row: a single bar spanning stacked panels gets absurdly tall.
        fig.colorbar(image, ax=used, label="share of true class (%)", shrink=0.8, aspect=30)
    if title:
        fig.suptitle(title, fontsize=13)
    return save_figure(fig, path)


def plot_roc(curves: dict[str, tuple[Any, Any]], path: str | os.PathLike) -> Path:
    """Plot ROC curves of a two-class task, one per classifier, on the same axes.

    A classifier whose labels hold only one class has no ROC curve; it is listed in
    the legend as undefined rather than failing the whole figure.

    Args:
        curves: Classifier name -> ``(y_true, score)``, y_true 0/1 labels shape (n,),
            score the probability of class 1 shape (n,).
        path: Where to write the PNG.

    Returns:
        ``path`` as a Path.

    Raises:
        ValueError: If ``curves`` is empty, or a pair has mismatched shapes or labels
            other than 0/1.
    """
    from matplotlib.figure import Figure

    if not curves:
        raise ValueError("curves must hold at least one (y_true, score) pair. Got {} instead.")
    fig = Figure(figsize=(5.5, 5.5), layout="constrained")
    ax = fig.subplots()
    for name, (y_true, score) in curves.items():
        points = _roc_or_none(name, y_true, score)
        if points is None:
            ax.plot([], [], " ", label=f"{name} (AUC undefined: one class)")
            continue
        fpr, tpr, auc = points
        ax.plot(fpr, tpr, linewidth=2, label=f"{name} (AUC = {auc:.3f})")
    # Drawn last so it sits last in the legend, but below the curves.
    ax.plot([0, 1], [0, 1], ":", color="grey", label="chance (AUC = 0.500)", zorder=1)
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("False positive rate")
    ax.set_ylabel("True positive rate")
    ax.set_title("ROC curve")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    return save_figure(fig, path)


def _draw_confusion(ax: Axes, name: str, cm: np.ndarray, names: list[str]) -> Any:
    """Draw one (k, k) count matrix on ``ax``; return the image for the colorbar."""
    k = len(names)
    totals = cm.sum(axis=1, keepdims=True)
    # A class absent from the split has an all-zero row: show 0 %, not a 0/0 NaN.
    share = np.divide(cm, totals, out=np.zeros(cm.shape), where=totals > 0) * 100
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=100)

    if k <= _MAX_K_COUNTS:
        fontsize = 10 if k <= 6 else 8
        for i in range(k):
            for j in range(k):
                text = f"{cm[i, j]}"
                if k <= _MAX_K_PERCENT:
                    text += f"\n{share[i, j]:.0f}%" if totals[i, 0] else "\n-"
                # White text on dark cells, black on light ones.
                color = "white" if share[i, j] > 55 else "black"
                ax.text(j, i, text, ha="center", va="center", color=color, fontsize=fontsize)

    total = int(cm.sum())
    accuracy = f"{np.trace(cm) / total:.3f}" if total else "n/a"
    ax.set_title(f"{name}: accuracy {accuracy} (n={total})")
    ax.set_xticks(range(k), names, rotation=45 if k > 3 else 0, ha="right" if k > 3 else "center")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    return image


def _check_confusion(name: str, cm: Any, k: int) -> np.ndarray:
    a = np.asarray(cm)
    if a.shape != (k, k):
        raise ValueError(
            f"Confusion matrix {name!r} must have shape (k, k) with k == len(class_names) == {k}. "
            f"Got {a.shape} instead."
        )
    if a.size and (not np.all(np.isfinite(a)) or (a < 0).any() or np.any(a != np.round(a))):
        raise ValueError(
            f"Confusion matrix {name!r} must hold non-negative integer counts. "
            f"Got values in [{a.min()}, {a.max()}] instead."
        )
    return a.astype(np.int64)


def _roc_or_none(name: str, y_true: Any, score: Any) -> tuple[np.ndarray, np.ndarray, float] | None:
    """ROC points of one classifier, or None when y_true holds a single class (0/0 rates)."""
    from tlexp.results._metrics import roc_points

    if np.unique(np.asarray(y_true)).size < 2:
        return None
    try:
        return roc_points(y_true, score)
    except ValueError as e:
        raise ValueError(f"ROC input {name!r}: {e}") from None


def _no_data(ax: Axes, message: str) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="grey")


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` as a PNG to ``path`` atomically and return ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        # The temp file ends in .tmp, so the format must be named explicitly.
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    return path
