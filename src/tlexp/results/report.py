"""Sweep reports: tables (CSV, Markdown, HTML) and charts from run folders. No TensorFlow.

A report is built only from what run folders hold on disk (``config.yaml``,
``metrics.json``, ``predictions.csv``), so it can be rebuilt at any time, from any
mix of runs, without TensorFlow. A folder without ``metrics.json`` never counts as a
result: it is listed as ``unfinished``. Every output has a fixed name (below).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from tlexp import files
from tlexp.config import flatten
from tlexp.errors import UserError
from tlexp.results import runfolder
from tlexp.results.html import _html
from tlexp.results.record import load_record
from tlexp.results.summary import (
    _PAIRED_HEADER,
    _by_setting,
    _count_line,
    _paired,
    _Run,
    _sections,
    _summary_rows,
)
from tlexp.results.tables import _share

log = logging.getLogger("tlexp")

# Fixed file names inside the report folder.
SUMMARY_CSV = "summary.csv"  # one row per run (finished, failed, unfinished)
BY_SETTING_CSV = "summary_by_setting.csv"  # mean and std over seeds per setting; only with repeated seeds
PAIRED_CSV = "paired.csv"  # head vs each other classifier on the test split, per run
SUMMARY_MD = "summary.md"  # the tables, as Markdown
ACCURACY_PLOT = "accuracy_vs_frozen.png"
TIME_PLOT = "time_vs_frozen.png"
HTML_REPORT = "report.html"  # everything above in one self-contained file
OUTPUTS = (SUMMARY_CSV, BY_SETTING_CSV, PAIRED_CSV, SUMMARY_MD, ACCURACY_PLOT, TIME_PLOT, HTML_REPORT)

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
    from tlexp.results import plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items = sorted([_load_run(Path(d)) for d in run_dirs] + [_failed_run(f) for f in failed], key=_sort_key)
    done = [r for r in items if r.status == "finished"]
    clfs = _classifiers(done)
    written: dict[str, Path] = {}

    header, rows = _summary_rows(items, clfs, out)
    files.write_csv(out / SUMMARY_CSV, header, rows)
    written[SUMMARY_CSV] = out / SUMMARY_CSV
    by_setting = _by_setting(done, clfs)
    if by_setting:
        files.write_csv(out / BY_SETTING_CSV, *by_setting[0])
        written[BY_SETTING_CSV] = out / BY_SETTING_CSV
    paired, notes = _paired(done, clfs)
    if paired:
        files.write_csv(out / PAIRED_CSV, _PAIRED_HEADER, [[p[k] for k in _PAIRED_HEADER] for p in paired])
        written[PAIRED_CSV] = out / PAIRED_CSV

    figures: list[tuple[str, str]] = []  # (file name, caption)
    if done:
        acc = {
            b: {
                c: [
                    (r.frozen_share, r.score(c, "test", "accuracy"))
                    for r in done
                    if r.config.get("model.backbone") == b and r.ran(c)
                ]
                for c in clfs
            }
            for b in _backbones(done)
        }
        plots.plot_accuracy_vs_frozen(acc, out / ACCURACY_PLOT)
        times = {
            b: [(r.frozen_share, r.record.timings_s["total"]) for r in done if r.config.get("model.backbone") == b]
            for b in _backbones(done)
        }
        plots.plot_time_vs_frozen(times, out / TIME_PLOT)
        # Error bars exist exactly when some setting ran with several seeds.
        note = "; points are means over seeds, error bars one standard deviation." if by_setting else "."
        figures = [
            (
                ACCURACY_PLOT,
                "Test accuracy vs the achieved frozen share of backbone parameters, one panel per backbone" + note,
            ),
            (TIME_PLOT, "Wall time per run (training, prediction and classifiers) vs frozen share" + note),
        ]
        written.update({name: out / name for name, _ in figures})

    sections = _sections(items, clfs, by_setting, paired, notes)
    stamp = datetime.now(UTC).astimezone().strftime("%Y-%m-%d %H:%M %Z")
    counts = _count_line(items)
    md = [f"# {title}", "", f"Generated {stamp}. {counts}", ""]
    for heading, intro, table in sections:
        md += [f"## {heading}", "", *([intro, ""] if intro else []), *([table.markdown(), ""] if table else [])]
    files.write_text(out / SUMMARY_MD, "\n".join(md))
    written[SUMMARY_MD] = out / SUMMARY_MD
    files.write_text(out / HTML_REPORT, _html(title, stamp, counts, sections, out, figures, items))
    written[HTML_REPORT] = out / HTML_REPORT

    for name in OUTPUTS:
        if name not in written:
            (out / name).unlink(missing_ok=True)
    log.info("report: %s in %s", counts, out)
    return written


# --------------------------------------------------------------------------- loading


def _load_run(run_dir: Path) -> _Run:
    config_file = run_dir / runfolder.CONFIG_FILE
    text = config_file.read_text(encoding="utf-8") if config_file.is_file() else ""
    config = flatten(yaml.safe_load(text) or {}) if text else {}
    name = str(config.get("name") or run_dir.name)
    metrics_file = run_dir / runfolder.METRICS_FILE
    if not metrics_file.is_file():
        return _Run(
            name,
            "unfinished",
            run_dir,
            config,
            text,
            error=f"no {runfolder.METRICS_FILE}: the run has not finished (still running, or stopped)",
        )
    record = load_record(run_dir)
    return _Run(record.run.name, "finished", run_dir, config, text, record=record)


def _failed_run(entry: dict[str, Any]) -> _Run:
    overrides = dict(entry.get("overrides") or {})
    config = {**flatten(entry.get("config") or {}), **overrides}
    shown = entry.get("config") or overrides
    lines = str(entry.get("error", "")).strip().splitlines()
    run_dir = Path(entry["run_dir"]) if entry.get("run_dir") else None
    text = yaml.safe_dump(shown, sort_keys=False) if shown else ""
    return _Run(
        str(entry.get("name", "?")),
        "failed",
        run_dir,
        config,
        text,
        "resolved config" if entry.get("config") else "sweep overrides",
        error=lines[0] if lines else "",
    )


def _classifiers(done: Sequence[_Run]) -> list[str]:
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


def _backbones(items: Sequence[_Run]) -> list[str]:
    return list(dict.fromkeys(str(r.config.get("model.backbone")) for r in items))


def _sort_key(r: _Run) -> tuple:
    backbone = str(r.config.get("model.backbone") or "")
    rank = BACKBONE_ORDER.index(backbone) if backbone in BACKBONE_ORDER else len(BACKBONE_ORDER)
    freeze = _share(r.config.get("model.freeze"))
    if freeze is None:  # a layer name: order by what it achieved
        freeze = r.frozen_share if r.record else math.inf
    seed = r.config.get("seed")
    return rank, backbone, freeze, seed if isinstance(seed, int) else math.inf, r.name
