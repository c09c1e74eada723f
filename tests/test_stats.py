"""Tests for tlexp.results._stats: published worked examples, independent derivations, and
an exhaustive check that the paired test and its interval never contradict each other."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tlexp.results._stats import holm, mcnemar, mcnemar_counts, paired_t, tango_interval, wilson_interval

Z95 = 1.959963984540054


def paired(both: int, a_only: int, b_only: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    """Correctness arrays with the given numbers of each kind of item."""
    a = np.array([True] * both + [True] * a_only + [False] * b_only + [False] * neither)
    b = np.array([True] * both + [False] * a_only + [True] * b_only + [False] * neither)
    return a, b


# --------------------------------------------------------------------------- McNemar's score test


def test_mcnemar_known_counts():
    a, b = paired(both=80, a_only=10, b_only=2, neither=8)
    r = mcnemar(a, b)
    assert (r.n, r.b, r.c) == (100, 10, 2)
    # By hand: z = (c - b) / sqrt(b + c) = -8 / sqrt(12); two-sided p = erfc(|z| / sqrt(2)).
    assert r.z == pytest.approx(-8 / math.sqrt(12), rel=1e-12)
    assert r.p_value == pytest.approx(math.erfc(8 / math.sqrt(24)), rel=1e-12)
    assert round(r.p_value, 4) == 0.0209
    assert r.accuracy_a == pytest.approx(0.90) and r.accuracy_b == pytest.approx(0.82)
    assert r.diff == pytest.approx(-0.08)
    assert r.diff_low < -0.08 < r.diff_high < 0  # p < 0.05: the interval excludes 0
    assert (r.test, r.interval) == (
        "McNemar score test (asymptotic, no continuity correction)",
        "Tango score interval",
    )


def test_published_example_cavo_2012():
    """Fagerland, Lydersen & Laake, Statistical Analysis of Contingency Tables (2017), ch. 8,
    complete response before/after consolidation therapy (Cavo et al. 2012): the table
    [[59, 6], [16, 80]], n = 161. Published (and in the R package contingencytables, its
    test-ch8.R): Tango asymptotic score CI of the difference -0.0621 (95 % CI -0.1240 to
    -0.0054); McNemar asymptotic test P = 0.033006, Z = -2.132. Their difference is
    n12 - n21 = 6 - 16, i.e. our c = 6 (only B right), b = 16 (only A right)."""
    r = mcnemar_counts(16, 6, 161)
    assert round(r.diff, 4) == -0.0621
    assert (round(r.diff_low, 4), round(r.diff_high, 4)) == (-0.1240, -0.0054)
    assert round(r.z, 3) == -2.132
    assert round(r.p_value, 6) == 0.033006


def test_published_example_all_discordant_one_way():
    """contingencytables' test-ch8.R: the table [[0, 3], [0, 0]] (three pairs, all "only
    the first right") has Tango CI 1.0000 (-0.1230 to 1.0000); mirrored, -1 (-1 to 0.1230)."""
    assert tuple(round(x, 4) for x in tango_interval(0, 3, 3)) == (-0.1230, 1.0)
    assert tuple(round(x, 4) for x in tango_interval(3, 0, 3)) == (-1.0, 0.1230)


def _score_statistic(d: float, b: int, c: int, n: int) -> float:
    """Tango's score statistic derived here independently: the restricted maximum
    likelihood of the multinomial (p_c - p_b = d) found numerically, not by Tango's
    closed form, and Var(c - b) = n (p_b + p_c - d^2)."""
    from scipy.optimize import minimize_scalar

    rest = n - b - c

    def nll(pb: float) -> float:
        pc = pb + d
        return -(b * math.log(pb) + c * math.log(pc) + rest * math.log(max(1 - pb - pc, 1e-300)))

    lo, hi = max(0.0, -d) + 1e-12, (1 - d) / 2 - 1e-12
    pb = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-13}).x
    return (c - b - n * d) / math.sqrt(n * (2 * pb + d - d * d))


@pytest.mark.parametrize("b, c, n", [(16, 6, 161), (0, 5, 200), (7, 1, 21), (12, 30, 500), (3, 3, 40)])
def test_tango_bounds_solve_the_score_equation(b, c, n):
    low, high = tango_interval(b, c, n)
    assert _score_statistic(low, b, c, n) == pytest.approx(Z95, abs=1e-5)
    assert _score_statistic(high, b, c, n) == pytest.approx(-Z95, abs=1e-5)
    # At d = 0 the statistic is McNemar's.
    assert mcnemar_counts(b, c, n).z == pytest.approx((c - b) / math.sqrt(b + c))


def test_the_briefs_contradiction_is_gone():
    """n = 200, b = 0, c = 5: the exact test (p = 0.0625) beside a bootstrap interval that
    excluded 0 contradicted each other. Now test and interval come from one statistic."""
    r = mcnemar_counts(0, 5, 200)
    assert r.z == pytest.approx(math.sqrt(5))
    assert r.p_value == pytest.approx(math.erfc(math.sqrt(5) / math.sqrt(2)))
    assert round(r.p_value, 4) == 0.0253
    assert (round(r.diff_low, 4), round(r.diff_high, 4)) == (0.0057, 0.0572)


@pytest.mark.parametrize("n", [20, 50, 200, 1000])
def test_test_and_interval_agree_on_every_small_table(n):
    """p < 0.05 exactly when the 95 % interval excludes 0, for every b, c with b + c <= 40."""
    disagree = []
    for b in range(41):
        for c in range(41 - b):
            if b + c > n:
                continue
            r = mcnemar_counts(b, c, n)
            excludes_zero = r.diff_low > 0 or r.diff_high < 0
            if (r.p_value < 0.05) != excludes_zero:
                disagree.append((b, c, r.p_value, r.diff_low, r.diff_high))
            assert r.diff_low <= r.diff <= r.diff_high
            assert -1 <= r.diff_low and r.diff_high <= 1
    assert disagree == []


def test_tango_coverage_at_small_n():
    """Exact coverage (all tables enumerated) of the 95 % interval at n = 30 over a grid of
    true (p_b, p_c): close to 95 %, never far below. The Wald interval, for contrast,
    covers as little as 74 % here."""
    from scipy.stats import multinomial

    n = 30
    tables = [(b, c) for b in range(n + 1) for c in range(n + 1 - b)]
    intervals = np.array([tango_interval(b, c, n) for b, c in tables])
    counts = [[b, c, n - b - c] for b, c in tables]
    coverage = []
    for pb in np.linspace(0.01, 0.3, 12):
        for pc in np.linspace(0.01, 0.3, 12):
            prob = multinomial.pmf(counts, n, [pb, pc, 1 - pb - pc])
            inside = (intervals[:, 0] <= pc - pb) & (pc - pb <= intervals[:, 1])
            coverage.append(prob[inside].sum())
    assert min(coverage) > 0.93
    assert 0.945 < np.mean(coverage) < 0.965


def test_no_discordant_items():
    a = np.array([True, False, True, True])
    r = mcnemar(a, a.copy())
    assert (r.b, r.c, r.p_value, r.diff) == (0, 0, 1.0, 0.0)
    # Not a zero-width interval: T(d) = -sign(d) sqrt(n |d| / (1 - |d|)) = +-z at |d| = z^2 / (n + z^2).
    half = Z95**2 / (4 + Z95**2)
    assert (r.diff_low, r.diff_high) == pytest.approx((-half, half))


def test_mcnemar_is_symmetric():
    a, b = paired(50, 10, 2, 5)
    ab, ba = mcnemar(a, b), mcnemar(b, a)
    assert (ab.b, ab.c) == (ba.c, ba.b)
    assert ab.p_value == ba.p_value
    assert (ab.diff_low, ab.diff_high) == pytest.approx((-ba.diff_high, -ba.diff_low))


def test_mcnemar_accepts_zero_one_ints():
    a, b = paired(5, 4, 0, 1)
    assert mcnemar(a.astype(int), b.astype(int)) == mcnemar(a, b)


def test_level_widens_interval():
    narrow, wide = mcnemar_counts(3, 9, 100, level=0.5), mcnemar_counts(3, 9, 100, level=0.99)
    assert wide.diff_high - wide.diff_low > narrow.diff_high - narrow.diff_low
    assert narrow.p_value == wide.p_value


@pytest.mark.parametrize(
    "a, b, match",
    [
        ([], [], "non-empty"),
        ([True, False], [True], "same items"),
        ([[True]], [[True]], "1-D"),
        ([0, 2], [1, 1], "booleans"),
    ],
)
def test_mcnemar_rejects_bad_input(a, b, match):
    with pytest.raises(ValueError, match=match):
        mcnemar(a, b)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((5, 6, 10), {}, r"b \+ c <= n"),
        ((-1, 2, 10), {}, "b, c >= 0"),
        ((1, 2, 10), {"level": 1.0}, r"'level' parameter must be a float in the range \(0, 1\). Got 1.0"),
    ],
)
def test_mcnemar_counts_rejects_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        mcnemar_counts(*args, **kwargs)


# --------------------------------------------------------------------------- Wilson


@pytest.mark.parametrize(
    "k, n, low, high",
    # The worked examples of Newcombe (1998), Two-sided confidence intervals for the single
    # proportion, Statistics in Medicine 17, 857-872: the score method without continuity correction.
    [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)],
)
def test_wilson_published_examples(k, n, low, high):
    assert tuple(round(x, 4) for x in wilson_interval(k, n)) == (low, high)


@pytest.mark.parametrize("k, n", [(170, 200), (0, 20), (20, 20), (7, 9)])
def test_wilson_bounds_solve_the_score_equation(k, n):
    """Each bound p solves |k - n p| = z sqrt(n p (1 - p)) (or is 0 or 1 at k = 0 or n)."""
    for p in wilson_interval(k, n):
        if 0 < p < 1:
            assert abs(k - n * p) == pytest.approx(Z95 * math.sqrt(n * p * (1 - p)), rel=1e-9)
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(20, 20)[1] == 1.0


@pytest.mark.parametrize("k, n", [(3, 2), (-1, 5), (1, 0), (0.5, 4)])
def test_wilson_rejects_bad_counts(k, n):
    with pytest.raises(ValueError, match="integers 0 <= k <= n"):
        wilson_interval(k, n)


# --------------------------------------------------------------------------- Holm


def test_holm_known_values():
    # Sorted: 0.005 * 4 = 0.02, 0.01 * 3 = 0.03, 0.03 * 2 = 0.06, 0.04 * 1 -> max(0.06, 0.04) = 0.06.
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == [1.0, 1.0]  # capped at 1
    assert holm([0.02]) == [0.02] and holm([]) == []


def test_holm_rejects_what_bonferroni_rejects_and_more():
    p = [0.01, 0.012, 0.014, 0.3]
    bonferroni = [min(1.0, 4 * x) for x in p]
    assert sum(x < 0.05 for x in bonferroni) == 2
    assert sum(x < 0.05 for x in holm(p)) == 3  # 0.014 * 2 = 0.028


@pytest.mark.parametrize("bad", [[0.1, 1.5], [-0.1], [float("nan")]])
def test_holm_rejects_bad_p_values(bad):
    with pytest.raises(ValueError, match=r"p-values must be numbers in \[0, 1\]"):
        holm(bad)


@pytest.mark.slow
def test_wilson_interval_always_holds_its_estimate():
    """Float noise once left k = n (or k = 0) a few ulps outside its own interval: a report's
    accuracy plot then failed on a negative error bar (n = 10, 13, 25, ... test images)."""
    for n in range(1, 400):
        for k in range(n + 1):
            low, high = wilson_interval(k, n)
            assert 0.0 <= low <= k / n <= high <= 1.0, (k, n, low, high)
        assert wilson_interval(n, n)[1] == 1.0 and wilson_interval(0, n)[0] == 0.0


# --------------------------------------------------------------------------- paired t over seeds


def test_paired_t_students_sleep_data():
    """Student (1908)'s sleep data, as R's ``t.test(extra ~ group, data = sleep, paired = TRUE)``
    reports it (drug 2 minus drug 1): t = 4.0621, df = 9, p = 0.002833, mean difference 1.58,
    95 % CI 0.7001142 to 2.4598858."""
    drug1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
    drug2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]
    r = paired_t(drug1, drug2)
    assert (r.n, r.df) == (10, 9)
    assert round(r.t, 4) == 4.0621 and round(r.p_value, 6) == 0.002833
    assert r.diff == pytest.approx(1.58)
    assert (round(r.diff_low, 7), round(r.diff_high, 7)) == (0.7001142, 2.4598858)
    assert (r.test, r.interval) == ("paired t-test over seeds", "t interval of the mean difference")


def test_paired_t_matches_scipy_and_agrees_with_its_interval():
    from scipy.stats import ttest_rel

    rng = np.random.default_rng(3)
    agree = 0
    for _ in range(300):
        n = int(rng.integers(2, 8))
        a = rng.uniform(0.8, 0.95, n)
        b = a + rng.normal(0.01, 0.02, n)
        r = paired_t(a, b)
        ref = ttest_rel(b, a)
        low, high = ref.confidence_interval(0.95)
        assert r.p_value == pytest.approx(ref.pvalue, rel=1e-9)
        assert (r.diff_low, r.diff_high) == (pytest.approx(low, rel=1e-9), pytest.approx(high, rel=1e-9))
        assert (r.p_value < 0.05) == (r.diff_low > 0 or r.diff_high < 0)
        agree += r.p_value < 0.05
    assert 20 < agree < 280  # both readings occur, so the agreement was checked both ways


def test_paired_t_with_identical_differences():
    r = paired_t([0.5, 0.75], [0.625, 0.875])  # every seed +0.125 (exact in binary): no spread
    assert r.p_value == 0.0 and r.t == math.inf
    assert (r.diff_low, r.diff_high) == (0.125, 0.125)
    r = paired_t([0.8, 0.9], [0.8, 0.9])
    assert (r.p_value, r.diff_low, r.diff_high) == (1.0, 0.0, 0.0)


@pytest.mark.parametrize("a, b", [([0.9], [0.8]), ([0.9, 0.8], [0.8]), ([0.9, float("nan")], [0.8, 0.7])])
def test_paired_t_rejects_bad_input(a, b):
    with pytest.raises(ValueError, match="same length n >= 2 with finite values"):
        paired_t(a, b)
