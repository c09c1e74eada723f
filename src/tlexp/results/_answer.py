"""The report's first section: the study's answer, written from the numbers and never beyond them. No TensorFlow.

Every sentence here is a reading of a number the tables below also show: the best
setting per classifier and the best freeze share per backbone, each with its interval
and a paired test of its lead over the runner-up (:mod:`tlexp.results._leads`: McNemar's
score test on the same test images for one seed, a paired t-test over seeds for
several); how many head-vs-classifier differences survive Holm's correction, and over
which family; where strategies vary, the best strategy per backbone against every other
one, Holm-corrected within the backbone (:mod:`tlexp.results._strategies`); and what each
setting's accuracy cost (:mod:`tlexp.results._cost`). A lead is called real only where
its test says so (p < alpha, the interval excluding 0; for strategies, the Holm-adjusted
p); otherwise the text says the data cannot separate the two.
"""

from __future__ import annotations

from collections.abc import Sequence

from tlexp import runfolder
from tlexp.results._cost import cost_paragraphs
from tlexp.results._leads import CANNOT_SEPARATE, ScoredImages, compare
from tlexp.results._paired import Comparison, holm_family
from tlexp.results._settings import ALPHA, LEVEL_TEXT, Estimate, Setting
from tlexp.results._strategies import HOLM_REFERENCE, Row, StrategyTable
from tlexp.results._tables import Section, fmt_freeze, fmt_p

HEADING = "The answer"
INTRO = (
    f"Test accuracy with its interval: for a setting run with one seed, the {LEVEL_TEXT} Wilson score "
    "interval over its test images; for several seeds, the mean over the seeds and the lowest to highest "
    "seed. A lead over the runner-up is tested on what the two share: with one seed each, the same test "
    f"images (McNemar's score test; the lead, leader minus runner-up, with Tango's {LEVEL_TEXT} score "
    "interval); with several seeds, the seeds both ran (Student's paired t-test of the per-seed accuracy "
    f"differences, with its {LEVEL_TEXT} t interval). Each interval inverts its test, so p < {ALPHA} exactly "
    "when it excludes 0, and only then is a lead called real. Each of these tests is a single comparison "
    "of a pair chosen after ranking, not corrected for the ranking or for the report's other tests, and "
    "not part of Holm's family below."
)


def answer_section(
    settings: Sequence[Setting],
    clfs: list[str],
    paired: list[Comparison],
    strategies: Sequence[StrategyTable] = (),
    images: ScoredImages | None = None,
) -> Section:
    """The answer, in paragraphs (lines starting "- " are list items), without a table.

    Args:
        strategies: The strategy tables (:func:`tlexp.results._strategies.strategy_tables`),
            none where no strategy key but the freeze varies.
        images: The predictions already read (a new reader if None).
    """
    if not settings:
        return Section(HEADING, "No finished runs: nothing to answer yet.")
    images = ScoredImages() if images is None else images
    paragraphs = [INTRO, _best_per_classifier(settings, clfs, images)]
    paragraphs += [_best_strategy(strategies), _best_freeze(settings, images, skip_single=bool(strategies))]
    paragraphs += [_holm_lines(clfs, paired), cost_paragraphs(settings, images)]
    return Section(HEADING, "\n\n".join(p for p in paragraphs if p))


def _ranked(settings: Sequence[Setting], clf: str) -> list[tuple[Estimate, Setting]]:
    """Settings where ``clf`` ran, best test accuracy first (ties keep the report's order)."""
    found = [(s.accuracy(clf), s) for s in settings]
    return sorted([(e, s) for e, s in found if e is not None], key=lambda es: -es[0].value)


def _best_per_classifier(settings: Sequence[Setting], clfs: list[str], images: ScoredImages) -> str:
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
            line += f"; runner-up {r.label()} ({runner.value:.4f}): {compare(s, r, clf, images).text()}."
        lines.append(line)
    return "\n".join(lines)


def _by_backbone(settings: Sequence[Setting]) -> dict[str, list[Setting]]:
    """Settings by backbone (and variant, when other keys differ), in report order."""
    groups: dict[str, list[Setting]] = {}
    for s in settings:
        groups.setdefault(s.backbone + (f" ({s.variant})" if s.variant else ""), []).append(s)
    return groups


def _best_freeze(settings: Sequence[Setting], images: ScoredImages, *, skip_single: bool = False) -> str:
    """The best freeze share per backbone (and variant); ``skip_single``: leave out the variants
    run at one share (where strategies vary, the strategy paragraph covers them), "" if none is left."""
    lines = ["Best freeze share per backbone (head test accuracy):"]
    for name, group in _by_backbone(settings).items():
        ranked = _ranked(group, "head")
        if not ranked or (skip_single and len(ranked) == 1):
            continue
        best, s = ranked[0]
        if len(ranked) == 1:
            lines.append(f"- {name}: only {fmt_freeze(s.freeze)} frozen was run, {best.text()}: nothing to compare.")
            continue
        runner, r = ranked[1]
        lines.append(
            f"- {name}: {fmt_freeze(s.freeze)} frozen did best, {best.text()} ({best.describe()}); runner-up "
            f"{fmt_freeze(r.freeze)} frozen ({runner.value:.4f}): {compare(s, r, 'head', images).text()}."
        )
    return "\n".join(lines) if len(lines) > 1 else ""


def _best_strategy(tables: Sequence[StrategyTable]) -> str:
    """The best strategy per backbone, and whether Holm's correction lets it beat each other one."""
    if not tables:
        return ""
    lines = [
        "Best strategy per backbone (head test accuracy; each other strategy tested against the best as in the "
        f"Strategies section, Holm's correction ({HOLM_REFERENCE}) over that backbone's comparisons, α = {ALPHA}):"
    ]
    return "\n".join(lines + [_strategy_line(t) for t in tables])


def _strategy_line(t: StrategyTable) -> str:
    """One backbone's best strategy: beats every other one, or which ones the data cannot separate from it."""
    best, e = t.best.label, t.best.estimate
    estimate = f"{e.text()} ({e.describe()})"
    others = [r for r in t.rows if r is not t.best]
    if not others:
        return f"- {t.name}: only {best} was run, {estimate}: nothing to compare."
    beaten = [r for r in others if r.best_ahead()]
    apart = [r for r in others if r.tested and not r.best_ahead()]
    missing = [r for r in others if not r.tested]
    if beaten and not apart:
        tested = "it could be tested against" if missing else "tested"
        line = f"- {t.name}: {best} beats every other strategy {tested} on {t.name} ({_holm_max(beaten)}), {estimate}"
    else:
        line = f"- {t.name}: {best} did best, {estimate}"
        level = [r for r in apart if r.p_holm >= ALPHA]
        ahead = [r for r in apart if r.p_holm < ALPHA]  # better than the best on the seeds both ran
        if level:
            line += f"; against {_listed(level)}, {CANNOT_SEPARATE}"
        if ahead:
            line += f"; {_listed(ahead)} did better on the seeds both ran"
        if beaten:
            line += f"; it beats {_listed(beaten)}"
    if missing:
        line += "; " + "; ".join(f"{r.label} {r.lead.why_not}" for r in missing)
    return line + "."


def _listed(rows: Sequence[Row]) -> str:
    """'f30 (Holm-adjusted p = 0.31), f0 biases (Holm-adjusted p = 0.12)'."""
    return ", ".join(f"{r.label} (Holm-adjusted p {_p_text(r.p_holm)})" for r in rows)


def _holm_max(rows: Sequence[Row]) -> str:
    """'Holm-adjusted p ≤ 0.012' (the largest of the rows'), or '< 0.001'."""
    worst = max(r.p_holm for r in rows)
    text = fmt_p(worst, ALPHA)
    return f"Holm-adjusted p {text[0]} {text[1:]}" if text[0] in "<>" else f"Holm-adjusted p ≤ {text}"


def _p_text(p: float) -> str:
    text = fmt_p(p, ALPHA)
    return f"{text[0]} {text[1:]}" if text[0] in "<>" else f"= {text}"


def _holm_lines(clfs: list[str], paired: list[Comparison]) -> str:
    if len(clfs) < 2:
        return ""
    total = len(paired)
    if not total:
        return f"Head vs the other classifiers: not compared (no run has a {runfolder.PREDICTIONS_FILE} with them)."
    lines = [
        f"Head vs the other classifiers, same test images (McNemar's score test, Holm's correction, "
        f"α = {ALPHA}). {holm_family(paired)}"
    ]
    for clf in clfs[1:]:
        rows = [p for p in paired if p.classifier_b == clf]
        if not rows:
            lines.append(f"- head vs {clf}: not compared (no {runfolder.PREDICTIONS_FILE} with both).")
            continue
        kept = [p for p in rows if p.p_holm < ALPHA]
        text = f"- head vs {clf}: {len(kept)} of {len(rows)} difference(s) survive Holm's correction"
        if kept:
            text += ": " + "; ".join(
                f"{p.winner} better in {p.run} (Δ = {p.diff:+.4f} [{p.diff_low:+.4f}, "
                f"{p.diff_high:+.4f}], Holm p = {fmt_p(p.p_holm, ALPHA)})"
                for p in kept
            )
        rest = [p for p in rows if p.p_holm >= ALPHA]
        if rest:
            text += (f". In the other {len(rest)} run(s)" if kept else f": in all {len(rest)} run(s)") + (
                f", {CANNOT_SEPARATE} at this level"
            )
            raw = [p.run for p in rest if p.p_value < ALPHA]
            if raw:
                text += f" ({', '.join(raw)} had p < {ALPHA} before the correction)"
        text += "."
        lines.append(text)
    return "\n".join(lines)
