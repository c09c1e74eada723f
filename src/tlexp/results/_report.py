"""Sweep reports: every file of a report folder, written from a set of run folders. No TensorFlow.

A report is built only from what run folders hold on disk (``config.yaml``,
``metrics.json``, ``predictions.csv``), so it can be rebuilt at any time, from any
mix of runs, without TensorFlow. A folder without ``metrics.json`` never counts as a
result: it is listed as ``unfinished``. Every output has a fixed name (below).

This module reads the runs, orders them, draws the charts with their captions and writes
the files; the tables and sections come from the modules that own them: the answer
(:mod:`~tlexp.results._answer`), one row per run (:mod:`~tlexp.results._summary`), one
per setting (:mod:`~tlexp.results._bysetting`), the fine-tuning strategies compared where
they vary (:mod:`~tlexp.results._strategies`, heatmaps :mod:`~tlexp.results._heatmap`), the
depth probe where the sweep folder holds one (:mod:`~tlexp.results._probes`, chart
:mod:`~tlexp.results._probechart`), head vs the other classifiers
(:mod:`~tlexp.results._paired`), and the HTML page (:mod:`~tlexp.results._html`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tlexp import files, runfolder
from tlexp.errors import UserError
from tlexp.results._answer import answer_section
from tlexp.results._bysetting import by_setting_csv, by_setting_section
from tlexp.results._heatmap import BLOCK_SHARE_HEATMAP, STRATEGY_HEATMAP, heatmap_figures
from tlexp.results._html import html_page
from tlexp.results._leads import ScoredImages
from tlexp.results._paired import PAIRED_COLUMNS, Comparison, paired_comparisons, paired_section
from tlexp.results._probechart import DEPTH_PLOT, probe_figures
from tlexp.results._probes import find_probes, probe_section
from tlexp.results._runs import ReportRun, failed_run, load_run
from tlexp.results._settings import LEVEL_TEXT, Setting, group_settings
from tlexp.results._strategies import STRATEGIES_CSV, StrategyTable, strategies_csv, strategies_section, strategy_tables
from tlexp.results._summary import count_line, failures_section, results_section, summary_csv
from tlexp.results._tables import Section, as_share

log = logging.getLogger("tlexp")

# Fixed file names inside the report folder.
SUMMARY_CSV = "summary.csv"  # one row per run (finished, failed, unfinished)
BY_SETTING_CSV = "summary_by_setting.csv"  # mean and std over seeds per setting; only with repeated seeds
PAIRED_CSV = "paired.csv"  # head vs each other classifier on the test split, per run, with Holm's correction
SUMMARY_MD = "summary.md"  # the answer, then the tables, as Markdown
ACCURACY_PLOT = "accuracy_vs_frozen.png"  # test accuracy against the achieved frozen share, per backbone and classifier
TIME_PLOT = "time_vs_frozen.png"  # wall time per run against the frozen share, per backbone
COST_PLOT = "accuracy_vs_minutes.png"  # head accuracy vs minutes of compute, the Pareto frontier, the baseline
HTML_REPORT = "report.html"  # everything above in one self-contained file
# Only where strategies vary (tlexp.results._strategies): the strategy table and its heatmaps;
# only where the sweep folder holds probes (tlexp.results._probes): the features-at-depth chart.
STRATEGY_OUTPUTS = (STRATEGIES_CSV, STRATEGY_HEATMAP, BLOCK_SHARE_HEATMAP, DEPTH_PLOT)
OUTPUTS = (
    SUMMARY_CSV,
    BY_SETTING_CSV,
    PAIRED_CSV,
    SUMMARY_MD,
    ACCURACY_PLOT,
    TIME_PLOT,
    COST_PLOT,
    HTML_REPORT,
    *STRATEGY_OUTPUTS,
)

# The study's backbones first, in its order; any others follow alphabetically.
BACKBONE_ORDER = ("vgg16", "resnet50", "densenet121")


def find_runs(paths: Sequence[str | os.PathLike]) -> tuple[list[Path], list[Path]]:
    """Find run folders (folders holding ``config.yaml``) under each path, recursively.

    A path may itself be a run folder. Run folders are not searched further (runs do
    not nest).

    Returns:
        ``(finished, unfinished)``: absolute paths, sorted, without duplicates; a
        finished run also holds ``metrics.json`` (written last by every run).

    Raises:
        UserError: If a path is not an existing folder.
    """
    found: set[Path] = set()
    for p in paths:
        root = Path(p)
        if not root.is_dir():
            raise UserError(
                f"The report path {str(p)!r} is not a folder. Pass run folders, or folders that "
                "contain them (e.g. a sweep's output folder)."
            )
        for here, dirs, names in os.walk(root):
            if runfolder.CONFIG_FILE in names:
                found.add(Path(here).resolve())
                dirs[:] = []
    ordered = sorted(found)
    return (
        [d for d in ordered if (d / runfolder.METRICS_FILE).is_file()],
        [d for d in ordered if not (d / runfolder.METRICS_FILE).is_file()],
    )


def build_report(
    run_dirs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    failed: Sequence[dict[str, Any]] = (),
    title: str = "tlexp report",
) -> dict[str, Path]:
    """Write the tables, charts and HTML page of a set of runs into ``out_dir``.

    Args:
        run_dirs: Run folders. One without ``metrics.json`` is reported as
            ``unfinished``, never read as a result.
        out_dir: The report folder (created if needed). Files of earlier reports with
            the fixed names are replaced; one that this report does not produce (e.g.
            ``paired.csv`` without predictions) is removed so none is left stale.
        failed: Sweep entries that failed, each a dict with at least ``name``,
            ``error`` and ``overrides`` (dotted key -> value, e.g.
            ``{"model.backbone": "resnet50", "model.freeze": 0.3, "seed": 0}``).
            Optional: ``config``, the cell's whole resolved config (nested dict), so
            that keys the grid did not vary (e.g. the backbone) are shown too; and
            ``run_dir``. Listed, never averaged or plotted.
        title: Heading of ``summary.md`` and ``report.html``.

    Returns:
        File name -> path of every file written (see ``OUTPUTS``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items = sorted([load_run(Path(d)) for d in run_dirs] + [failed_run(f) for f in failed], key=_sort_key)
    done = [r for r in items if r.status == "finished"]
    clfs = _classifiers(done)
    settings = group_settings(done)
    paired, notes = paired_comparisons(done, clfs)
    images = ScoredImages()
    strategies = strategy_tables(settings, images)
    written = _write_tables(out, items, settings, clfs, paired, strategies)
    figures = _charts(settings, clfs, out) if done else []  # (file name, caption)
    strategy_figures = heatmap_figures(strategies, out)
    probes, probe_notes = find_probes(_probe_roots(out, run_dirs), list(dict.fromkeys(s.backbone for s in settings)))
    depth_figures = probe_figures(probes, settings, out)
    written.update({name: out / name for name, _ in [*figures, *strategy_figures, *depth_figures]})

    sections = [
        answer_section(settings, clfs, paired, strategies, images),
        results_section(items, clfs, strategy=bool(strategies)),
        *filter(
            None,
            [
                by_setting_section(settings, clfs),
                strategies_section(strategies, strategy_figures),
                probe_section(probes, probe_notes, depth_figures),
                paired_section(paired, notes),
                failures_section(items),
            ],
        ),
    ]
    stamp = datetime.now(UTC).astimezone().strftime("%Y-%m-%d %H:%M %Z")
    counts = count_line(items)
    files.write_text(out / SUMMARY_MD, _markdown(title, stamp, counts, sections))
    written[SUMMARY_MD] = out / SUMMARY_MD
    files.write_text(out / HTML_REPORT, html_page(title, stamp, counts, sections, out, figures, items))
    written[HTML_REPORT] = out / HTML_REPORT

    for name in OUTPUTS:
        if name not in written:
            (out / name).unlink(missing_ok=True)
    log.info("report: %s in %s", counts, out)
    return written


def _write_tables(
    out: Path,
    items: Sequence[ReportRun],
    settings: Sequence[Setting],
    clfs: list[str],
    paired: list[Comparison],
    strategies: Sequence[StrategyTable],
) -> dict[str, Path]:
    """Write the CSV tables: one row per run, per setting (with repeated seeds), per comparison, per strategy."""
    written = {SUMMARY_CSV: out / SUMMARY_CSV}
    files.write_csv(out / SUMMARY_CSV, *summary_csv(items, clfs, out, strategy=bool(strategies)))
    by_setting = by_setting_csv(settings, clfs)
    if by_setting:
        files.write_csv(out / BY_SETTING_CSV, *by_setting)
        written[BY_SETTING_CSV] = out / BY_SETTING_CSV
    if paired:
        files.write_csv(out / PAIRED_CSV, PAIRED_COLUMNS, [p.csv_row() for p in paired])
        written[PAIRED_CSV] = out / PAIRED_CSV
    if strategies:
        files.write_csv(out / STRATEGIES_CSV, *strategies_csv(strategies))
        written[STRATEGIES_CSV] = out / STRATEGIES_CSV
    return written


def _probe_roots(out: Path, run_dirs: Sequence[str | os.PathLike]) -> list[Path]:
    """Where a sweep's ``probes/`` folder may be: the report folder (a sweep writes its report into its
    own folder), then each folder holding a run (a sweep's runs sit in the sweep folder)."""
    return list(dict.fromkeys([out.resolve(), *(Path(d).resolve().parent for d in run_dirs)]))


def _markdown(title: str, stamp: str, counts: str, sections: Sequence[Section]) -> str:
    """summary.md: the title and counts, then every section (the answer first)."""
    return "\n".join([f"# {title}", "", f"Generated {stamp}. {counts}", "", *(s.markdown() for s in sections)])


def _classifiers(done: Sequence[ReportRun]) -> list[str]:
    """Classifier names in report order: head, forest, then the others as first seen."""
    names = ["head"]
    for r in done:
        for c in r.record.classifiers:
            if c not in names:
                names.append(c)
    if "forest" in names:  # forest right after head, whichever run listed it first
        names.remove("forest")
        names.insert(1, "forest")
    return names


def _sort_key(r: ReportRun) -> tuple:
    """Report order: by backbone (the study's first), freeze share (a layer by what it froze), seed, name."""
    backbone = str(r.config.get("model.backbone") or "")
    rank = BACKBONE_ORDER.index(backbone) if backbone in BACKBONE_ORDER else len(BACKBONE_ORDER)
    freeze = as_share(r.config.get("model.freeze"))
    if freeze is None:  # a layer name: order by what it achieved
        freeze = r.frozen_share if r.record else math.inf
    seed = r.config.get("seed")
    return rank, backbone, freeze, seed if isinstance(seed, int) else math.inf, r.name


# --------------------------------------------------------------------------- charts


def _charts(settings: Sequence[Setting], clfs: list[str], out: Path) -> list[tuple[str, str]]:
    """Draw the report's charts into ``out``; their (file name, caption), in the page's order."""
    from tlexp.results._sweepcharts import plot_accuracy_vs_frozen, plot_time_vs_frozen

    curves, note = _accuracy_curves(settings, clfs)
    plot_accuracy_vs_frozen(curves, out / ACCURACY_PLOT, note=note)
    figures = [
        (
            ACCURACY_PLOT,
            "Test accuracy vs the achieved frozen share of backbone parameters, one panel per backbone, one "
            f"line per classifier{' and setting' if len(curves) > len(clfs) else ''}; {note}.",
        )
    ]
    curves, note = _time_curves(settings)
    plot_time_vs_frozen(curves, out / TIME_PLOT, note=note)
    figures.append((TIME_PLOT, f"Wall time per run (training, prediction and classifiers) vs frozen share; {note}."))
    return figures + _cost_chart(settings, out)


def _accuracy_curves(settings: Sequence[Setting], clfs: list[str]) -> tuple[list, str]:
    """One curve per backbone, classifier and setting variant; the note says what points and bars are."""
    from tlexp.results._sweepcharts import Curve

    variants = list(dict.fromkeys(s.variant for s in settings))
    several = len(variants) > 1
    curves, estimates = [], []
    for backbone in dict.fromkeys(s.backbone for s in settings):
        for colour, clf in enumerate(clfs):
            for v, variant in enumerate(variants):
                points = []
                for s in settings:
                    e = s.accuracy(clf) if (s.backbone, s.variant) == (backbone, variant) else None
                    if e is not None:
                        points.append((s.share, e.value, e.low, e.high))
                        estimates.append(e)
                if points:
                    label = f"{clf}, {variant}" if several else clf
                    curves.append(Curve(backbone, label, points, colour, v if several else None))
    singles = sorted({e.n_test for e in estimates if e.seeds == 1})
    wilson = f"{LEVEL_TEXT} Wilson interval of the test accuracy (n = {_span(singles)} test images)" if singles else ""
    return curves, _seeds_note([e.seeds for e in estimates], wilson)


def _time_curves(settings: Sequence[Setting]) -> tuple[list, str]:
    """One curve per backbone and setting variant: mean wall time, lowest to highest seed."""
    from tlexp.results._sweepcharts import Curve

    variants = list(dict.fromkeys(s.variant for s in settings))
    several = len(variants) > 1
    curves = []
    for colour, backbone in enumerate(dict.fromkeys(s.backbone for s in settings)):
        for v, variant in enumerate(variants):
            points = [
                (s.share, *spread)
                for s in settings
                if (s.backbone, s.variant) == (backbone, variant)
                and (spread := s.spread(lambda r: r.record.timings_s.get("total"))) is not None
            ]
            if points:
                label = f"{backbone}, {variant}" if several else backbone
                curves.append(Curve("", label, points, colour, v if several else None))
    return curves, _seeds_note([len(s.runs) for s in settings], "")


def _cost_chart(settings: Sequence[Setting], out: Path) -> list[tuple[str, str]]:
    """Draw the cost chart if any setting has a cost; its (file name, caption), or none."""
    from tlexp.results._cost import PHASES_TEXT, pareto_frontier, setting_costs
    from tlexp.results._costchart import CostPoint, plot_accuracy_vs_minutes

    costs, _ = setting_costs(settings)
    if not costs:
        return []
    on = pareto_frontier([(c.minutes, c.accuracy) for c in costs])
    points = [
        CostPoint(c.setting.backbone, c.setting.label(backbone=False), c.minutes, c.accuracy, f)
        for c, f in zip(costs, on, strict=True)
    ]
    bases = sorted({round(c.baseline, 12) for c in costs})
    seeds = sorted({len(c.setting.runs) for c in costs})
    note = "one seed per point" if seeds == [1] else f"each point the mean over its setting's seeds ({_span(seeds)})"
    plot_accuracy_vs_minutes(points, out / COST_PLOT, baseline=bases[-1], note=note)
    base = f"{bases[0]:.4f}" if len(bases) == 1 else f"{bases[-1]:.4f}, the highest of the test splits'"
    return [
        (
            COST_PLOT,
            f"Head test accuracy vs minutes of compute ({PHASES_TEXT} phases), one marker per setting; dashed "
            f"step line and rings: the Pareto frontier; dotted line: the majority-class baseline ({base}); {note}.",
        )
    ]


def _seeds_note(seeds: Sequence[int], single_bar: str) -> str:
    """What a chart's points and bars are, e.g. 'mean of 3 seeds per point; bars: lowest to highest seed'.

    Args:
        seeds: The number of seeds behind each point.
        single_bar: What a one-seed point's bar is ("" for none).
    """
    many = sorted({k for k in seeds if k > 1})
    one = 1 in seeds
    spread = "lowest to highest seed"
    single = f"bars: {single_bar}" if single_bar else "no bars"
    if many and not one:
        return f"mean of {_span(many)} seeds per point; bars: {spread}"
    if one and not many:
        return f"one seed per point; {single}"
    return f"mean of {_span(many)} seeds where several ran (bars: {spread}); one seed elsewhere ({single})"


def _span(values: Sequence[int]) -> str:
    """'3' or '2–3'."""
    return str(values[0]) if values[0] == values[-1] else f"{values[0]}–{values[-1]}"
