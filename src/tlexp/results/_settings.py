"""Settings: the report's finished runs grouped by everything but their seed. No TensorFlow.

A setting is every config key except the seed and bookkeeping (``NOT_SETTING``); its
runs differ only in their seed. Runs are grouped before anything is averaged, so the
tables, the charts and the answer never pool two settings. A setting's test accuracy
comes with an interval (:class:`Estimate`) at the report's level ``LEVEL``, the same
level as every test and interval of the report.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tlexp.results._runs import ReportRun
from tlexp.results._strategy import FREEZE, STRATEGY_KEYS, Strategy, normalised
from tlexp.results._tables import fmt_freeze

ALPHA = 0.05  # significance level of the paired tests' readings (and 1 - the intervals' level)
LEVEL = 1 - ALPHA
LEVEL_TEXT = f"{round(100 * LEVEL)} %"  # "95 %"
# Config keys (or whole sections) that do not make a setting: seeds vary within one; the
# rest is bookkeeping that cannot change a number: where files go, logging, what a Ray
# cell asks for, the cache folder, whether Keras may download, the forest's job count
# (its result does not depend on it). ``sweep`` is the grid that produced the run;
# ``probe`` whether the sweep also ran the depth probe, which changes no run.
NOT_SETTING = frozenset(
    {
        "seed",
        "name",
        "sweep",
        "probe",
        "output",
        "tracking",
        "resources",
        "data.split_seed",
        "data.cache_dir",
        "model.download",
        "forest.n_jobs",
    }
)


@dataclass(frozen=True)
class Estimate:
    """A setting's test accuracy for one classifier, with its interval.

    One seed: the accuracy and its Wilson score interval (``LEVEL``) over the ``n_test``
    test images. Several seeds: the mean, and the lowest and highest seed.
    """

    value: float
    low: float
    high: float
    seeds: int
    n_test: int | None

    def text(self) -> str:
        return f"{self.value:.4f} [{self.low:.4f}, {self.high:.4f}]"

    def describe(self) -> str:
        """What the interval is, e.g. '1 seed, 95 % Wilson interval over 200 test images'."""
        if self.seeds == 1:
            return f"1 seed, {LEVEL_TEXT} Wilson interval over {self.n_test} test images"
        return f"mean of {self.seeds} seeds, lowest to highest seed"


@dataclass
class Setting:
    """Runs that differ only in their seed (and bookkeeping)."""

    runs: list[ReportRun]
    # What tells this setting from the report's others besides backbone and freeze: the
    # strategy's other keys as its short label (e.g. "block3 lp-ft", see
    # tlexp.results._strategy) when they differ, then any other key as "key=value, ...";
    # "" when nothing else differs.
    variant: str = ""
    # The same without the strategy: only the other keys that differ ("" if none).
    other: str = ""

    @property
    def first(self) -> ReportRun:
        return self.runs[0]

    @property
    def backbone(self) -> str:
        return str(self.first.config.get("model.backbone"))

    @property
    def freeze(self) -> Any:
        return self.first.config.get("model.freeze")

    @property
    def strategy(self) -> Strategy:
        """What trains and how (missing keys read as their defaults)."""
        return Strategy.of(self.first.config)

    @property
    def share(self) -> float:
        shares = [r.frozen_share for r in self.runs]
        return sum(shares) / len(shares)

    @property
    def seeds(self) -> str:
        return " ".join(str(r.config.get("seed")) for r in self.runs)

    def label(self, *, backbone: bool = True) -> str:
        """'vgg16, 30 % frozen' (plus the variant, if any)."""
        parts = ([self.backbone] if backbone else []) + [f"{fmt_freeze(self.freeze)} frozen"]
        return ", ".join(parts + ([self.variant] if self.variant else []))

    def accuracy(self, clf: str) -> Estimate | None:
        """Test accuracy of ``clf`` over the seeds, with its interval; None if it never ran."""
        from tlexp.results._stats import wilson_interval

        runs = [r for r in self.runs if r.ran(clf)]
        if not runs:
            return None
        values = [r.score(clf, "test", "accuracy") for r in runs]
        if len(runs) == 1:
            n = runs[0].score(clf, "test", "n")
            low, high = wilson_interval(round(values[0] * n), n, LEVEL)
            return Estimate(values[0], low, high, 1, n)
        return Estimate(sum(values) / len(values), min(values), max(values), len(values), None)

    def mean(self, get: Callable[[ReportRun], float | None]) -> tuple[float | None, float | None]:
        """Mean and sample standard deviation over the seeds (no std for one seed; None if absent)."""
        return _mean_std([get(r) for r in self.runs])

    def spread(self, get: Callable[[ReportRun], float | None]) -> tuple[float, float | None, float | None] | None:
        """Mean, lowest and highest value over the seeds (no range for one seed); None if absent."""
        v = [x for x in (get(r) for r in self.runs) if x is not None]
        if not v:
            return None
        return sum(v) / len(v), (min(v) if len(v) > 1 else None), (max(v) if len(v) > 1 else None)


def group_settings(done: Sequence[ReportRun]) -> list[Setting]:
    """Group finished runs into settings, in the order of their first run."""
    groups: dict[str, list[ReportRun]] = {}
    for r in done:
        groups.setdefault(_setting_key(r), []).append(r)
    configs = [json.loads(k) for k in groups]
    varying = sorted(
        k
        for k in set().union(*configs) - {"model.backbone", FREEZE}
        if len({json.dumps(c.get(k), default=str) for c in configs}) > 1
    )
    others = [k for k in varying if k not in STRATEGY_KEYS]
    strategy_varies = len(varying) > len(others)
    settings = []
    for runs in groups.values():
        config = normalised(runs[0].config)
        other = ", ".join(f"{k}={_plain(config.get(k))}" for k in others)
        rest = (Strategy.of(config).rest() or "all") if strategy_varies else ""
        settings.append(Setting(runs, ", ".join(filter(None, [rest, other])), other))
    return settings


def _setting_key(r: ReportRun) -> str:
    """The run's config without the keys in ``NOT_SETTING``, as a canonical string.

    Keys set to null are left out, so a run made before a key existed (absent) and one
    made after (null by default) fall in the same setting; a strategy key it lacks reads
    as its default (:func:`tlexp.results._strategy.normalised`), for the same reason.
    """
    kept = {
        k: v
        for k, v in normalised(r.config).items()
        if v is not None and k.split(".", 1)[0] not in NOT_SETTING and k not in NOT_SETTING
    }
    return json.dumps(kept, sort_keys=True, default=str)


def _plain(value: Any) -> str:
    return "null" if value is None else str(value)


def _mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof=1: seeds are a sample of possible runs)."""
    v = [x for x in values if x is not None]
    if not v:
        return None, None
    mean = sum(v) / len(v)
    std = math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else None
    return mean, std
