"""The "features at depth" chart: the depth probe's curves, with the fine-tuned head beside them. No TensorFlow.

One panel per backbone, x the backbone's stages (bottom first), y test accuracy. The probe
draws one line per classifier (logistic regression, the forest, ...) with its Wilson
interval. Beside it, where the report has them for that backbone (plain fine-tuning: no
lp-ft, gradual or layer decay): the head of the runs that trained one block alone, at
that block's stage, and the head of the runs that froze a prefix and trained the rest, at
the depth where their frozen prefix ends (:meth:`tlexp.results._probes.Probe.depth_of_share`).
Figures are saved through :func:`tlexp.results._plots.save_figure`, like every chart of tlexp.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tlexp.results import _plots as plots  # save_figure looked up per call: one patch sees every chart
from tlexp.results._probes import Probe
from tlexp.results._settings import LEVEL_TEXT, Setting
from tlexp.results._tables import as_share

DEPTH_PLOT = "features_at_depth.png"  # the depth probe per backbone, the fine-tuned heads beside it
_MARKERS = ["o", "s", "^", "D", "v", "P", "X"]


@dataclass(frozen=True)
class DepthCurve:
    """One line of a panel: ``points`` are ``(x on the stage axis, accuracy, low, high)``; ``head``
    lines (the fine-tuned runs) are dashed, drawn ``offset`` to the right so that their bars do not
    hide the probe's at the same stage."""

    panel: str
    label: str
    points: Sequence[tuple[float, float, float, float]]
    colour: int
    head: bool = False
    offset: float = 0.0


def head_curves(probe: Probe, settings: Sequence[Setting], first_colour: int) -> list[DepthCurve]:
    """The head beside the probe: one block trained alone (x = its stage; the smallest frozen prefix
    where several ran), and the frozen prefixes with all of the rest trained (x = where the prefix ends)."""
    plain = [
        s
        for s in settings
        if s.backbone == probe.backbone and s.strategy.schedule == "fine-tune" and s.strategy.layer_decay == 1.0
    ]
    curves = []
    for other in dict.fromkeys(s.other for s in plain):
        suffix = f", {other}" if other else ""
        here = [s for s in plain if s.other == other]
        blocks: dict[int, Setting] = {}
        for s in sorted(here, key=lambda s: s.strategy.sort_key()):
            k = probe.stage_of(s.strategy.block) if s.strategy.block is not None else None
            if k is not None and as_share(s.freeze) is not None:
                blocks.setdefault(k, s)
        prefix = [(probe.depth_of_share(s.share), s) for s in here if s.strategy.train == "all"]
        prefix = sorted((p for p in prefix if p[0] is not None), key=lambda p: p[0])
        for label, pairs in (
            (f"head, that stage alone trained{suffix}", sorted(blocks.items())),
            (f"head, frozen up to there, the rest trained{suffix}", prefix),
        ):
            points = [(x, e.value, e.low, e.high) for x, s in pairs if (e := s.accuracy("head")) is not None]
            if points:
                k = len(curves)
                curves.append(DepthCurve(probe.backbone, label, points, first_colour + k, True, 0.06 * (k + 1)))
    return curves


def plot_features_at_depth(
    curves: Sequence[DepthCurve], probes: Sequence[Probe], path: str | os.PathLike, *, note: str = ""
) -> Path:
    """One panel per probe's backbone, the stages as x ticks (labelled by name), one line per curve."""
    from matplotlib.figure import Figure

    n = len(probes)
    ncols = 2 if n == 4 else min(n, 3)
    nrows = -(-n // ncols)
    fig = Figure(figsize=(5.0 * ncols + 0.6, 4.0 * nrows + 1.3), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True).ravel()
    for ax, probe in zip(axes, probes, strict=False):
        here = [c for c in curves if c.panel == probe.backbone]
        for c in here:
            _draw(ax, c)
        ticks = [(d.stage, d.label) for d in probe.depths]
        if any(x < 0.5 for c in here for x, *_ in c.points):
            ticks.insert(0, (0, "input"))
        ax.set_xticks([t for t, _ in ticks], [label for _, label in ticks], rotation=30 if len(ticks) > 6 else 0)
        ax.set_title(probe.backbone)
        ax.set_xlabel("stage boundary (the cut after it)")
        ax.grid(True, alpha=0.3)
    for ax in axes[n:]:
        ax.set_visible(False)
    for row in range(nrows):
        axes[row * ncols].set_ylabel("test accuracy")
        axes[row * ncols].yaxis.set_tick_params(labelleft=True)
    handles, labels = [], []
    for ax in axes[:n]:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 3), frameon=False)
    title = "Features at depth: the probe on the frozen backbone, and the fine-tuned head"
    fig.suptitle(title + (f"\n{textwrap.fill(note, 110)}" if note else ""), fontsize=12)
    return plots.save_figure(fig, path)


def _draw(ax, c: DepthCurve) -> None:
    import numpy as np

    pts = sorted(c.points)
    y = np.array([p[1] for p in pts])
    bars = np.vstack([[max(0.0, p[1] - p[2]) for p in pts], [max(0.0, p[3] - p[1]) for p in pts]])
    ax.errorbar(
        [p[0] + c.offset for p in pts],
        y,
        yerr=bars if bars.any() else None,
        color=f"C{c.colour % 10}",
        marker=_MARKERS[c.colour % len(_MARKERS)],
        linestyle="--" if c.head else "-",
        markerfacecolor="white" if c.head else None,
        markersize=6,
        capsize=3,
        linewidth=1.6,
        label=c.label,
    )


def probe_figures(probes: Sequence[Probe], settings: Sequence[Setting], out: Path) -> list[tuple[str, str]]:
    """Draw the chart into ``out`` if there are probes: its (file name, caption)."""
    if not probes:
        return []
    clfs = list(dict.fromkeys(c for p in probes for c in p.classifiers))
    curves = []
    for p in probes:
        curves += [
            DepthCurve(
                p.backbone, f"probe, {c}", [(d.stage, *_score(d.scores[c])) for d in p.depths if c in d.scores], i
            )
            for i, c in enumerate(clfs)
        ]
        curves += head_curves(p, settings, len(clfs))
    sizes = sorted({s.n for p in probes for d in p.depths for s in d.scores.values() if s.n})
    n = f" (n = {sizes[0]}{'–' + str(sizes[-1]) if sizes[-1] != sizes[0] else ''} test images)" if sizes else ""
    note = f"bars: {LEVEL_TEXT} Wilson interval{n}; head: its setting's interval (several seeds: lowest to highest)"
    plot_features_at_depth(curves, probes, out / DEPTH_PLOT, note=note)
    heads = any(c.head for c in curves)
    caption = (
        "Test accuracy of classifiers fitted on the frozen backbone's pooled activations after each stage (solid), "
        "one panel per backbone"
        + (
            "; dashed: the fine-tuned head of the runs that trained one stage alone (at that stage) or froze a "
            "prefix and trained the rest (where the prefix ends, by its share of the parameters)"
            if heads
            else ""
        )
        + f"; {note}."
    )
    return [(DEPTH_PLOT, caption)]


def _score(s) -> tuple[float, float, float]:
    return s.accuracy, s.low, s.high
