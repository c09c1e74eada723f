"""Head vs every other classifier of a run on the same test images: tests, intervals, Holm. No TensorFlow.

Each run's ``predictions.csv`` says which test images each classifier got right; the
paired comparison (:func:`tlexp.results._stats.mcnemar`) needs nothing more. All
head-vs-other comparisons of a report form one family for Holm's correction
(:func:`holm_family` says so in the report), so adding runs changes every ``p_holm``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tlexp import files, runfolder
from tlexp.results._summary import ALPHA, LEVEL, LEVEL_TEXT, _Run
from tlexp.results._tables import _Table, fmt_p

HEADING = "Head vs other classifiers"

_PAIRED_HEADER = [
    "run",
    "backbone",
    "freeze_requested",
    "frozen_share",
    "seed",
    "classifier_a",
    "classifier_b",
    "split",
    "n",
    "accuracy_a",
    "accuracy_b",
    "b",
    "c",
    "z",
    "p_value",
    "p_holm",
    "diff",
    "diff_low",
    "diff_high",
    "test",
    "interval",
    "reading",
]


def _paired(done: Sequence[_Run], clfs: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """Head vs each other classifier on each run's test split, from ``predictions.csv``.

    Every comparison of the report is one hypothesis of one family: ``p_holm`` is the
    Holm-adjusted p-value over all of them, and the reading says whether a difference
    survives it.

    Returns:
        ``(rows, notes)``: one dict per comparison (keys ``_PAIRED_HEADER``), and notes
        about runs that could not be compared.
    """
    import numpy as np

    from tlexp.results._stats import holm, mcnemar

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
            t = mcnemar(right_a, np.array([p[c] for p in test]) == label, level=LEVEL)
            rows.append(
                {
                    "run": r.name,
                    "backbone": r.config.get("model.backbone"),
                    "freeze_requested": r.config.get("model.freeze"),
                    "frozen_share": r.frozen_share,
                    "seed": r.config.get("seed"),
                    "classifier_a": "head",
                    "classifier_b": c,
                    "split": "test",
                    **{k: getattr(t, k) for k in ("n", "accuracy_a", "accuracy_b", "b", "c", "z", "p_value")},
                    **{k: getattr(t, k) for k in ("diff", "diff_low", "diff_high", "test", "interval")},
                }
            )
    for row, p_holm in zip(rows, holm([row["p_value"] for row in rows]), strict=True):
        row["p_holm"] = p_holm
        row["reading"] = _reading(row)
    return rows, notes


def _reading(row: dict[str, Any]) -> str:
    p, p_holm = row["p_value"], row["p_holm"]
    if p >= ALPHA:
        return f"no significant difference (p{_eq(p)})"
    better = row["classifier_b"] if row["c"] > row["b"] else "head"
    if p_holm < ALPHA:
        return f"{better} better, p{_eq(p)}, survives Holm (p{_eq(p_holm)})"
    return f"{better} ahead at p{_eq(p)}, but not after Holm's correction (p{_eq(p_holm)})"


def _eq(p: float) -> str:
    text = fmt_p(p, ALPHA)
    return text if text[0] in "<>" else f"={text}"


def _paired_intro(paired: list[dict[str, Any]], notes: list[str]) -> str:
    text = (
        "Test split, same images for both. b = head right and the other wrong, c = the reverse. "
        "p: McNemar's score test, z = (c − b) / √(b + c) (asymptotic, no continuity correction). "
        f"Δ = other − head accuracy with Tango's {LEVEL_TEXT} score interval, which inverts the same statistic: "
        f"p < {ALPHA} exactly when the interval excludes 0."
    )
    k = len(paired)
    if k:
        survivors = [p for p in paired if p["p_holm"] < ALPHA]
        text += (
            f"\n\nHolm p: Holm's step-down correction over all {k} comparison(s) of this report, so that the "
            f"chance of any false positive among them stays below {ALPHA}. {holm_family(paired)} "
            + (
                f"{len(survivors)} of {k} difference(s) survive it: "
                + "; ".join(f"{p['run']} {_winner(p)} better" for p in survivors)
                + "."
                if survivors
                else f"None of the {k} differences survives it."
            )
        )
    return text + "".join(f"\n\n{n}" for n in notes)


def holm_family(paired: list[dict[str, Any]]) -> str:
    """Which comparisons form Holm's family, in words: the p-values it adjusts depend on it."""
    runs = len({p["run"] for p in paired})
    others = ", ".join(dict.fromkeys(p["classifier_b"] for p in paired))
    return (
        f"Holm's family is every head-vs-other comparison in this report: {len(paired)}, one per run and "
        f"classifier ({runs} run(s) with {runfolder.PREDICTIONS_FILE}; head vs {others}). A report over more "
        "or fewer runs has another family, and so other Holm p-values. The answer's leader-vs-runner-up "
        "tests are not in it."
    )


def _winner(p: dict[str, Any]) -> str:
    return p["classifier_b"] if p["c"] > p["b"] else "head"


def _paired_table(paired: list[dict[str, Any]]) -> _Table | None:
    if not paired:
        return None
    return _Table(
        ["run", "head vs", "n", "b", "c", "p", "Holm p", f"Δ accuracy [{LEVEL_TEXT} CI]", "reading"],
        [
            [
                p["run"],
                p["classifier_b"],
                str(p["n"]),
                str(p["b"]),
                str(p["c"]),
                fmt_p(p["p_value"], ALPHA),
                fmt_p(p["p_holm"], ALPHA),
                f"{p['diff']:+.4f} [{p['diff_low']:+.4f}, {p['diff_high']:+.4f}]",
                p["reading"],
            ]
            for p in paired
        ],
        "llrrrrrrl",
    )


def _paired_section(paired: list[dict[str, Any]], notes: list[str]) -> tuple[str, str, _Table | None] | None:
    """The report section of the comparisons, or None when there is nothing to say."""
    if not (paired or notes):
        return None
    return HEADING, _paired_intro(paired, notes), _paired_table(paired)
