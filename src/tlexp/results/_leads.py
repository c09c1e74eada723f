"""Leader vs runner-up: is one setting's lead over another a real one? No TensorFlow.

The answer ranks settings by test accuracy and says whether the best one's lead over
the next holds up. Reading the runner-up against the leader's own interval is not a test
(900/1000 vs 890/1000 sits inside the leader's Wilson interval although the paired counts
b = 10, c = 0 give p = 0.0016), so the lead is tested on the pairs the runs share:

- one seed each: the same test images, matched by path in the two runs'
  ``predictions.csv``: McNemar's score test with Tango's score interval of the lead
  (:func:`tlexp.results._stats.mcnemar`), exactly as for head vs forest;
- several seeds: the seeds both settings ran, runs paired by seed: Student's paired
  t-test of the per-seed accuracy differences with its t interval
  (:func:`tlexp.results._stats.paired_t`).

Either way the interval inverts the test, so ``p < alpha`` exactly when it excludes 0.
Each comparison is one test of a pair chosen after ranking: it is not corrected for the
ranking or for the report's other tests, and not part of the head-vs-other Holm family.
Where the runs share no such pairs (other test images, other seeds) the lead is "not
compared", never guessed at.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlexp import files, runfolder
from tlexp.results._runs import ReportRun
from tlexp.results._settings import ALPHA, LEVEL, Setting
from tlexp.results._stats import McNemarResult, PairedTResult
from tlexp.results._tables import fmt_p

CANNOT_SEPARATE = "the data cannot separate them"
DIFFERENT_IMAGES = "not compared: different test images"


class ScoredImages:
    """Which test images each run's classifiers got right, from ``predictions.csv``, each file read once."""

    def __init__(self) -> None:
        self._rows: dict[Path, list[dict[str, str]] | None] = {}

    def correct(self, run: ReportRun, clf: str) -> tuple[dict[str, bool] | None, str]:
        """``(path -> right?, "")`` over the run's test split, or ``(None, why not)``."""
        path = Path(run.dir) / runfolder.PREDICTIONS_FILE  # settings hold finished runs: each has its folder
        if path not in self._rows:
            self._rows[path] = [p for p in files.read_csv(path) if p.get("split") == "test"] if path.is_file() else None
        rows = self._rows[path]
        if rows is None:
            return None, f"not compared: {run.name} has no {runfolder.PREDICTIONS_FILE}"
        if not rows or clf not in rows[0]:
            return None, f"not compared: {run.name}'s {runfolder.PREDICTIONS_FILE} has no test predictions of {clf}"
        right = {p["path"]: p[clf] == p["label"] for p in rows}
        return (right, "") if len(right) == len(rows) else (None, f"not compared: {run.name} repeats a test image")


@dataclass(frozen=True)
class Lead:
    """The leader's lead over the runner-up for one classifier, and what the paired test says of it.

    Attributes:
        result: :func:`~tlexp.results._stats.mcnemar` (one seed each; ``a`` = runner-up,
            ``b`` = leader) or :func:`~tlexp.results._stats.paired_t` (several seeds), so
            ``diff`` is the leader's accuracy minus the runner-up's; None if not compared.
        why_not: Why the two were not compared ("" if they were).
    """

    result: McNemarResult | PairedTResult | None
    why_not: str = ""

    @property
    def p_value(self) -> float | None:
        return None if self.result is None else self.result.p_value

    def leader_better(self) -> bool:
        """The test finds the leader ahead (p < ALPHA, lead > 0)."""
        return self.result is not None and self.result.p_value < ALPHA and self.result.diff > 0

    def text(self, leader: str = "leader", runner: str = "runner-up") -> str:
        """The test and its verdict, e.g. 'lead +0.0100 [...], McNemar p = 0.0016 on ...: the leader is better'.

        Args:
            leader: What to call the leader ("leader", "most accurate").
            runner: What to call the other ("runner-up", "cheaper").
        """
        r = self.result
        if r is None:
            return self.why_not
        lead = f"{r.diff:+.4f} [{r.diff_low:+.4f}, {r.diff_high:+.4f}]"
        p = fmt_p(r.p_value, ALPHA)
        p = f"{p[0]} {p[1:]}" if p[0] in "<>" else f"= {p}"
        if isinstance(r, PairedTResult):
            t = "∞" if abs(r.t) == float("inf") else f"{abs(r.t):.2f}"
            how = f"mean lead {lead} over the {r.n} seeds both ran, paired t-test p {p} (|t| = {t}, {r.df} df)"
        else:
            how = (
                f"lead {lead}, McNemar p {p} on the same {r.n} test images "
                f"(only the {leader} right on {r.c}, only the {runner} on {r.b})"
            )
        if r.p_value >= ALPHA:
            return f"{how}: {CANNOT_SEPARATE}"
        return f"{how}: the {leader if r.diff > 0 else runner} is better"


def compare(leader: Setting, runner: Setting, clf: str, images: ScoredImages) -> Lead:
    """Test the leader's lead over the runner-up in ``clf``'s test accuracy.

    One run each: McNemar's score test and Tango's interval on the test images both
    scored (matched by path; other images, and the two are not compared). Otherwise the
    runs are paired by seed: a paired t-test over the seeds both ran, at least 2.
    """
    from tlexp.results._stats import mcnemar

    a = [r for r in leader.runs if r.ran(clf)]
    b = [r for r in runner.runs if r.ran(clf)]
    if len(a) == 1 and len(b) == 1:
        right_a, why = images.correct(a[0], clf)
        right_b, why_b = images.correct(b[0], clf)
        if right_a is None or right_b is None:
            return Lead(None, why or why_b)
        if right_a.keys() != right_b.keys():
            return Lead(None, DIFFERENT_IMAGES)
        keys = sorted(right_a)
        return Lead(mcnemar([right_b[k] for k in keys], [right_a[k] for k in keys], level=LEVEL))
    return _over_seeds(a, b, clf)


def _over_seeds(a: Sequence[ReportRun], b: Sequence[ReportRun], clf: str) -> Lead:
    from tlexp.results._stats import paired_t

    def by_seed(runs: Sequence[ReportRun]) -> dict[Any, float]:
        found: dict[Any, float] = {}
        for r in runs:
            found.setdefault(r.config.get("seed"), r.score(clf, "test", "accuracy"))
        return found

    acc_a, acc_b = by_seed(a), by_seed(b)
    seeds = [s for s in acc_a if s in acc_b]
    if len(seeds) < 2:
        return Lead(
            None,
            f"not compared: a paired comparison over seeds needs at least 2 seeds run in both; they share {len(seeds)}",
        )
    return Lead(paired_t([acc_b[s] for s in seeds], [acc_a[s] for s in seeds], level=LEVEL))
