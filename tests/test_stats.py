"""Tests for tlexp.results.stats: McNemar's exact test and the paired bootstrap, on known inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tlexp.results.stats import bootstrap_ci, mcnemar


def paired(both: int, a_only: int, b_only: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    """Correctness arrays with the given numbers of each kind of item."""
    a = np.array([True] * both + [True] * a_only + [False] * b_only + [False] * neither)
    b = np.array([True] * both + [False] * a_only + [True] * b_only + [False] * neither)
    return a, b


def test_mcnemar_known_counts():
    a, b = paired(both=80, a_only=10, b_only=2, neither=8)
    r = mcnemar(a, b)
    assert (r["n"], r["b"], r["c"]) == (100, 10, 2)
    # By hand: P(X <= 2 | n=12, p=1/2) = (C(12,0) + C(12,1) + C(12,2)) / 2**12
    #        = (1 + 12 + 66) / 4096 = 79 / 4096 = 0.0192871...; two-sided: 158 / 4096 = 0.0385742...
    assert r["p_value"] == pytest.approx(158 / 4096, rel=1e-12)
    assert round(r["p_value"], 4) == 0.0386
    assert r["accuracy_a"] == pytest.approx(0.90) and r["accuracy_b"] == pytest.approx(0.82)


def test_mcnemar_is_symmetric():
    a, b = paired(50, 10, 2, 5)
    ab, ba = mcnemar(a, b), mcnemar(b, a)
    assert (ab["b"], ab["c"]) == (ba["c"], ba["b"])
    assert ab["p_value"] == ba["p_value"]


def test_mcnemar_identical_classifiers_p_is_one():
    a = np.array([True, False, True, True])
    r = mcnemar(a, a.copy())
    assert (r["b"], r["c"], r["p_value"]) == (0, 0, 1.0)


def test_mcnemar_balanced_disagreement_capped_at_one():
    # b == c: 2 * P(X <= 3 | n=6) = 2 * 42/64 > 1, so p is capped at 1.
    a, b = paired(10, 3, 3, 0)
    assert mcnemar(a, b)["p_value"] == 1.0


def test_mcnemar_accepts_zero_one_ints():
    a, b = paired(5, 4, 0, 1)
    assert mcnemar(a.astype(int), b.astype(int)) == mcnemar(a, b)
    # 2 * P(X <= 0 | n=4) = 2 / 16
    assert mcnemar(a, b)["p_value"] == pytest.approx(0.125)


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


def test_bootstrap_contains_point_estimates():
    a, b = paired(150, 12, 30, 8)
    r = bootstrap_ci(a, b)
    assert (r["n"], r["n_boot"], r["level"]) == (200, 2000, 0.95)
    assert r["a"]["estimate"] == pytest.approx(162 / 200)
    assert r["b"]["estimate"] == pytest.approx(180 / 200)
    assert r["diff"]["estimate"] == pytest.approx((180 - 162) / 200)
    for key in ("a", "b", "diff"):
        assert r[key]["low"] <= r[key]["estimate"] <= r[key]["high"]
    # The paired difference: 18 more right of 200, clearly positive with 42 discordant items.
    assert r["diff"]["low"] > 0


def test_bootstrap_matches_normal_approximation():
    # For a proportion of 0.8 on n=400 the 95 % interval is about +-1.96*sqrt(.8*.2/400) = +-0.0392.
    a = np.array([True] * 320 + [False] * 80)
    r = bootstrap_ci(a, n_boot=20_000)
    half = 1.96 * math.sqrt(0.8 * 0.2 / 400)
    assert r["a"]["low"] == pytest.approx(0.8 - half, abs=0.006)
    assert r["a"]["high"] == pytest.approx(0.8 + half, abs=0.006)
    assert "b" not in r and "diff" not in r


def test_bootstrap_width_shrinks_with_n():
    widths = []
    for n in (50, 500, 5000):
        a = np.arange(n) % 10 != 0  # 90 % right
        ci = bootstrap_ci(a)["a"]
        widths.append(ci["high"] - ci["low"])
    assert widths[0] > widths[1] > widths[2] > 0


def test_bootstrap_is_deterministic_with_seed():
    a, b = paired(60, 7, 9, 4)
    assert bootstrap_ci(a, b, seed=3) == bootstrap_ci(a, b, seed=3)
    assert bootstrap_ci(a, b, seed=3) != bootstrap_ci(a, b, seed=4)


def test_bootstrap_identical_classifiers_zero_difference():
    a = np.array([True] * 30 + [False] * 10)
    r = bootstrap_ci(a, a.copy())
    assert r["diff"] == {"estimate": 0.0, "low": 0.0, "high": 0.0}


def test_bootstrap_level_widens_interval():
    a = np.arange(300) % 4 != 0
    narrow, wide = bootstrap_ci(a, level=0.5)["a"], bootstrap_ci(a, level=0.99)["a"]
    assert wide["high"] - wide["low"] > narrow["high"] - narrow["low"]


def test_bootstrap_many_replicates_in_chunks():
    a, b = paired(40, 5, 5, 0)
    r = bootstrap_ci(a, b, n_boot=250_000)  # more than one chunk; still fast (counts, not indices)
    assert r["diff"]["low"] < 0 < r["diff"]["high"]


@pytest.mark.parametrize(
    "kwargs, match", [({"n_boot": 0}, "n_boot"), ({"level": 1.0}, "level"), ({"level": 0}, "level")]
)
def test_bootstrap_rejects_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bootstrap_ci([True, False], **kwargs)
