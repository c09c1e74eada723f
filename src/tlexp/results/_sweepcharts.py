"""The sweep report's charts against the frozen share: test accuracy and wall time. No TensorFlow.

Each line is one setting's classifier (or backbone) over the frozen shares it ran at,
already aggregated over seeds by the report, with the interval the report chose drawn as
an error bar; the report's captions say what points and bars are. The cost chart
(accuracy against minutes) is :mod:`tlexp.results._costchart`. Figures are saved
through :func:`tlexp.results._plots.save_figure`, like every chart of tlexp.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tlexp.results import _plots as plots  # save_figure looked up per call: one patch sees every chart

if TYPE_CHECKING:  # matplotlib stays a lazy import at run time
    from matplotlib.axes import Axes

_MIN_ACCURACY_SPAN = 0.02  # smallest y range of accuracy charts: 2 percentage points
# Line styles per classifier, in order (head first): marker and dash differ as well as
# colour, so lines stay apart in greyscale and where they overlap.
_CLASSIFIER_STYLES = [("o", "-"), ("s", "--"), ("^", "-."), ("D", ":"), ("v", "-"), ("P", "--")]
# Settings that differ in more than backbone and freeze (another learning rate, image
# size, ...) keep their classifier's colour and marker and get a dash of their own.
_VARIANT_DASHES = ["-", "--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 3))]
_MAX_INSIDE_LEGEND = 8  # more lines than this: the time chart's legend goes below the axes


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
    return plots.save_figure(fig, path)


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
    # Many lines (a strategies sweep: one per backbone and strategy) get their legend below
    # the axes, in columns, so that it does not squash the chart.
    many = len(curves) > _MAX_INSIDE_LEGEND
    legend_rows = -(-len(curves) // 3) if many else 0
    fig = Figure(figsize=(9.0 if many else 6.5, 4.6 + 0.24 * legend_rows), layout="constrained")
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
    if many:
        fig.legend(loc="outside lower center", ncols=3, frameon=False, fontsize=9)
    else:
        ax.legend()
    return plots.save_figure(fig, path)


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
