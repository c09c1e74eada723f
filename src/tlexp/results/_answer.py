"""The report's first section: the study's answer, written from the numbers and never beyond them. No TensorFlow.

Every sentence here is a reading of a number the tables below also show: the best
setting per classifier and the best freeze share per backbone, each with its interval
and a paired test of its lead over the runner-up (:mod:`tlexp.results._leads`: McNemar's
score test on the same test images for one seed, a paired t-test over seeds for
several); how many head-vs-classifier differences survive Holm's correction, and over
which family; and what each setting's accuracy cost (:mod:`tlexp.results._cost`). A lead
is called real only where its test says so (p < alpha, the interval excluding 0);
otherwise the text says the data cannot separate the two.
"""

from __future__ import annotations

from collections.abc import Sequence

from tlexp import runfolder
from tlexp.results._cost import cost_paragraphs
from tlexp.results._leads import CANNOT_SEPARATE, ScoredImages, compare
from tlexp.results._paired import Comparison, holm_family
from tlexp.results._settings import ALPHA, LEVEL_TEXT, Estimate, Setting
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


def answer_section(settings: Sequence[Setting], clfs: list[str], paired: list[Comparison]) -> Section:
    """The answer, in paragraphs (lines starting "- " are list items), without a table."""
    if not settings:
        return Section(HEADING, "No finished runs: nothing to answer yet.")
    images = ScoredImages()
    paragraphs = [INTRO, _best_per_classifier(settings, clfs, images), _best_freeze(settings, images)]
    paragraphs += [p for p in (_holm_lines(clfs, paired), cost_paragraphs(settings, images)) if p]
    return Section(HEADING, "\n\n".join(paragraphs))


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


def _best_freeze(settings: Sequence[Setting], images: ScoredImages) -> str:
    lines = ["Best freeze share per backbone (head test accuracy):"]
    for name, group in _by_backbone(settings).items():
        ranked = _ranked(group, "head")
        if not ranked:
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
    return "\n".join(lines)


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
