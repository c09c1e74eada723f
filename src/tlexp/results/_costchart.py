"""The report's cost chart: head test accuracy against minutes of compute, with the Pareto frontier. No TensorFlow.

One marker per setting (the numbers of :mod:`tlexp.results._cost`), the frontier as a step
line (the best accuracy reached within a given number of minutes) and the majority-class
baseline as a horizontal line, so that a cheap chance-level setting shows as what it is.
Drawn on a bare ``matplotlib.figure.Figure`` and saved through
:func:`tlexp.results._plots.save_figure`, like the other charts.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


@dataclass(frozen=True)
class CostPoint:
    """One setting on the cost chart.

    Attributes:
        group: Its colour and marker, and legend entry (the backbone).
        label: The text beside its marker (e.g. ``"30 %"``).
        minutes: Minutes of compute (mean over its seeds).
        accuracy: Head test accuracy (mean over its seeds).
        frontier: Whether it is on the Pareto frontier.
    """

    group: str
    label: str
    minutes: float
    accuracy: float
    frontier: bool


def plot_accuracy_vs_minutes(
    points: Sequence[CostPoint],
    path: str | os.PathLike,
    *,
    baseline: float | None,
    title: str = "Head test accuracy vs minutes of compute",
    note: str = "",
) -> Path:
    """Plot accuracy against minutes, one marker per setting, the frontier and the baseline.

    Args:
        points: The settings, e.g. ``CostPoint("vgg16", "30 %", 1.9, 0.93, True)``.
        path: Where to write the PNG.
        baseline: Majority-class accuracy, drawn as a horizontal line (None: not drawn).
        title: First line of the title.
        note: Second line of the title: what the minutes and points are.

    Returns:
        ``path`` as a Path.

    Raises:
        ValueError: If there is no point.
    """
    from matplotlib.figure import Figure

    from tlexp.results import _plots as plots

    if not points:
        raise ValueError("points must hold at least one (minutes, accuracy) setting. Got none instead.")
    fig = Figure(figsize=(7.0, 4.8), layout="constrained")
    ax = fig.subplots()
    for i, group in enumerate(dict.fromkeys(p.group for p in points)):
        here = [p for p in points if p.group == group]
        ax.plot(
            [p.minutes for p in here],
            [p.accuracy for p in here],
            linestyle="none",
            marker=_MARKERS[i % len(_MARKERS)],
            markersize=8,
            color=f"C{i % 10}",
            label=group,
        )
    _label(ax, points)
    # The frontier as the best accuracy reachable within x minutes: a step up at each of its
    # settings, flat to the right edge after the last (so a frontier of one setting shows
    # too), and a ring around each of its markers. The edge leaves room for the labels.
    right = max(p.minutes for p in points) * 1.15
    front = sorted((p.minutes, p.accuracy) for p in points if p.frontier)
    if front:
        ax.step(
            [m for m, _ in front] + [right],
            [a for _, a in front] + [front[-1][1]],
            where="post",
            color="black",
            linewidth=1.2,
            linestyle="--",
            label="Pareto frontier",
        )
        ax.plot(
            [m for m, _ in front],
            [a for _, a in front],
            linestyle="none",
            marker="o",
            markersize=15,
            markerfacecolor="none",
            markeredgecolor="black",
        )
    if baseline is not None:
        ax.axhline(
            baseline, color="grey", linestyle=":", linewidth=1.5, label=f"majority-class baseline {baseline:.4f}"
        )
    # From zero, so the minutes compare as ratios (a setting twice as long sits twice as far).
    ax.set_xlim(0, right)
    ax.set_xlabel("minutes of compute (prefix + train + predict)")
    ax.set_ylabel("head test accuracy")
    ax.set_title(title + (f"\n{textwrap.fill(note, 70)}" if note else ""), fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return plots.save_figure(fig, path)


def _label(ax, points: Sequence[CostPoint]) -> None:
    """Write each setting's label beside its marker; a label that would sit on an earlier
    one (within 12 % of the x range and 6 % of the y range) goes below its marker instead."""
    xs = [p.minutes for p in points]
    ys = [p.accuracy for p in points]
    width = max(max(xs), 1e-9)
    height = max(max(ys) - min(ys), 0.02)
    placed: list[tuple[float, float]] = []  # label anchors, in fractions of the ranges
    for p in sorted(points, key=lambda p: (p.minutes, -p.accuracy)):
        x, y = p.minutes / width, p.accuracy / height
        below = any(abs(x - px) < 0.12 and abs(y - py) < 0.06 for px, py in placed)
        ax.annotate(
            p.label,
            (p.minutes, p.accuracy),
            xytext=(5, -11 if below else 4),
            textcoords="offset points",
            fontsize=8,
        )
        placed.append((x, y - (0.08 if below else 0.0)))
