"""The strategies' heatmaps: backbone x strategy, and block x share where the sweep crossed them. No TensorFlow.

Each cell is a setting's head test accuracy (the mean over its seeds), written in the
cell; the best of each backbone is outlined; a strategy a backbone did not run is a grey
cell. The intervals and tests are the Strategies table's (:mod:`tlexp.results._strategies`).
Figures are saved through :func:`tlexp.results._plots.save_figure`, like every chart of tlexp.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tlexp.results import _plots as plots  # save_figure looked up per call: one patch sees every chart
from tlexp.results._strategies import StrategyTable
from tlexp.results._tables import fmt_freeze

STRATEGY_HEATMAP = "strategy_heatmap.png"  # backbone x strategy, head test accuracy, each row's best outlined
BLOCK_SHARE_HEATMAP = "block_share_heatmap.png"  # stage x frozen share (a sweep crossing block:<k>, model.freeze)


@dataclass(frozen=True)
class Grid:
    """One heatmap panel: ``values[i][j]`` is row i, column j (None: not run); ``best`` cells are outlined."""

    title: str
    rows: list[str]
    columns: list[str]
    values: list[list[float | None]]
    best: list[tuple[int, int]]
    xlabel: str
    ylabel: str


def plot_heatmaps(grids: Sequence[Grid], path: str | os.PathLike, *, title: str, note: str = "") -> Path:
    """Draw the panels side by side (at most 3 a row), one colour scale for all, each cell annotated.

    Raises:
        ValueError: If no panel holds a value.
    """
    import numpy as np
    from matplotlib.figure import Figure

    values = [v for g in grids for row in g.values for v in row if v is not None]
    if not values:
        raise ValueError("grids must hold at least one value. Got none instead.")
    ncols = min(len(grids), 3)
    nrows = -(-len(grids) // ncols)
    width = max(2.2 + 0.78 * max(len(g.columns) for g in grids), 4.0)
    height = max(1.6 + 0.5 * max(len(g.rows) for g in grids), 2.6)
    fig = Figure(figsize=(width * ncols + 1.0, height * nrows + 1.1), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    low, high = min(values), max(values)
    if high - low < 0.02:  # a few tenths of a point apart would fill the whole scale
        low, high = (low + high) / 2 - 0.01, (low + high) / 2 + 0.01
    image = None
    for ax, g in zip(axes, grids, strict=False):
        data = np.ma.masked_invalid(np.array([[np.nan if v is None else v for v in row] for row in g.values]))
        cmap = _colours()
        image = ax.imshow(data, cmap=cmap, vmin=low, vmax=high, aspect="auto")
        _annotate(ax, g, low, high)
        ax.set_xticks(range(len(g.columns)), g.columns, rotation=40 if len(g.columns) > 4 else 0, ha="right")
        ax.set_yticks(range(len(g.rows)), g.rows)
        ax.tick_params(length=0)
        ax.set_xlabel(g.xlabel)
        ax.set_ylabel(g.ylabel)
        ax.set_title(g.title)
    for ax in axes[len(grids) :]:
        ax.set_visible(False)
    fig.colorbar(image, ax=list(axes[: len(grids)]), label="head test accuracy", shrink=0.9)
    fig.suptitle(title + (f"\n{textwrap.fill(note, 110)}" if note else ""), fontsize=12)
    return plots.save_figure(fig, path)


def _colours():
    import matplotlib

    return matplotlib.colormaps["viridis"].with_extremes(bad="#e6e6e6")  # grey: not run


def _annotate(ax, g: Grid, low: float, high: float) -> None:
    """Each cell's value (dark text on light colours and back), '—' where not run, the best outlined."""
    from matplotlib.patches import Rectangle

    small = len(g.columns) > 10
    for i, row in enumerate(g.values):
        for j, v in enumerate(row):
            if v is None:
                ax.text(j, i, "—", ha="center", va="center", color="#8c8c8c")
                continue
            light = (v - low) / (high - low) > 0.55  # viridis is light at its top
            bold = (i, j) in g.best
            ax.text(
                j,
                i,
                f"{v:.3f}",
                ha="center",
                va="center",
                fontsize=8 if small else 9.5,
                color="black" if light else "white",
                fontweight="bold" if bold else "normal",
            )
    for i, j in g.best:
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="#d62728", linewidth=2.2))


def strategy_grid(tables: Sequence[StrategyTable]) -> Grid:
    """Backbone (and other-keys variant) x strategy: every strategy any table ran, in strategy order."""
    strategies = sorted({r.strategy for t in tables for r in t.rows}, key=lambda s: s.sort_key())
    columns = [s.label() for s in strategies]
    values, best = [], []
    for i, t in enumerate(tables):
        by = {r.strategy: r for r in t.rows}
        values.append([by[s].estimate.value if s in by else None for s in strategies])
        best.append((i, strategies.index(t.best.strategy)))
    return Grid("", [t.name for t in tables], columns, values, best, "strategy", "backbone")


def block_share_grids(tables: Sequence[StrategyTable]) -> list[Grid]:
    """Block (model.train) x frozen share, per table whose surgical runs cross at least 2 blocks with
    2 shares; the train-all runs at those shares are the first row. Only plain fine-tuning (no lp-ft,
    gradual or decay) counts, so that each cell is one setting."""
    grids = []
    for t in tables:
        plain = [r for r in t.rows if r.strategy.schedule == "fine-tune" and r.strategy.layer_decay == 1.0]
        blocks = [r for r in plain if r.strategy.block is not None]
        shares = sorted({r.strategy.freeze for r in blocks}, key=lambda f: (isinstance(f, str), f))
        if len({r.strategy.train for r in blocks}) < 2 or len(shares) < 2:
            continue
        kept = [r for r in plain if r.strategy.freeze in shares and r.strategy.train in ("all", *_trains(blocks))]
        trains = sorted({r.strategy.train for r in kept}, key=lambda k: _block_order(t, k))
        cell = {(r.strategy.train, r.strategy.freeze): r for r in kept}
        values = [[cell[k, f].estimate.value if (k, f) in cell else None for f in shares] for k in trains]
        top = max((r for r in kept), key=lambda r: r.estimate.value)
        grids.append(
            Grid(
                t.name,
                [_train_label(k) for k in trains],
                [fmt_freeze(f) for f in shares],
                values,
                [(trains.index(top.strategy.train), shares.index(top.strategy.freeze))],
                "frozen prefix (model.freeze, as asked)",
                "trained above it (model.train)",
            )
        )
    return grids


def _trains(rows: Sequence) -> list[str]:
    return list(dict.fromkeys(r.strategy.train for r in rows))


def _block_order(t: StrategyTable, train: str) -> tuple:
    row = next(r for r in t.rows if r.strategy.train == train)
    return row.strategy.sort_key()[2:4]


def _train_label(train: str) -> str:
    kind, _, spec = train.partition(":")
    if kind != "block":
        return f"{train} (rest)" if train == "all" else train
    return f"block{spec}" if spec.isdigit() else spec


def heatmap_figures(tables: Sequence[StrategyTable], out: Path) -> list[tuple[str, str]]:
    """Draw the strategy heatmap (and the block x share one, if any) into ``out``: their (file name, caption)."""
    if not tables:
        return []
    seeds = sorted({r.estimate.seeds for t in tables for r in t.rows})
    cells = "one seed per cell" if seeds == [1] else f"each cell the mean over its setting's seeds ({_span(seeds)})"
    title = "Head test accuracy per backbone and strategy"
    plot_heatmaps([strategy_grid(tables)], out / STRATEGY_HEATMAP, title=title, note=cells)
    figures = [
        (
            STRATEGY_HEATMAP,
            f"Head test accuracy per backbone (rows) and fine-tuning strategy (columns), {cells}; outlined: each "
            "row's best; grey: not run. The Strategies table gives each cell's interval and its paired test "
            "against the best.",
        )
    ]
    grids = block_share_grids(tables)
    if grids:
        plot_heatmaps(grids, out / BLOCK_SHARE_HEATMAP, title="Head test accuracy: block trained x frozen share")
        figures.append(
            (
                BLOCK_SHARE_HEATMAP,
                "Head test accuracy of surgical fine-tuning (one block trained, rows) above each frozen prefix "
                f"(columns), one panel per backbone; the first row trains all of the rest; {cells}; outlined: the "
                "panel's best; grey: not run.",
            )
        )
    return figures


def _span(values: Sequence[int]) -> str:
    return str(values[0]) if values[0] == values[-1] else f"{values[0]}–{values[-1]}"
