"""The report's first section: the study's answer, written from the numbers and never beyond them. No TensorFlow.

Every sentence here is a reading of a number the tables below also show: the best
setting per classifier with its interval, the best freeze share per backbone and whether
its lead is within that interval, how many head-vs-classifier differences survive Holm's
correction, and accuracy per minute of training. Where an interval holds the runner-up,
the text says the data cannot separate them; it never calls a lead real that the
interval does not support.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tlexp.results import runfolder
from tlexp.results.paired import _winner
from tlexp.results.summary import ALPHA, LEVEL_TEXT, _Estimate, _Setting
from tlexp.results.tables import _fmt_freeze, fmt_p

HEADING = "The answer"
CANNOT_SEPARATE = "the data cannot separate them"


def _answer_section(
    settings: Sequence[_Setting], clfs: list[str], paired: list[dict[str, Any]]
) -> tuple[str, str, None]:
    """(heading, text, no table): the answer, in paragraphs; lines starting "- " are list items."""
    if not settings:
        return HEADING, "No finished runs: nothing to answer yet.", None
    paragraphs = [
        f"Test accuracy with its interval: for a setting run with one seed, the {LEVEL_TEXT} Wilson score "
        "interval over its test images; for several seeds, the mean over the seeds and the lowest to "
        "highest seed. A lead that stays within the leader's interval is one the data cannot separate "
        "from the runner-up.",
        _best_per_classifier(settings, clfs),
        _best_freeze(settings),
    ]
    paragraphs += [p for p in (_holm_lines(clfs, paired), _per_minute(settings)) if p]
    return HEADING, "\n\n".join(paragraphs), None


def _ranked(settings: Sequence[_Setting], clf: str) -> list[tuple[_Estimate, _Setting]]:
    """Settings where ``clf`` ran, best test accuracy first (ties keep the report's order)."""
    found = [(s.accuracy(clf), s) for s in settings]
    return sorted([(e, s) for e, s in found if e is not None], key=lambda es: -es[0].value)


def _lead(best: _Estimate, runner: _Estimate, runner_label: str) -> str:
    """How the runner-up stands against the leader's interval."""
    if runner.value >= best.low:
        return f"the runner-up, {runner_label} ({runner.value:.4f}), lies within this interval: {CANNOT_SEPARATE}."
    return (
        f"the runner-up, {runner_label} ({runner.value:.4f}), lies below this interval "
        f"(lead {best.value - runner.value:.4f})."
    )


def _best_per_classifier(settings: Sequence[_Setting], clfs: list[str]) -> str:
    lines = ["Best setting per classifier (test accuracy):"]
    for clf in clfs:
        ranked = _ranked(settings, clf)
        if not ranked:
            continue
        best, s = ranked[0]
        line = f"- {clf}: {s.label()}, {best.text()} ({best.describe()})"
        if len(ranked) == 1:
            line += "; the only setting it ran in."
        else:
            runner, r = ranked[1]
            line += "; " + _lead(best, runner, r.label())
        lines.append(line)
    return "\n".join(lines)


def _by_backbone(settings: Sequence[_Setting]) -> dict[str, list[_Setting]]:
    """Settings by backbone (and variant, when other keys differ), in report order."""
    groups: dict[str, list[_Setting]] = {}
    for s in settings:
        groups.setdefault(s.backbone + (f" ({s.variant})" if s.variant else ""), []).append(s)
    return groups


def _best_freeze(settings: Sequence[_Setting]) -> str:
    lines = ["Best freeze share per backbone (head test accuracy):"]
    for name, group in _by_backbone(settings).items():
        ranked = _ranked(group, "head")
        if not ranked:
            continue
        best, s = ranked[0]
        if len(ranked) == 1:
            lines.append(f"- {name}: only {_fmt_freeze(s.freeze)} frozen was run, {best.text()}: nothing to compare.")
            continue
        runner, r = ranked[1]
        lead = best.value - runner.value
        verdict = (
            f"within its interval: {CANNOT_SEPARATE}."
            if runner.value >= best.low
            else f"beyond its interval, which reaches down to {best.low:.4f}."
        )
        lines.append(
            f"- {name}: {_fmt_freeze(s.freeze)} frozen did best, {best.text()} ({best.describe()}); its lead over "
            f"{_fmt_freeze(r.freeze)} frozen ({runner.value:.4f}) is {lead:.4f}, {verdict}"
        )
    return "\n".join(lines)


def _holm_lines(clfs: list[str], paired: list[dict[str, Any]]) -> str:
    if len(clfs) < 2:
        return ""
    total = len(paired)
    if not total:
        return f"Head vs the other classifiers: not compared (no run has a {runfolder.PREDICTIONS_FILE} with them)."
    lines = [
        f"Head vs the other classifiers, same test images (McNemar's score test, Holm's correction over "
        f"all {total} comparison(s) of this report, α = {ALPHA}):"
    ]
    for clf in clfs[1:]:
        rows = [p for p in paired if p["classifier_b"] == clf]
        if not rows:
            lines.append(f"- head vs {clf}: not compared (no {runfolder.PREDICTIONS_FILE} with both).")
            continue
        kept = [p for p in rows if p["p_holm"] < ALPHA]
        text = f"- head vs {clf}: {len(kept)} of {len(rows)} difference(s) survive Holm's correction"
        if kept:
            text += ": " + "; ".join(
                f"{_winner(p)} better in {p['run']} (Δ = {p['diff']:+.4f} [{p['diff_low']:+.4f}, "
                f"{p['diff_high']:+.4f}], Holm p = {fmt_p(p['p_holm'], ALPHA)})"
                for p in kept
            )
        rest = [p for p in rows if p["p_holm"] >= ALPHA]
        if rest:
            text += (f". In the other {len(rest)} run(s)" if kept else f": in all {len(rest)} run(s)") + (
                f", {CANNOT_SEPARATE} at this level"
            )
            raw = [p["run"] for p in rest if p["p_value"] < ALPHA]
            if raw:
                text += f" ({', '.join(raw)} had p < {ALPHA} before the correction)"
        text += "."
        lines.append(text)
    return "\n".join(lines)


def _per_minute(settings: Sequence[_Setting]) -> str:
    lines = [
        "Accuracy per minute of training (head test accuracy / minutes of the train phase, means over seeds; "
        "higher is cheaper):"
    ]
    for name, group in _by_backbone(settings).items():
        parts = []
        for s in sorted(group, key=lambda s: s.share):
            acc, seconds = s.accuracy("head"), s.mean(lambda r: r.train_seconds)[0]
            if acc is None or not seconds:
                continue
            minutes = seconds / 60
            parts.append(
                f"{_fmt_freeze(s.freeze)} frozen: {acc.value:.4f} in {minutes:.2f} min = {acc.value / minutes:.2f}/min"
            )
        lines.append(f"- {name}: " + ("; ".join(parts) if parts else "train time not recorded."))
    return "\n".join(lines)
