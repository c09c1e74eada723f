"""Head vs every other classifier of a run on the same test images: tests, intervals, Holm. No TensorFlow.

Each run's ``predictions.csv`` says which test images each classifier got right; the
paired comparison (:func:`tlexp.results._stats.mcnemar`) needs nothing more. All
head-vs-other comparisons of a report form one family for Holm's correction
(:func:`holm_family` says so in the report), so adding runs changes every ``p_holm``.
Each comparison is a :class:`Comparison`, one row of ``paired.csv``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields
from typing import Any

from tlexp import files, runfolder
from tlexp.results._runs import ReportRun
from tlexp.results._settings import ALPHA, LEVEL, LEVEL_TEXT
from tlexp.results._stats import McNemarResult
from tlexp.results._tables import Section, Table, fmt_p

HEADING = "Head vs other classifiers"


@dataclass(frozen=True)
class Comparison:
    """Head vs one other classifier of one run, on the run's test split: one row of ``paired.csv``.

    The fields are the file's columns, in its order. ``b`` counts the images only
    ``classifier_a`` (the head) got right, ``c`` those only ``classifier_b`` got right;
    ``diff = accuracy_b - accuracy_a`` with Tango's interval ``[diff_low, diff_high]``;
    ``p_holm`` is ``p_value`` after Holm's correction over every comparison of the report,
    and ``reading`` says in words what the two p-values say (:func:`reading`).
    """

    run: str
    backbone: Any
    freeze_requested: Any  # a share or a layer name, as the config asked
    frozen_share: float | None
    seed: Any
    classifier_a: str
    classifier_b: str
    split: str
    n: int
    accuracy_a: float
    accuracy_b: float
    b: int
    c: int
    z: float
    p_value: float
    p_holm: float
    diff: float
    diff_low: float
    diff_high: float
    test: str
    interval: str
    reading: str

    @property
    def winner(self) -> str:
        """The classifier that got more of the disputed images right (``classifier_a`` on a tie)."""
        return self.classifier_b if self.c > self.b else self.classifier_a

    def csv_row(self) -> list[Any]:
        """The row of ``paired.csv``, in the order of ``PAIRED_COLUMNS``."""
        return list(astuple(self))


PAIRED_COLUMNS = [f.name for f in fields(Comparison)]  # the header of paired.csv


def paired_comparisons(done: Sequence[ReportRun], clfs: list[str]) -> tuple[list[Comparison], list[str]]:
    """Head vs each other classifier on each run's test split, from ``predictions.csv``.

    Every comparison of the report is one hypothesis of one family: ``p_holm`` is the
    Holm-adjusted p-value over all of them, and the reading says whether a difference
    survives it.

    Returns:
        ``(comparisons, notes)``: the comparisons in run order, and notes about runs that
        could not be compared.
    """
    import numpy as np

    from tlexp.results._stats import holm, mcnemar

    tests: list[tuple[ReportRun, str, McNemarResult]] = []
    notes = []
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
            tests.append((r, c, mcnemar(right_a, np.array([p[c] for p in test]) == label, level=LEVEL)))
    p_holm = holm([t.p_value for _, _, t in tests])
    return [_comparison(r, c, t, ph) for (r, c, t), ph in zip(tests, p_holm, strict=True)], notes


def _comparison(r: ReportRun, clf: str, t: McNemarResult, p_holm: float) -> Comparison:
    return Comparison(
        run=r.name,
        backbone=r.config.get("model.backbone"),
        freeze_requested=r.config.get("model.freeze"),
        frozen_share=r.frozen_share,
        seed=r.config.get("seed"),
        classifier_a="head",
        classifier_b=clf,
        split="test",
        n=t.n,
        accuracy_a=t.accuracy_a,
        accuracy_b=t.accuracy_b,
        b=t.b,
        c=t.c,
        z=t.z,
        p_value=t.p_value,
        p_holm=p_holm,
        diff=t.diff,
        diff_low=t.diff_low,
        diff_high=t.diff_high,
        test=t.test,
        interval=t.interval,
        reading=reading(t.p_value, p_holm, clf if t.c > t.b else "head"),
    )


def reading(p_value: float, p_holm: float, better: str) -> str:
    """A comparison's p-values in words, never printing a p on the wrong side of ``ALPHA``.

    Args:
        p_value: The comparison's own p-value.
        p_holm: The same after Holm's correction.
        better: The classifier that got more of the disputed images right.
    """
    if p_value >= ALPHA:
        return f"no significant difference (p{_eq(p_value)})"
    if p_holm < ALPHA:
        return f"{better} better, p{_eq(p_value)}, survives Holm (p{_eq(p_holm)})"
    return f"{better} ahead at p{_eq(p_value)}, but not after Holm's correction (p{_eq(p_holm)})"


def _eq(p: float) -> str:
    text = fmt_p(p, ALPHA)
    return text if text[0] in "<>" else f"={text}"


def _intro(paired: list[Comparison], notes: list[str]) -> str:
    text = (
        "Test split, same images for both. b = head right and the other wrong, c = the reverse. "
        "p: McNemar's score test, z = (c − b) / √(b + c) (asymptotic, no continuity correction). "
        f"Δ = other − head accuracy with Tango's {LEVEL_TEXT} score interval, which inverts the same statistic: "
        f"p < {ALPHA} exactly when the interval excludes 0."
    )
    k = len(paired)
    if k:
        survivors = [p for p in paired if p.p_holm < ALPHA]
        text += (
            f"\n\nHolm p: Holm's step-down correction over all {k} comparison(s) of this report, so that the "
            f"chance of any false positive among them stays below {ALPHA}. {holm_family(paired)} "
            + (
                f"{len(survivors)} of {k} difference(s) survive it: "
                + "; ".join(f"{p.run} {p.winner} better" for p in survivors)
                + "."
                if survivors
                else f"None of the {k} differences survives it."
            )
        )
    return text + "".join(f"\n\n{n}" for n in notes)


def holm_family(paired: list[Comparison]) -> str:
    """Which comparisons form Holm's family, in words: the p-values it adjusts depend on it."""
    runs = len({p.run for p in paired})
    others = ", ".join(dict.fromkeys(p.classifier_b for p in paired))
    return (
        f"Holm's family is every head-vs-other comparison in this report: {len(paired)}, one per run and "
        f"classifier ({runs} run(s) with {runfolder.PREDICTIONS_FILE}; head vs {others}). A report over more "
        "or fewer runs has another family, and so other Holm p-values. The answer's leader-vs-runner-up "
        "tests are not in it."
    )


def _table(paired: list[Comparison]) -> Table | None:
    if not paired:
        return None
    return Table(
        ["run", "head vs", "n", "b", "c", "p", "Holm p", f"Δ accuracy [{LEVEL_TEXT} CI]", "reading"],
        [
            [
                p.run,
                p.classifier_b,
                str(p.n),
                str(p.b),
                str(p.c),
                fmt_p(p.p_value, ALPHA),
                fmt_p(p.p_holm, ALPHA),
                f"{p.diff:+.4f} [{p.diff_low:+.4f}, {p.diff_high:+.4f}]",
                p.reading,
            ]
            for p in paired
        ],
        "llrrrrrrl",
    )


def paired_section(paired: list[Comparison], notes: list[str]) -> Section | None:
    """The report section of the comparisons, or None when there is nothing to say."""
    if not (paired or notes):
        return None
    return Section(HEADING, _intro(paired, notes), _table(paired))
