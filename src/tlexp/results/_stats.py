"""Intervals and tests for accuracies measured on a test split. No TensorFlow.

- :func:`wilson_interval`: one accuracy (k right of n), Wilson's score interval.
- :func:`mcnemar`: two classifiers scored on the same items: McNemar's score test of
  equal accuracy and Tango's score interval of the accuracy difference, which invert
  the same statistic and so never contradict each other (a :class:`McNemarResult`).
- :func:`paired_t`: two settings run with the same seeds: the paired t-test of equal
  mean accuracy over the seeds and the t interval of the mean difference, which invert
  the same statistic (p < 1 - ``level`` exactly when the interval excludes 0; a
  :class:`PairedTResult`).
- :func:`holm`: Holm's step-down adjustment of a family of p-values.

Why these (docs/concepts/statistics.md says the same, with the references):

A paired comparison needs an interval of the difference that agrees with the test shown
beside it: a report that prints "p = 0.06" next to a 95 % interval that excludes 0 (what
an exact McNemar test beside a percentile bootstrap does at n = 200, b = 0, c = 5) makes
a reader pick the answer they like. Tango's score interval (Tango 1998) is the set of
differences that the score test does not reject at level 1 - ``level``; at a difference
of 0 that score statistic is exactly McNemar's ``(c - b) / sqrt(b + c)``. So
``p < 1 - level`` holds exactly when the interval excludes 0, by construction, and
``tests/test_stats.py`` checks it on every table with ``b + c <= 40``.

Tango's interval has coverage close to the nominal level at small counts, unlike the
Wald interval and the bootstrap (Fagerland, Lydersen & Laake 2014 recommend it), and it
stays informative with no discordant items (``b = c = 0`` gives ``+-z^2 / (n + z^2)``,
not the zero-width interval an interval conditional on ``b + c`` would give). The
matching test, McNemar's asymptotic test without continuity correction, keeps close to
its nominal level at small counts (Fagerland, Lydersen & Laake 2013); the exact
conditional test is the conservative alternative, but no interval for the difference
inverts it.

References:
    Student (1908). The probable error of a mean. Biometrika 6, 1-25.
    Wilson, E. B. (1927). Probable inference, the law of succession, and statistical
    inference. JASA 22, 209-212.
    McNemar, Q. (1947). Note on the sampling error of the difference between correlated
    proportions or percentages. Psychometrika 12, 153-157.
    Tango, T. (1998). Equivalence test and confidence interval for the difference in
    proportions for the paired-sample design. Statistics in Medicine 17, 891-908.
    Holm, S. (1979). A simple sequentially rejective multiple test procedure.
    Scandinavian Journal of Statistics 6, 65-70.
    Fagerland, M. W., Lydersen, S. & Laake, P. (2013). The McNemar test for binary
    matched-pairs data: mid-p and asymptotic are better than exact conditional. BMC
    Medical Research Methodology 13, 91.
    Fagerland, M. W., Lydersen, S. & Laake, P. (2014). Recommended tests and confidence
    intervals for paired binomial proportions. Statistics in Medicine 33, 2850-2875.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

TEST_NAME = "McNemar score test (asymptotic, no continuity correction)"
INTERVAL_NAME = "Tango score interval"
T_TEST_NAME = "paired t-test over seeds"
T_INTERVAL_NAME = "t interval of the mean difference"


@dataclass(frozen=True)
class McNemarResult:
    """Two classifiers A and B on the same items: McNemar's score test and Tango's interval of B - A.

    Attributes:
        n: Items scored by both.
        b: Items only A got right.
        c: Items only B got right.
        diff: ``(c - b) / n``, B's accuracy minus A's.
        diff_low: Low end of Tango's score interval of ``diff``.
        diff_high: High end.
        z: McNemar's statistic ``(c - b) / sqrt(b + c)`` (0 when ``b + c == 0``).
        p_value: Its two-sided normal p-value (1.0 when ``b + c == 0``).
        level: Confidence level of the interval.
        accuracy_a: A's accuracy (None when the test was made from counts alone).
        accuracy_b: B's accuracy (likewise).
        test: The test's name, as the report's files print it.
        interval: The interval's name.
    """

    n: int
    b: int
    c: int
    diff: float
    diff_low: float
    diff_high: float
    z: float
    p_value: float
    level: float
    accuracy_a: float | None = None
    accuracy_b: float | None = None
    test: str = TEST_NAME
    interval: str = INTERVAL_NAME


@dataclass(frozen=True)
class PairedTResult:
    """Two settings run with the same seeds: the paired t-test and the t interval of the mean difference B - A.

    Attributes:
        n: Seeds both ran.
        diff: Mean over the seeds of B's value minus A's.
        diff_low: Low end of the t interval of ``diff``.
        diff_high: High end.
        t: The t statistic (+-inf when every difference is the same non-zero value).
        df: Its degrees of freedom, ``n - 1``.
        p_value: Its two-sided p-value.
        level: Confidence level of the interval.
        test: The test's name, as the report prints it.
        interval: The interval's name.
    """

    n: int
    diff: float
    diff_low: float
    diff_high: float
    t: float
    df: int
    p_value: float
    level: float
    test: str = T_TEST_NAME
    interval: str = T_INTERVAL_NAME


def wilson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval of a proportion: ``k`` successes of ``n`` trials.

    It keeps close to the nominal coverage at small n and near 0 or 1 (where the Wald
    interval ``p +- z * sqrt(p(1-p)/n)`` collapses to a point), and stays inside [0, 1].

    Args:
        k: Successes (e.g. test images classified right), 0 <= k <= n.
        n: Trials (e.g. test images), n >= 1.
        level: Confidence level, in (0, 1).

    Returns:
        ``(low, high)``.

    Raises:
        ValueError: If the counts or the level are out of range.
    """
    _check_level(level)
    if not (_is_int(n) and _is_int(k) and n >= 1 and 0 <= k <= n):
        raise ValueError(f"wilson_interval needs integers 0 <= k <= n and n >= 1. Got k={k!r}, n={n!r} instead.")
    z = _z(level)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # At k = 0 and k = n the bound is exactly 0 or 1 in exact arithmetic; in floats it can
    # land a few ulps inside, which would leave the estimate itself outside its interval.
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return low, high


def mcnemar(correct_a: Any, correct_b: Any, *, level: float = 0.95) -> McNemarResult:
    """Compare two classifiers scored on the same items: test and interval of B - A.

    Only the discordant items carry information about the difference: ``b`` (A right,
    B wrong) and ``c`` (A wrong, B right). The difference of accuracies is
    ``(c - b) / n``; the test is McNemar's score test of "no difference", the interval
    Tango's score interval (see the module docstring for why, and :func:`mcnemar_counts`).

    Args:
        correct_a: Whether A classified each item correctly, shape (n,), bool (or 0/1).
        correct_b: The same for B, shape (n,), same items in the same order.
        level: Confidence level of the interval, in (0, 1).

    Returns:
        The test, the interval and both accuracies; ``diff = accuracy_b - accuracy_a``.

    Raises:
        ValueError: If the arrays are empty, not 1-D, of different lengths, or not boolean.
    """
    a, b_ = _check_pair(correct_a, correct_b)
    b = int(np.sum(a & ~b_))
    c = int(np.sum(~a & b_))
    counts = mcnemar_counts(b, c, int(a.size), level=level)
    return replace(counts, accuracy_a=float(a.mean()), accuracy_b=float(b_.mean()))


def mcnemar_counts(b: int, c: int, n: int, *, level: float = 0.95) -> McNemarResult:
    """:func:`mcnemar` from the counts: ``b`` items only A got right, ``c`` only B, of ``n``.

    Returns:
        The test and the interval, without the accuracies. ``z = (c - b) / sqrt(b + c)``;
        ``p_value`` is its two-sided normal p-value, 1.0 when ``b + c == 0`` (the two
        never disagree).

    Raises:
        ValueError: If the counts or the level are out of range.
    """
    _check_level(level)
    if not (_is_int(b) and _is_int(c) and _is_int(n) and b >= 0 and c >= 0 and b + c <= n and n >= 1):
        raise ValueError(
            "mcnemar_counts needs integers b, c >= 0 with b + c <= n and n >= 1. "
            f"Got b={b!r}, c={c!r}, n={n!r} instead."
        )
    from scipy.stats import norm

    z = (c - b) / math.sqrt(b + c) if b + c else 0.0
    p = float(2 * norm.sf(abs(z))) if b + c else 1.0
    low, high = tango_interval(b, c, n, level=level)
    return McNemarResult(
        n=int(n),
        b=int(b),
        c=int(c),
        diff=(c - b) / n,
        diff_low=low,
        diff_high=high,
        z=z,
        p_value=min(1.0, p),
        level=float(level),
    )


def tango_interval(b: int, c: int, n: int, *, level: float = 0.95) -> tuple[float, float]:
    """Tango's score interval of the paired difference ``(c - b) / n`` (Tango 1998).

    The interval is ``{d : |T(d)| <= z}``, with Tango's score statistic
    ``T(d) = (c - b - n d) / sqrt(n (2 q(d) + d (1 - d)))``, ``q(d)`` the maximum
    likelihood estimate of the "only A right" probability under the constraint that
    the difference is ``d`` (closed form, Tango's eq. 4), and ``z`` the normal quantile.
    ``T(0) = (c - b) / sqrt(b + c)`` is McNemar's statistic.

    Args:
        b: Items only A got right (Tango's n21).
        c: Items only B got right (Tango's n12).
        n: All items.
        level: Confidence level, in (0, 1).

    Returns:
        ``(low, high)``, within [-1, 1].
    """
    from scipy.optimize import brentq

    z = _z(level)
    if b + c == 0:
        # T(d) = -sign(d) sqrt(n |d| / (1 - |d|)): solved in closed form (T(0) is 0/0).
        half = z * z / (n + z * z)
        return -half, half
    est = (c - b) / n
    lo_end, hi_end = -1.0 + 1e-13, 1.0 - 1e-13
    # T decreases in d, from +inf near -1 to -inf near 1, and T(est) = 0.
    low = -1.0 if est <= lo_end else brentq(lambda d: _tango_t(d, b, c, n) - z, lo_end, est, xtol=1e-15)
    high = 1.0 if est >= hi_end else brentq(lambda d: _tango_t(d, b, c, n) + z, est, hi_end, xtol=1e-15)
    return float(low), float(high)


def _tango_t(d: float, b: int, c: int, n: int) -> float:
    """Tango's score statistic for "the difference is d" (see :func:`tango_interval`)."""
    qa = 2.0 * n
    qb = -c - b + (2.0 * n - c + b) * d
    qc = -b * d * (1.0 - d)
    q = (math.sqrt(max(qb * qb - 4.0 * qa * qc, 0.0)) - qb) / (2.0 * qa)
    var = n * (2.0 * q + d * (1.0 - d))
    return (c - b - n * d) / math.sqrt(max(var, 1e-300))


def paired_t(a: Sequence[float], b: Sequence[float], *, level: float = 0.95) -> PairedTResult:
    """Paired t-test of equal means and the t interval of the mean difference ``b - a`` (Student 1908).

    For two settings run with the same seeds: ``a[i]`` and ``b[i]`` are their test
    accuracies with seed i. With ``d = b - a``, ``t = mean(d) / (sd(d) / sqrt(n))`` on
    ``n - 1`` degrees of freedom (``sd`` with ddof = 1); the interval is
    ``mean(d) +- t_{(1 + level) / 2, n - 1} * sd(d) / sqrt(n)``, the set of mean
    differences the same test does not reject, so ``p < 1 - level`` exactly when it
    excludes 0. It assumes the per-seed differences are roughly normal; with a handful of
    seeds it has little power, and says so by its wide interval. Differences that are
    all equal give ``sd = 0``: p is 0 (interval the point ``mean(d)``) unless they are 0.

    Args:
        a: One value per seed, shape (n,), n >= 2.
        b: The same seeds' values of the other setting, shape (n,), same order.
        level: Confidence level of the interval, in (0, 1).

    Returns:
        The test and the interval; ``diff = mean(b - a)``.

    Raises:
        ValueError: If the arrays differ in length, hold fewer than 2 values or non-finite ones.
    """
    from scipy.stats import t as student

    _check_level(level)
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.ndim != 1 or x.shape != y.shape or x.size < 2 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError(
            "paired_t needs two 1-D arrays of the same length n >= 2 with finite values (one per seed). "
            f"Got shapes {x.shape} and {y.shape} instead."
        )
    d = y - x
    n, mean = int(d.size), float(d.mean())
    se = float(d.std(ddof=1)) / math.sqrt(n)
    if se == 0.0:
        t, p, half = (0.0, 1.0, 0.0) if mean == 0.0 else (math.copysign(math.inf, mean), 0.0, 0.0)
    else:
        t = mean / se
        p = float(2 * student.sf(abs(t), n - 1))
        half = float(student.ppf(0.5 + float(level) / 2.0, n - 1)) * se
    return PairedTResult(
        n=n,
        diff=mean,
        diff_low=mean - half,
        diff_high=mean + half,
        t=t,
        df=n - 1,
        p_value=min(1.0, p),
        level=float(level),
    )


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order (Holm 1979).

    Sort the m p-values ascending; the i-th smallest (i from 1) is multiplied by
    ``m - i + 1``, capped at 1, and made non-decreasing along the order. A hypothesis
    is rejected at family-wise error rate alpha exactly when its adjusted p-value is
    below alpha; unlike Bonferroni (every p times m) this loses no power for free.

    Args:
        p_values: The family's p-values, each in [0, 1].

    Returns:
        The adjusted p-values, same length and order.

    Raises:
        ValueError: If a p-value is outside [0, 1] or not a number.
    """
    ps = [float(p) for p in p_values]
    bad = [p for p in ps if not 0.0 <= p <= 1.0]  # NaN fails this too
    if bad:
        raise ValueError(f"p-values must be numbers in [0, 1]. Got {bad[:3]} instead.")
    m = len(ps)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda j: ps[j])):
        running = max(running, min(1.0, (m - rank) * ps[i]))
        adjusted[i] = running
    return adjusted


def _z(level: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + float(level) / 2.0))


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _check_level(level: Any) -> None:
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0.0 < float(level) < 1.0:
        raise ValueError(f"The 'level' parameter must be a float in the range (0, 1). Got {level!r} instead.")


def _check_one(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of shape (n,). Got shape {arr.shape} instead.")
    if arr.dtype != bool:
        if not np.all(np.isin(arr, (0, 1))):
            raise ValueError(
                f"{name} must hold booleans (item classified correctly or not). "
                f"Got values {np.unique(arr)[:5].tolist()} instead."
            )
        arr = arr.astype(bool)
    return arr


def _check_pair(correct_a: Any, correct_b: Any) -> tuple[np.ndarray, np.ndarray]:
    a = _check_one(correct_a, "correct_a")
    b = _check_one(correct_b, "correct_b")
    if a.shape != b.shape:
        raise ValueError(
            "correct_a and correct_b must score the same items (same shape). "
            f"Got shapes {a.shape} and {b.shape} instead."
        )
    return a, b
