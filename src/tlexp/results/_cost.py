"""What a setting's head accuracy costs: minutes of compute, the baseline, the Pareto frontier. No TensorFlow.

"Accuracy per minute of training" ranked a chance-level model first (0.50 in 0.33 min =
1.50/min above 0.95 in 1.00 min) and left out the frozen part's forward pass. Here a
setting's cost is the whole compute of its head's accuracy, the ``prefix``, ``train``
and ``predict`` phases of the run record (``COST_PHASES``), mean over its seeds:

- ``prefix``: the frozen part's forward pass when its activations are cached: the cache
  build when the run built it (*cold*), reading it when another run built it (*warm*:
  that build is counted in the run that paid for it, not here); without a cache the
  frozen part runs inside ``train`` and ``predict``, counted there (*none*);
- ``train`` and ``predict`` (all splits, the head's logits and the features).

Not counted: ``weights``, ``data``, ``decode`` and ``build`` (setting up, not computing
the accuracy), and the other classifiers' fits (``fit_forest``, ...), which do not make
the head's accuracy. Every setting is held to the majority-class baseline of its test
split (always predicting the largest class) and is never recommended at or below it.
The Pareto frontier holds the settings no other setting beats in both accuracy and
minutes. A cheaper setting on the frontier is recommended over the most accurate one
only where the paired leader-vs-runner-up test (:mod:`tlexp.results._leads`) does not
find the most accurate one better.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from tlexp.results._leads import ScoredImages, compare
from tlexp.results._runs import ReportRun
from tlexp.results._settings import Setting

COST_PHASES = ("prefix", "train", "predict")
PHASES_TEXT = "prefix, train and predict"
CACHE_STATES = {
    "none": "no cache: the frozen part ran inside train and predict",
    "cold": "the run built the activation cache, its build counted",
    "warm": "the run read a cache another run built, whose build is not counted here",
    "partly warm": "the run built its cache from another run's cache of a shallower layer (that one not counted)",
    "cached": "a cache was used; whether built or reused was not recorded",
}


@dataclass(frozen=True)
class SettingCost:
    """A setting's head test accuracy and what it cost (means over its seeds).

    Attributes:
        minutes: Mean over the seeds of the ``COST_PHASES`` seconds, in minutes.
        cache: How its prefix was computed (a key of ``CACHE_STATES``, or a mix such as
            "cold in 1 seed, warm in 2").
        baseline: Majority-class accuracy of its test split(s), mean over the seeds.
        states: The ``CACHE_STATES`` keys of its runs.
        missing: Runs and the cost phases their records lack (counted as 0).
    """

    setting: Setting
    accuracy: float
    minutes: float
    cache: str
    baseline: float
    states: frozenset[str] = frozenset()
    missing: tuple[str, ...] = ()

    @property
    def useful(self) -> bool:
        """Above the majority-class baseline: only such settings are ever recommended."""
        return self.accuracy > self.baseline

    def brief(self) -> str:
        """'vgg16, 30 % frozen (0.9300 in 1.90 min)'."""
        return f"{self.setting.label()} ({self.accuracy:.4f} in {self.minutes:.2f} min)"


def run_minutes(r: ReportRun) -> tuple[float | None, list[str]]:
    """Minutes of the run's ``COST_PHASES`` and the phases its record lacks; None without ``train``."""
    t = r.record.timings_s
    if "train" not in t:
        return None, list(COST_PHASES)
    return sum(t.get(p, 0.0) for p in COST_PHASES) / 60, [p for p in COST_PHASES if p not in t]


def cache_state(r: ReportRun) -> str:
    """How the run's frozen prefix was computed: a key of ``CACHE_STATES``."""
    pc = r.record.prefix_cache
    if not pc.used:
        return "none"
    return {"images": "cold", "reused": "warm", None: "cached"}.get(pc.source, "partly warm")


def majority_baseline(r: ReportRun) -> tuple[float, int, int] | None:
    """``(accuracy, images of the largest class, images)`` of always predicting the largest
    test class, from the head's test confusion matrix (rows: true classes); None if empty."""
    counts = [sum(row) for row in r.record.head.test.confusion]
    n = sum(counts)
    return (max(counts) / n, max(counts), n) if n else None


def setting_costs(settings: Sequence[Setting]) -> tuple[list[SettingCost], list[str]]:
    """The cost of every setting whose head has a test accuracy, a train time and a baseline.

    Returns:
        ``(costs, left_out)``: costs in the report's order; the labels of settings left out.
    """
    costs, left_out = [], []
    for s in settings:
        runs = [r for r in s.runs if r.ran("head")]
        minutes = [run_minutes(r) for r in runs]
        bases = [majority_baseline(r) for r in runs]
        if not runs or any(m is None for m, _ in minutes) or any(b is None for b in bases):
            left_out.append(s.label())
            continue
        states = Counter(cache_state(r) for r in runs)
        cache = next(iter(states)) if len(states) == 1 else ", ".join(f"{k} in {v} seed(s)" for k, v in states.items())
        costs.append(
            SettingCost(
                s,
                sum(r.score("head", "test", "accuracy") for r in runs) / len(runs),
                sum(m for m, _ in minutes) / len(runs),
                cache,
                sum(b[0] for b in bases) / len(runs),
                frozenset(states),
                tuple(f"{r.name}: {', '.join(gone)}" for r, (_, gone) in zip(runs, minutes, strict=True) if gone),
            )
        )
    return costs, left_out


def pareto_frontier(points: Sequence[tuple[float, float]]) -> list[bool]:
    """Which ``(minutes, accuracy)`` points no other point beats in both: as accurate or
    more in as few minutes or fewer, and strictly better in one. Ties stay on it."""
    return [not any(m2 <= m and a2 >= a and (m2 < m or a2 > a) for m2, a2 in points) for m, a in points]


def cost_paragraphs(settings: Sequence[Setting], images: ScoredImages) -> str:
    """The answer's cost paragraphs: per setting, the baseline, the frontier, the recommendation."""
    costs, left_out = setting_costs(settings)
    if not costs:
        return "Cost: not computed (no setting records its train time and test split)." if settings else ""
    on = pareto_frontier([(c.minutes, c.accuracy) for c in costs])
    lines = [
        "Cost of the head's test accuracy, per setting (means over seeds): minutes of compute = the "
        f"{PHASES_TEXT} phases (prefix: the frozen part's forward pass into its activation cache); "
        "the weights, data, decode and build phases and the other classifiers' fits are not counted. Cache: "
        + "; ".join(f"{k} = {v}" for k, v in CACHE_STATES.items() if any(k in c.states for c in costs))
        + ". "
        + _baseline_sentence(costs)
        + " Most accurate first:"
    ]
    for c, front in sorted(zip(costs, on, strict=True), key=lambda cf: (-cf[0].accuracy, cf[0].minutes)):
        notes = (["on the Pareto frontier"] if front else []) + (
            [] if c.useful else ["at or below the majority-class baseline: never recommended"]
        )
        lines.append(f"- {c.setting.label()}: {c.accuracy:.4f} in {c.minutes:.2f} min ({c.cache})")
        lines[-1] += ("; " + ", ".join(notes)) if notes else ""
    missing = [m for c in costs for m in c.missing]
    extra = [f"Not recorded, counted as 0: {'; '.join(missing)}."] * bool(missing)
    extra += [f"Left out (no train time or no scored test images): {', '.join(left_out)}."] * bool(left_out)
    frontier = [c for c, f in sorted(zip(costs, on, strict=True), key=lambda cf: cf[0].minutes) if f]
    second = (
        "Pareto frontier (no other setting is as accurate or more in as few minutes or fewer, and better in "
        f"one), cheapest first: {'; '.join(c.brief() for c in frontier)}. " + _recommend(costs, frontier, images)
    )
    return "\n".join(lines) + "\n\n" + " ".join([*extra, second])


def _baseline_sentence(costs: Sequence[SettingCost]) -> str:
    bases = sorted({round(c.baseline, 12) for c in costs})
    if len(bases) == 1:
        run = next(r for c in costs for r in c.setting.runs if r.ran("head"))
        _, top, n = majority_baseline(run)
        return (
            f"The majority-class baseline (always predicting the largest test class, {top} of {n} images) "
            f"scores {bases[0]:.4f}."
        )
    return (
        f"The majority-class baseline (always predicting the largest test class) scores {bases[0]:.4f} to "
        f"{bases[-1]:.4f} by test split; each setting is held to its own."
    )


def _recommend(costs: Sequence[SettingCost], frontier: Sequence[SettingCost], images: ScoredImages) -> str:
    """Recommend the cheapest useful frontier setting the paired test does not find worse than the most accurate."""
    useful = [c for c in costs if c.useful]
    if not useful:
        return "Recommendation: none: no setting's head beats the majority-class baseline."
    best = min(useful, key=lambda c: (-c.accuracy, c.minutes))
    cheaper = [c for c in frontier if c.useful and c.minutes < best.minutes]  # cheapest first
    if not cheaper:
        return (
            f"Recommendation: {best.brief()}, the most accurate; no setting that beats the baseline "
            "costs fewer minutes."
        )
    worse = []
    for c in cheaper:
        lead = compare(best.setting, c.setting, "head", images)
        said = lead.text("most accurate", "cheaper")
        if lead.result is not None and not lead.leader_better():
            saving = 100 * (1 - c.minutes / best.minutes)
            text = (
                f"Recommendation: {c.brief()}, {saving:.0f} % fewer minutes than the most accurate, "
                f"{best.brief()}, which the paired test does not find better: {said}."
            )
            if worse:
                text += " Cheaper settings on the frontier were worse or not compared: " + "; ".join(worse) + "."
            return text
        worse.append(f"{c.setting.label()}: {said}")
    return (
        f"Recommendation: {best.brief()}, the most accurate: every cheaper setting on the frontier that beats "
        "the baseline is worse by the paired test, or could not be compared: " + "; ".join(worse) + "."
    )
