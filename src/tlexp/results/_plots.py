"""Report-ready PNG figures: training curves, confusion matrices, ROC curves. No TensorFlow.

Figures are built on ``matplotlib.figure.Figure`` directly rather than through pyplot:
pyplot keeps global state (open figures, the backend), and switching a notebook's
backend to Agg from inside a library call would break its inline plots. A bare Figure
renders PNGs with Agg whatever backend the caller has chosen. Every PNG is written
atomically through :func:`tlexp.files.atomic_path`.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
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


# --------------------------------------------------------------------------- sweep charts

_MIN_ACCURACY_SPAN = 0.02  # smallest y range of accuracy charts: 2 percentage points
# Line styles per classifier, in order (head first): marker and dash differ as well as
# colour, so lines stay apart in greyscale and where they overlap.
_CLASSIFIER_STYLES = [("o", "-"), ("s", "--"), ("^", "-."), ("D", ":"), ("v", "-"), ("P", "--")]
# Settings that differ in more than backbone and freeze (another learning rate, image
# size, ...) keep their classifier's colour and marker and get a dash of their own.
_VARIANT_DASHES = ["-", "--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 3))]


@dataclass(frozen=True)
class Curve:
    """One line of a sweep chart: a classifier (or backbone) in one setting, over frozen shares.

    Attributes:
        panel: The panel it is drawn in (the backbone of the accuracy chart; ignored by
            the time chart, which has one).
        label: Its legend entry, saying what tells it from the other lines, e.g.
            ``"head, train.learning_rate=0.1"``.
        points: ``(frozen_share, value, low, high)`` per frozen share, share in [0, 1];
            ``low``/``high`` the interval drawn as an error bar, or None for none.
        colour: Index of its colour, marker and dash (the classifier's, or the backbone's).
        variant: Index of its setting variant when settings differ in more than backbone
            and freeze: its dash pattern then (0 = solid) replaces the colour's dash.
    """

    panel: str
    label: str
    points: Sequence[tuple[float, float, float | None, float | None]]
    colour: int = 0
    variant: int | None = None


def plot_accuracy_vs_frozen(
    curves: Sequence[Curve],
    path: str | os.PathLike,
    *,
    title: str = "Test accuracy vs frozen share",
    note: str = "",
) -> Path:
    """Plot test accuracy against the achieved frozen share, one panel per backbone.

    Each curve is one setting's classifier; the caller has already aggregated over
    seeds (never over settings) and chosen each point's interval, which is drawn as an
    error bar. Within a panel, curves at the same share are offset sideways by a hair
    so that their error bars do not hide each other.

    Args:
        curves: The lines, e.g. ``Curve("vgg16", "head", [(0.36, 0.97, 0.95, 0.98)])``.
            Panels follow the order in which curves name them.
        path: Where to write the PNG.
        title: First line of the figure title.
        note: Second line of the title: what the points and bars are (and over how
            many seeds), e.g. ``"one seed per point; bars: 95 % Wilson interval"``.

    Returns:
        ``path`` as a Path.

    Raises:
        ValueError: If no curve holds a point.
    """
    from matplotlib.figure import Figure

    curves = [c for c in curves if c.points]
    if not curves:
        raise ValueError("curves must hold at least one (frozen_share, accuracy) point. Got none instead.")
    panels = list(dict.fromkeys(c.panel for c in curves))
    n = len(panels)
    ncols = 2 if n == 4 else min(n, 3)
    nrows = -(-n // ncols)
    fig = Figure(figsize=(4.6 * ncols + 0.6, 3.9 * nrows + 1.0), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True).ravel()
    low, high, span = _x_limits([p[0] for c in curves for p in c.points])
    for ax, panel in zip(axes, panels, strict=False):
        here = [c for c in curves if c.panel == panel]
        for i, curve in enumerate(here):
            offset = (i - (len(here) - 1) / 2) * 0.012 * span
            _draw(ax, curve, offset)
        ax.set_title(panel)
        ax.set_xlim(low, high)  # one range for all panels, so shares line up across backbones
        ax.set_xlabel("frozen share of backbone parameters (%)")
        ax.grid(True, alpha=0.3)
    for ax in axes[n:]:
        ax.set_visible(False)
    # Panels share y. Accuracies a few tenths of a point apart would fill the whole axis
    # and look like big differences: show at least _MIN_ACCURACY_SPAN.
    low, high = axes[0].get_ylim()
    if high - low < _MIN_ACCURACY_SPAN:
        centre = (low + high) / 2
        axes[0].set_ylim(centre - _MIN_ACCURACY_SPAN / 2, centre + _MIN_ACCURACY_SPAN / 2)
    for row in range(nrows):
        axes[row * ncols].set_ylabel("test accuracy")
        axes[row * ncols].yaxis.set_tick_params(labelleft=True)
    handles, labels = [], []
    for ax in axes[:n]:  # a curve missing from the first panel still gets a legend entry
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4), frameon=False)
    fig.suptitle(title + (f"\n{textwrap.fill(note, 100)}" if note else ""), fontsize=12)
    return save_figure(fig, path)


def plot_time_vs_frozen(
    curves: Sequence[Curve],
    path: str | os.PathLike,
    *,
    title: str = "Wall time per run vs frozen share",
    note: str = "",
) -> Path:
    """Plot wall time per run against the achieved frozen share, one line per backbone and setting.

    Args:
        curves: One per backbone (and setting variant); ``points`` hold seconds, with
            the caller's interval (e.g. lowest to highest seed) or None.
        path: Where to write the PNG.
        title: First line of the title.
        note: Second line of the title: what the points and bars are.

    Returns:
        ``path`` as a Path.

    Raises:
        ValueError: If no curve holds a point.
    """
    from matplotlib.figure import Figure

    curves = [c for c in curves if c.points]
    if not curves:
        raise ValueError("curves must hold at least one (frozen_share, seconds) point. Got none instead.")
    fig = Figure(figsize=(6.5, 4.6), layout="constrained")
    ax = fig.subplots()
    for curve in curves:
        _draw(ax, curve, 0.0)
    # From zero, so the heights compare as ratios (a run twice as long looks twice as high).
    ax.set_ylim(bottom=0, top=ax.get_ylim()[1] * 1.05)
    low, high, _ = _x_limits([p[0] for c in curves for p in c.points])
    ax.set_xlim(low, high)
    ax.set_xlabel("frozen share of backbone parameters (%)")
    ax.set_ylabel("wall time per run (s)")
    ax.set_title(title + (f"\n{textwrap.fill(note, 60)}" if note else ""), fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def _draw(ax: Axes, curve: Curve, offset: float) -> None:
    """One curve as a line through its points, with asymmetric error bars where it has intervals."""
    pts = sorted(curve.points, key=lambda p: p[0])
    x = np.array([100 * p[0] for p in pts]) + offset
    y = np.array([p[1] for p in pts], dtype=float)
    # A point without an interval gets a zero-length bar (nothing drawn). Matplotlib refuses
    # negative lengths: a bound a rounding error inside the point is drawn as zero.
    below = np.array([0.0 if p[2] is None else max(0.0, p[1] - p[2]) for p in pts])
    above = np.array([0.0 if p[3] is None else max(0.0, p[3] - p[1]) for p in pts])
    marker, dash = _CLASSIFIER_STYLES[curve.colour % len(_CLASSIFIER_STYLES)]
    if curve.variant is not None:
        dash = _VARIANT_DASHES[curve.variant % len(_VARIANT_DASHES)]
    ax.errorbar(
        x,
        y,
        yerr=np.vstack([below, above]) if np.any(below > 0) or np.any(above > 0) else None,
        color=f"C{curve.colour % 10}",
        marker=marker,
        linestyle=dash,
        markersize=6,
        capsize=3,
        linewidth=1.6,
        label=curve.label,
    )


def _x_limits(shares: Sequence[float]) -> tuple[float, float, float]:
    """x range in percent for ``shares`` (in [0, 1]), padded so end caps are not clipped.

    Returns:
        ``(low, high, span)``; span is the data width, at least 10 points, so that a
        single share still sits in the middle of a sensible range.
    """
    xs = 100 * np.asarray(shares, dtype=float)
    span = max(float(xs.max() - xs.min()), 10.0)
    centre = (float(xs.max()) + float(xs.min())) / 2
    return centre - 0.58 * span, centre + 0.58 * span, span
