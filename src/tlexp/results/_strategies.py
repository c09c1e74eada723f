"""Fine-tuning strategies compared: each against its backbone's best, paired, Holm-corrected. No TensorFlow.

Written only when the report's settings differ in a strategy key besides the freeze
(``model.train``, ``train.schedule``, ``train.layer_decay``, the lp-ft keys; see
:mod:`tlexp.results._strategy`): a plain freeze sweep keeps the report it always had.
The settings are split by backbone (and by any other key that varies, e.g. the learning
rate), one :class:`StrategyTable` each. In a table, each strategy is tested against the
one with the highest head test accuracy by :func:`tlexp.results._leads.compare`, the
answer's paired test (McNemar's score test and Tango's interval on the same test images
for one seed each; Student's paired t-test and its t interval over the seeds both ran for
several), and the table's p-values are one family for Holm's step-down correction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tlexp.results._leads import Lead, ScoredImages, compare
from tlexp.results._paired import reading
from tlexp.results._settings import ALPHA, LEVEL_TEXT, Estimate, Setting
from tlexp.results._strategy import STRATEGY_KEYS, Strategy
from tlexp.results._tables import Section, Table, fmt_p, fmt_pct

HEADING = "Strategies"
STRATEGIES_CSV = "strategies.csv"  # one row per strategy and table, every number at full precision
HOLM_REFERENCE = "Holm 1979"


@dataclass(frozen=True)
class Row:
    """One strategy of a table: its head test accuracy and its test against the table's best.

    ``lead`` is None for the best itself; otherwise :func:`tlexp.results._leads.compare`
    of (best, this), so ``lead.result.diff`` is best minus this. ``p_holm`` is the
    Holm-adjusted p-value within the table (None where not compared).
    """

    setting: Setting
    estimate: Estimate
    lead: Lead | None = None
    p_holm: float | None = None

    @property
    def strategy(self) -> Strategy:
        return self.setting.strategy

    @property
    def label(self) -> str:
        return self.strategy.label()

    @property
    def tested(self) -> bool:
        return self.lead is not None and self.lead.result is not None

    def best_ahead(self) -> bool:
        """The best's lead over this one survives Holm's correction."""
        return self.tested and self.p_holm < ALPHA and self.lead.result.diff > 0


@dataclass(frozen=True)
class StrategyTable:
    """The strategies of one backbone (and setting of the other keys that vary), best first marked."""

    backbone: str
    other: str  # the other keys that vary, "key=value, ..."; "" if none
    rows: list[Row]  # in strategy order (tlexp.results._strategy.Strategy.sort_key)
    best: Row

    @property
    def name(self) -> str:
        return self.backbone + (f" ({self.other})" if self.other else "")

    @property
    def compared(self) -> list[Row]:
        """The rows tested against the best: Holm's family of this table."""
        return [r for r in self.rows if r.tested]


def strategies_vary(settings: Sequence[Setting]) -> bool:
    """Whether the settings differ in a strategy key besides the freeze."""
    return len({s.strategy.rest() for s in settings}) > 1


def strategy_tables(settings: Sequence[Setting], images: ScoredImages) -> list[StrategyTable]:
    """One table per backbone and other-keys variant, where strategies vary; [] otherwise."""
    from tlexp.results._stats import holm

    if not strategies_vary(settings):
        return []
    groups: dict[tuple[str, str], list[Setting]] = {}
    for s in settings:
        groups.setdefault((s.backbone, s.other), []).append(s)
    tables = []
    for (backbone, other), group in groups.items():
        scored = [(s, e) for s in sorted(group, key=lambda s: s.strategy.sort_key()) if (e := s.accuracy("head"))]
        if not scored:
            continue
        best = max(scored, key=lambda se: se[1].value)[0]  # the first of a tie, in strategy order
        leads = {id(s): compare(best, s, "head", images) for s, _ in scored if s is not best}
        tested = [i for i, lead in leads.items() if lead.result is not None]
        p_holm = dict(zip(tested, holm([leads[i].p_value for i in tested]), strict=True))
        rows = [Row(s, e, leads.get(id(s)), p_holm.get(id(s))) for s, e in scored]
        tables.append(StrategyTable(backbone, other, rows, next(r for r in rows if r.setting is best)))
    return tables


def row_reading(table: StrategyTable, row: Row) -> str:
    """A row's test in words: the best, not compared (why), or what its two p-values say."""
    if row is table.best:
        return f"best of {table.name}"
    if not row.tested:
        return row.lead.why_not
    better = table.best.label if row.lead.result.diff > 0 else row.label
    return reading(row.lead.p_value, row.p_holm, better)


def _methods() -> str:
    """How the table's tests work, with the references, as the report's other sections say it."""
    return (
        "Each strategy is tested against the best of its table (highest head test accuracy, marked) on what the "
        "two share: with one seed each, the same test images (McNemar's score test; Δ = best − strategy with "
        f"Tango's {LEVEL_TEXT} score interval); with several seeds, the seeds both ran (Student's paired t-test "
        f"of the per-seed differences, with its {LEVEL_TEXT} t interval). Each interval inverts its own "
        f"unadjusted test, so it excludes 0 exactly when p < {ALPHA}. Holm p: Holm's step-down correction "
        f"({HOLM_REFERENCE}) over the comparisons of one table, so that the chance of any false positive among "
        f"them stays below {ALPHA}: one family per table, never pooled with the other tables, the head-vs-other "
        "family or the answer's leader-vs-runner-up tests. A difference is called real only where its Holm p "
        f"is below {ALPHA}."
    )


def _labels_text(tables: Sequence[StrategyTable]) -> str:
    strategies = [r.strategy for t in tables for r in t.rows]
    text = (
        "Labels: f30 = 30 % of the backbone's parameters frozen, as asked (model.freeze; to-<layer> = frozen "
        "through that layer); then what trains above the cut (model.train: nothing more = all of it; blockK = "
        "stage K alone, surgical fine-tuning, Lee et al. 2023; biases = bias terms only, BitFit, Zaken et al. "
        "2022; norm = normalisation layers only) and how (train.schedule: lp-ft = a linear probe first, then "
        "fine-tuning, Kumar et al. 2022; gradual = one more stage per epoch from the top, Howard & Ruder 2018; "
        "lldX = layer-wise learning-rate decay X per stage from the top, train.layer_decay)."
    )
    if any(s.schedule == "lp-ft" and s.rest() != "lp-ft" for s in strategies):
        text += " lp-ft peN: its probe stage ran N epochs; ftlrX: its fine-tuning learning-rate factor."
    return text


def strategies_section(tables: Sequence[StrategyTable], figures: Sequence[tuple[str, str]] = ()) -> Section | None:
    """The "Strategies" section, its table holding every table's rows, then its charts
    (``(file name, caption)``); None without strategy tables."""
    if not tables:
        return None
    lines = [f"Fine-tuning strategies compared on head test accuracy, per backbone{_split_by(tables)}."]
    lines += ["", _labels_text(tables), "", _methods(), ""]
    for t in tables:
        kept = [r for r in t.compared if r.best_ahead()]
        k = len(t.compared)
        lines.append(
            f"- {t.name}: best {t.best.label}, {t.best.estimate.text()} ({t.best.estimate.describe()}); "
            + (
                f"Holm's family: its {k} comparison(s) with the others; {len(kept)} of {k} survive it."
                if k
                else "no other strategy could be compared with it."
            )
        )
    rows, marked = [], set()
    for t in tables:
        for r in t.rows:
            marked |= {len(rows)} if r is t.best else set()
            rows.append(_cells(t, r))
    table = Table(
        ["backbone", "strategy", "frozen (achieved)", "trainable params", "seeds", "head test acc"]
        + [f"Δ best − strategy [{LEVEL_TEXT} CI]", "p", "Holm p", "reading"],
        rows,
        "llrrl" + "rrrrl",
        marked,
    )
    return Section(HEADING, "\n".join(lines), table, tuple(figures))


def _split_by(tables: Sequence[StrategyTable]) -> str:
    others = [t.other for t in tables if t.other]
    return f" and setting of the other keys that vary ({'; '.join(dict.fromkeys(others))})" if others else ""


def _cells(t: StrategyTable, r: Row) -> list[str]:
    res = r.lead.result if r.tested else None
    trainable = r.setting.mean(lambda run: run.record.params.trainable)[0]
    return [
        t.name,
        r.label + (" (best)" if r is t.best else ""),
        fmt_pct(r.setting.share),
        f"{trainable:,.0f}" if trainable is not None else "",
        r.setting.seeds,
        r.estimate.text(),
        f"{res.diff:+.4f} [{res.diff_low:+.4f}, {res.diff_high:+.4f}]" if res else "",
        fmt_p(res.p_value, ALPHA) if res else "",
        fmt_p(r.p_holm, ALPHA) if res else "",
        row_reading(t, r),
    ]


STRATEGY_COLUMNS = [
    "backbone",
    "other_keys",
    "strategy",
    *STRATEGY_KEYS,
    "frozen_share",
    "seeds",
    "head_test_accuracy",
    "low",
    "high",
    "interval",
    "best",
    "test",
    "n",
    "diff_best_minus_this",
    "diff_low",
    "diff_high",
    "p_value",
    "p_holm",
    "reading",
]


def strategies_csv(tables: Sequence[StrategyTable]) -> tuple[list[str], list[list[Any]]]:
    """The header and rows of ``strategies.csv``: the section's table at full precision."""
    rows = []
    for t in tables:
        for r in t.rows:
            s, e, res = r.strategy, r.estimate, (r.lead.result if r.tested else None)
            keys = [s.freeze, s.train, s.schedule, s.layer_decay, s.probe_epochs, s.finetune_lr_factor]
            test = [res.test, res.n, res.diff, res.diff_low, res.diff_high, res.p_value, r.p_holm] if res else [""] * 7
            rows.append(
                [t.backbone, t.other, r.label, *keys, r.setting.share, r.setting.seeds, e.value, e.low, e.high]
                + [e.describe(), r is t.best, *test, row_reading(t, r)]
            )
    return STRATEGY_COLUMNS, [["" if v is None else v for v in row] for row in rows]
