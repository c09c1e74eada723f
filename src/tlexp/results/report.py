"""Sweep reports: tables (CSV, Markdown, HTML) and charts from run folders. No TensorFlow.

A report is built only from what run folders hold on disk (``config.yaml``,
``metrics.json``, ``predictions.csv``), so it can be rebuilt at any time, from any
mix of runs, without TensorFlow. A folder without ``metrics.json`` never counts as a
result: it is listed as ``unfinished``. Every output has a fixed name (below).
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import yaml

from tlexp.results import runfolder
from tlexp import files
from tlexp.config import flatten
from tlexp.errors import UserError
from tlexp.results.record import RunRecord, load_record

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
ALPHA = 0.05  # significance level of the paired tests' one-line readings
# Config keys that do not make a setting: seeds vary within one, the rest is bookkeeping
# (``sweep`` is the grid that produced the run, not a property of the run).
NOT_SETTING = frozenset({"seed", "name", "output.dir", "data.split_seed", "sweep"})


@dataclass
class _Run:
    """One row of the report: a run folder, or a sweep entry that failed before making one."""

    name: str
    status: str  # finished | failed | unfinished
    dir: Path | None = None
    config: dict[str, Any] = field(default_factory=dict)  # flattened: "model.freeze" -> 0.3
    config_text: str = ""
    config_source: str = "resolved config.yaml"  # what config_text is, for the HTML page
    record: RunRecord | None = None  # finished runs only
    error: str = ""

    def ran(self, clf: str) -> bool:
        """Whether classifier ``clf`` ran in this (finished) run."""
        return self.record is not None and clf in self.record.classifiers

    def score(self, clf: str, split: str, metric: str) -> Any:
        """One number of the run record (e.g. ``head``, ``test``, ``accuracy``); None if absent."""
        if not self.ran(clf):
            return None
        return getattr(self.record.classifiers[clf].split(split), metric)

    @property
    def frozen_share(self) -> float | None:
        return self.record.freeze.frozen_share if self.record else None


@dataclass
class _Table:
    """A table rendered both as Markdown and HTML, so the two never disagree."""

    header: list[str]
    rows: list[list[str]]
    align: str  # one letter per column: "l" or "r"
    marked: set[int] = field(default_factory=set)  # rows to highlight in HTML (failed runs)

    def markdown(self) -> str:
        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") or " " for c in cells) + " |"

        rule = ["---:" if a == "r" else "---" for a in self.align]
        return "\n".join([line(self.header), line(rule)] + [line(r) for r in self.rows])

    def html(self) -> str:
        def row(cells: Sequence[str], tag: str, marked: bool = False) -> str:
            return ('<tr class="marked">' if marked else "<tr>") + "".join(
                f'<{tag} class="{"num" if a == "r" else "txt"}">{_no_break(html.escape(c))}</{tag}>'
                for c, a in zip(cells, self.align)) + "</tr>"

        body = "\n".join(row(r, "td", i in self.marked) for i, r in enumerate(self.rows))
        return (f'<div class="scroll"><table>\n<thead>{row(self.header, "th")}</thead>\n'
                f"<tbody>\n{body}\n</tbody></table></div>")


# A table too wide for the page wraps its cells at spaces; these spaces hold a number
# to its unit or sign: "35.9 %", "± 0.0042", "[-0.01, +0.03]" wrap only before "±" / "[".
_NO_BREAK = ((" %", "&nbsp;%"), ("± ", "±&nbsp;"), (", +", ",&nbsp;+"), (", -", ",&nbsp;-"))


def _no_break(text: str) -> str:
    for plain, kept in _NO_BREAK:
        text = text.replace(plain, kept)
    return text


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
            raise UserError(f"The report path {str(p)!r} is not a folder. Pass run folders, or folders that "
                            "contain them (e.g. a sweep's output folder).")
        for here, dirs, names in os.walk(root):
            if runfolder.CONFIG_FILE in names:
                found.add(Path(here).resolve())
                dirs[:] = []
    ordered = sorted(found)
    return ([d for d in ordered if (d / runfolder.METRICS_FILE).is_file()],
            [d for d in ordered if not (d / runfolder.METRICS_FILE).is_file()])


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
        acc = {b: {c: [(r.frozen_share, r.score(c, "test", "accuracy"))
                       for r in done if r.config.get("model.backbone") == b and r.ran(c)]
                   for c in clfs} for b in _backbones(done)}
        plots.plot_accuracy_vs_frozen(acc, out / ACCURACY_PLOT)
        times = {b: [(r.frozen_share, r.record.timings_s["total"])
                     for r in done if r.config.get("model.backbone") == b] for b in _backbones(done)}
        plots.plot_time_vs_frozen(times, out / TIME_PLOT)
        # Error bars exist exactly when some setting ran with several seeds.
        note = ("; points are means over seeds, error bars one standard deviation." if by_setting else ".")
        figures = [(ACCURACY_PLOT, "Test accuracy vs the achieved frozen share of backbone parameters, "
                                   "one panel per backbone" + note),
                   (TIME_PLOT, "Wall time per run (training, prediction and classifiers) vs frozen share" + note)]
        written.update({name: out / name for name, _ in figures})

    sections = _sections(items, clfs, by_setting, paired, notes)
    stamp = datetime.now(timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M %Z")
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
        return _Run(name, "unfinished", run_dir, config, text,
                    error=f"no {runfolder.METRICS_FILE}: the run has not finished (still running, or stopped)")
    record = load_record(run_dir)
    return _Run(record.run.name, "finished", run_dir, config, text, record=record)


def _failed_run(entry: dict[str, Any]) -> _Run:
    overrides = dict(entry.get("overrides") or {})
    config = {**flatten(entry.get("config") or {}), **overrides}
    shown = entry.get("config") or overrides
    lines = str(entry.get("error", "")).strip().splitlines()
    run_dir = Path(entry["run_dir"]) if entry.get("run_dir") else None
    text = yaml.safe_dump(shown, sort_keys=False) if shown else ""
    return _Run(str(entry.get("name", "?")), "failed", run_dir, config, text,
                "resolved config" if entry.get("config") else "sweep overrides", error=lines[0] if lines else "")


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


def _share(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


# --------------------------------------------------------------------------- tables


def _summary_rows(items: Sequence[_Run], clfs: list[str], out: Path) -> tuple[list[str], list[list[Any]]]:
    others = clfs[1:]
    header = ["name", "status", "backbone", "seed", "freeze_requested", "frozen_share", "last_frozen_layer",
              "trainable_params", "head_train_accuracy", "head_val_loss", "head_val_accuracy", "head_test_loss",
              "head_test_accuracy"]
    header += [f"{c}_{s}_accuracy" for c in others for s in ("val", "test")]
    header += [f"{c}_test_{k}" for c in clfs for k in ("f1", "roc_auc")]
    header += ["epochs", "wall_time_s", "cached_prefix", "device", "run_dir", "error"]
    rows = []
    for r in items:
        rec = r.record
        row: dict[str, Any] = {
            "name": r.name, "status": r.status, "backbone": r.config.get("model.backbone"),
            "seed": r.config.get("seed"), "freeze_requested": r.config.get("model.freeze"),
            "frozen_share": r.frozen_share,
            "last_frozen_layer": rec.freeze.last_frozen_layer if rec else None,
            "trainable_params": rec.params.trainable if rec else None,
            "epochs": rec.history.epochs if rec else None,  # epochs actually run
            "wall_time_s": rec.timings_s.get("total") if rec else None,
            "cached_prefix": rec.prefix_cache.describe() if rec else None,
            "device": rec.environment.device if rec else None,
            "run_dir": _relative(r.dir, out) if r.dir else None, "error": r.error,
        }
        for c in clfs:
            for split in ("train", "val", "test"):  # more than the header asks for; the header picks
                row[f"{c}_{split}_accuracy"] = r.score(c, split, "accuracy")
                row[f"{c}_{split}_loss"] = r.score(c, split, "log_loss")
            row[f"{c}_test_f1"] = r.score(c, "test", "f1")
            row[f"{c}_test_roc_auc"] = r.score(c, "test", "roc_auc")
        rows.append(["" if row[k] is None else row[k] for k in header])
    return header, rows


def _relative(path: Path, out: Path) -> str:
    try:
        return os.path.relpath(Path(path).resolve(), out.resolve())
    except ValueError:  # another drive on Windows
        return str(path)


# (classifier, split, metrics.json key, column label) averaged over seeds, besides each
# other classifier's test accuracy and the wall time.
_MEAN_METRICS = [("head", "train", "accuracy", "train acc"), ("head", "val", "log_loss", "val loss"),
                 ("head", "val", "accuracy", "val acc"), ("head", "test", "accuracy", "test acc")]


def _by_setting(done: Sequence[_Run], clfs: list[str]):
    """Mean and std over seeds per setting, or None when no setting was run with several seeds.

    Returns:
        ``((header, rows), table)``: the CSV and the display table.
    """
    groups: dict[str, list[_Run]] = {}
    for r in done:
        groups.setdefault(_setting_key(r), []).append(r)
    if not any(len(g) > 1 for g in groups.values()):
        return None
    # Keys (besides backbone and freeze) that differ between settings: shown so that two
    # rows with the same backbone and freeze can be told apart.
    settings = [json.loads(k) for k in groups]
    varying = sorted(k for k in set().union(*settings) - {"model.backbone", "model.freeze"}
                     if len({json.dumps(s.get(k), default=str) for s in settings}) > 1)
    metrics = _MEAN_METRICS + [(c, "test", "accuracy", f"{c} test acc") for c in clfs[1:]]
    keys = [f"{c}_{s}_{'loss' if k == 'log_loss' else k}" for c, s, k, _ in metrics] + ["wall_time_s"]
    labels = [label for *_, label in metrics] + ["time (s)"]
    header = ["backbone", "freeze_requested", "frozen_share", "setting", "n_runs", "seeds", "runs"]
    header += [f"{k}_{s}" for k in keys for s in ("mean", "std")]
    csv_rows, shown = [], []
    for g in groups.values():
        first = g[0]
        setting = ", ".join(f"{k}={first.config.get(k)}" for k in varying)
        stats = [_mean_std([r.score(c, s, k) for r in g]) for c, s, k, _ in metrics]
        stats.append(_mean_std([r.record.timings_s.get("total") for r in g]))
        shares = [r.frozen_share for r in g]
        seeds = " ".join(str(r.config.get("seed")) for r in g)
        csv_rows.append([first.config.get("model.backbone"), first.config.get("model.freeze"),
                         sum(shares) / len(shares), setting, len(g), seeds, " ".join(r.name for r in g)]
                        + ["" if v is None else v for ms in stats for v in ms])
        digits = [4] * len(metrics) + [1]
        shown.append([str(first.config.get("model.backbone")), _fmt_freeze(first.config.get("model.freeze")),
                      _pct(sum(shares) / len(shares))] + ([setting] if varying else []) + [seeds]
                     + [_fmt_mean_std(*ms, d) for ms, d in zip(stats, digits)])
    table = _Table(["backbone", "frozen (asked)", "frozen (achieved)"] + (["setting"] if varying else [])
                   + ["seeds"] + labels, shown, "lrr" + ("l" if varying else "") + "l" + "r" * len(labels))
    return (header, csv_rows), table


def _setting_key(r: _Run) -> str:
    """The run's config without the keys in ``NOT_SETTING``, as a canonical string.

    Keys set to null are left out, so a run made before a key existed (absent) and one
    made after (null by default) fall in the same setting.
    """
    kept = {k: v for k, v in r.config.items()
            if v is not None and k.split(".", 1)[0] not in NOT_SETTING and k not in NOT_SETTING}
    return json.dumps(kept, sort_keys=True, default=str)


def _mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof=1: seeds are a sample of possible runs)."""
    v = [x for x in values if x is not None]
    if not v:
        return None, None
    mean = sum(v) / len(v)
    std = math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else None
    return mean, std


_PAIRED_HEADER = ["run", "backbone", "freeze_requested", "frozen_share", "seed", "classifier_a", "classifier_b",
                  "split", "n", "accuracy_a", "accuracy_b", "b", "c", "p_value", "diff", "diff_low", "diff_high",
                  "reading"]


def _paired(done: Sequence[_Run], clfs: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """Head vs each other classifier on each run's test split, from ``predictions.csv``.

    Returns:
        ``(rows, notes)``: one dict per comparison (keys ``_PAIRED_HEADER``), and notes
        about runs that could not be compared.
    """
    import numpy as np

    from tlexp.results.stats import bootstrap_ci, mcnemar

    rows, notes = [], []
    for r in done:
        path = r.dir / runfolder.PREDICTIONS_FILE
        others = [c for c in clfs[1:] if r.ran(c)]
        if not others:
            continue
        if not path.is_file():
            notes.append(f"{r.name}: no {runfolder.PREDICTIONS_FILE}, so its classifiers were not compared.")
            continue
        test = [p for p in files.read_csv(path) if p.get("split") == "test"]
        if not test:
            notes.append(f"{r.name}: {runfolder.PREDICTIONS_FILE} holds no test-split rows; not compared.")
            continue
        label = np.array([p["label"] for p in test])
        right_a = np.array([p.get("head") for p in test]) == label
        for c in others:
            if c not in test[0]:
                notes.append(f"{r.name}: {runfolder.PREDICTIONS_FILE} has no column {c!r}; head vs {c} not compared.")
                continue
            right_b = np.array([p[c] for p in test]) == label
            t, ci = mcnemar(right_a, right_b), bootstrap_ci(right_a, right_b)
            p = _fmt_p(t["p_value"])
            p = p if p.startswith("<") else f"={p}"
            if t["p_value"] < ALPHA:
                reading = f"{c if t['c'] > t['b'] else 'head'} better, p{p}"
            else:
                reading = f"no significant difference (p{p})"
            rows.append({"run": r.name, "backbone": r.config.get("model.backbone"),
                         "freeze_requested": r.config.get("model.freeze"),
                         "frozen_share": r.frozen_share, "seed": r.config.get("seed"),
                         "classifier_a": "head", "classifier_b": c, "split": "test", "n": t["n"],
                         "accuracy_a": t["accuracy_a"], "accuracy_b": t["accuracy_b"], "b": t["b"], "c": t["c"],
                         "p_value": t["p_value"], "diff": ci["diff"]["estimate"], "diff_low": ci["diff"]["low"],
                         "diff_high": ci["diff"]["high"], "reading": reading})
    return rows, notes


def _sections(items, clfs, by_setting, paired, notes) -> list[tuple[str, str, _Table | None]]:
    """(heading, intro paragraph, table) of each report section, shared by Markdown and HTML."""
    others = clfs[1:]
    problems = [r for r in items if r.status != "finished"]
    rows = []
    for r in items:
        cells = [r.name, str(r.config.get("model.backbone", "")), _fmt_freeze(r.config.get("model.freeze")),
                 _pct(r.frozen_share), _fmt(r.config.get("seed"), 0),
                 _fmt(r.score("head", "train", "accuracy")), _fmt(r.score("head", "val", "log_loss")),
                 _fmt(r.score("head", "val", "accuracy")), _fmt(r.score("head", "test", "accuracy"))]
        cells += [_fmt(r.score(c, "test", "accuracy")) for c in others]
        rows.append(cells + ([r.status] if problems else []))
    results = _Table(["run", "backbone", "frozen (asked)", "frozen (achieved)", "seed", "train acc", "val loss",
                      "val acc", "test acc"] + [f"{c} test acc" for c in others] + (["status"] if problems else []),
                     rows, "llrrr" + "r" * (4 + len(others)) + ("l" if problems else ""),
                     {i for i, r in enumerate(items) if r.status != "finished"})
    intro = ("Train/val/test columns without a classifier name are the dense head's"
             + (f"; {', '.join(others)}: classifiers fitted on the head's penultimate activations" if others else "")
             + ". Frozen: share of backbone parameters, as asked and as achieved by freezing whole layers.")
    sections = [("Results", intro, results)]
    if by_setting:
        sections.append(("Mean ± std over seeds", "One row per setting (every config key except the seed); "
                         "std is the sample standard deviation over seeds.", by_setting[1]))
    if paired or notes:
        k = len(paired)
        intro = (f"Test split, same images for both. b = head right and the other wrong, c = the reverse; "
                 f"p = exact McNemar test; Δ = other − head accuracy with a paired bootstrap 95 % CI. "
                 f"Reading at α = {ALPHA}")
        intro += (f"; with {k} tests, about {k * ALPHA:.1f} would read as significant by chance alone."
                  if k > 1 else ".")
        intro += "".join(f"\n\n{n}" for n in notes)
        table = _Table(["run", "head vs", "n", "b", "c", "p", "Δ accuracy [95 % CI]", "reading"],
                       [[p["run"], p["classifier_b"], str(p["n"]), str(p["b"]), str(p["c"]), _fmt_p(p["p_value"]),
                         f"{p['diff']:+.4f} [{p['diff_low']:+.4f}, {p['diff_high']:+.4f}]", p["reading"]]
                        for p in paired], "llrrrrrl") if paired else None
        sections.append(("Head vs other classifiers", intro, table))
    if problems:
        sections.append(("Failed and unfinished runs", "", _Table(
            ["run", "backbone", "frozen (asked)", "seed", "status", "error"],
            [[r.name, str(r.config.get("model.backbone", "")), _fmt_freeze(r.config.get("model.freeze")),
              _fmt(r.config.get("seed"), 0), r.status, r.error] for r in problems], "llrrll")))
    return sections


def _count_line(items: Sequence[_Run]) -> str:
    n = {s: sum(r.status == s for r in items) for s in ("finished", "failed", "unfinished")}
    parts = [f"{v} {k}" for k, v in n.items() if v]
    return f"{len(items)} run(s): {', '.join(parts) or 'none'}."


# --------------------------------------------------------------------------- formatting


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None or x == "":
        return ""
    if isinstance(x, float) and digits:
        return f"{x:.{digits}f}"
    return str(x)


def _pct(share: Any, whole: bool = False) -> str:
    """A share as a percentage: one decimal, or none with ``whole`` if it is a whole percent."""
    s = _share(share)
    if s is None:
        return ""
    pct = 100 * s
    return f"{pct:.0f} %" if whole and abs(pct - round(pct)) < 1e-9 else f"{pct:.1f} %"


def _fmt_freeze(freeze: Any) -> str:
    """A requested freeze: a share as a percentage, a layer name as 'through <layer>'."""
    if freeze is None:
        return ""
    return _pct(freeze, whole=True) if _share(freeze) is not None else f"through {freeze}"


def _fmt_mean_std(mean: float | None, std: float | None, digits: int) -> str:
    if mean is None:
        return ""
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def _fmt_p(p: float) -> str:
    """Two significant digits below 0.1 (0.031, 0.0024), two decimals above (0.41, 1.00)."""
    if p < 0.001:
        return "<0.001"
    return f"{p:.2f}" if p >= 0.095 else f"{p:.2g}"


# --------------------------------------------------------------------------- HTML

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:1400px;
padding:0 1rem;color:#1f2328;background:#fff}
h1{margin-bottom:.2rem}h2{margin-top:2rem;border-bottom:1px solid #d0d7de;padding-bottom:.25rem}
.meta{color:#59636e;margin-top:0}.intro{color:#3d444d;max-width:80ch}
.scroll{overflow-x:auto}table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:13.5px}
th,td{padding:.25rem .5rem;border-bottom:1px solid #d8dee4}
th{background:#f6f8fa;text-align:left;vertical-align:bottom;min-width:4.5em}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}tbody tr:hover{background:#f6f8fa}
tr.marked td{background:#fff8c5}
figure{margin:1rem 0 2rem}figure img{max-width:100%;height:auto;border:1px solid #d8dee4}
figcaption{color:#59636e;font-size:14px}details{margin:.3rem 0}summary{cursor:pointer}
pre{background:#f6f8fa;padding:.6rem;overflow-x:auto;font-size:13px}
"""

# Counts for the browser test (tests/test_report_html.py); harmless for a reader.
_SCRIPT = """window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  document.body.dataset.imagesTotal = imgs.length;
  document.body.dataset.imagesLoaded = imgs.filter(function (i) { return i.naturalWidth > 0; }).length;
  document.body.dataset.tables = document.getElementsByTagName("table").length;
});"""


def _html(title: str, stamp: str, counts: str, sections, out: Path, figures, items: Sequence[_Run]) -> str:
    e = html.escape
    parts = [f"<h1>{e(title)}</h1>", f'<p class="meta">Generated {e(stamp)}. {e(counts)}</p>']
    # The charts show the means over seeds: they go right after the table of those (or
    # after the results when every setting ran once).
    charts_after = "Mean ± std over seeds" if any(h == "Mean ± std over seeds" for h, *_ in sections) else "Results"
    for heading, intro, table in sections:
        parts.append(f"<h2>{e(heading)}</h2>")
        parts += [f'<p class="intro">{e(p)}</p>' for p in intro.split("\n\n") if p]
        if table:
            parts.append(table.html())
        if figures and heading == charts_after:
            parts.append("<h2>Charts</h2>")
            for name, caption in figures:
                data = base64.b64encode((out / name).read_bytes()).decode("ascii")
                parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{e(caption)}">'
                             f"<figcaption>{e(caption)}</figcaption></figure>")
    configs = [r for r in items if r.config_text]
    if configs:
        parts.append("<h2>Run configs</h2>")
        for r in configs:
            where = f" — {_relative(r.dir, out)}" if r.dir else ""
            parts.append(f"<details><summary>{e(r.name)} ({e(r.config_source)}{e(where)})</summary>"
                         f"<pre>{e(r.config_text)}</pre></details>")
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{e(title)}</title>\n'
            f"<style>{_CSS}</style>\n</head>\n<body>\n{body}\n<script>\n{_SCRIPT}\n</script>\n</body>\n</html>\n")
