"""Paired comparisons of two classifiers on the same items. No TensorFlow.

Both tests here work on per-item correctness (did classifier A / B get image i right?),
which is all a paired comparison of accuracies needs, and what ``predictions.csv``
gives for every classifier of a run.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Bootstrap replicates are drawn in chunks of this many, so memory stays bounded
# whatever n_boot is (each chunk is a (chunk, 4) array of counts).
_CHUNK = 100_000


def mcnemar(correct_a: Any, correct_b: Any) -> dict[str, Any]:
    """McNemar's test of equal accuracy for two classifiers scored on the same items.

    Only the discordant items carry information: ``b`` (A right, B wrong) and ``c``
    (A wrong, B right). Under the null hypothesis each discordant item is a fair coin
    flip, so ``b ~ Binomial(b + c, 1/2)``. The p-value is the **exact** two-sided
    binomial one, ``min(1, 2 * P(X <= min(b, c)))``, rather than the chi-squared
    approximation: on test splits of a few hundred images two good classifiers
    disagree on a handful of items, and with ``b + c`` below ~25 the chi-squared
    approximation is poor (and its continuity correction too conservative).

    Args:
        correct_a: Whether A classified each item correctly, shape (n,), bool (or 0/1).
        correct_b: The same for B, shape (n,), same items in the same order.

    Returns:
        ``{"n", "b", "c", "p_value", "accuracy_a", "accuracy_b", "test"}``; ``p_value``
        is 1.0 when ``b + c == 0`` (the classifiers never disagree).

    Raises:
        ValueError: If the arrays are empty, not 1-D, of different lengths, or not boolean.
    """
    from scipy.stats import binom

    a, b_ = _check_pair(correct_a, correct_b)
    b = int(np.sum(a & ~b_))
    c = int(np.sum(~a & b_))
    p = 1.0 if b + c == 0 else min(1.0, 2.0 * float(binom.cdf(min(b, c), b + c, 0.5)))
    return {
        "n": int(a.size),
        "b": b,
        "c": c,
        "p_value": p,
        "accuracy_a": float(a.mean()),
        "accuracy_b": float(b_.mean()),
        "test": "exact binomial (two-sided)",
    }


def bootstrap_ci(
    correct_a: Any,
    correct_b: Any = None,
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Percentile bootstrap confidence intervals of accuracy, resampling items.

    Each replicate draws n items with replacement; with ``correct_b`` both classifiers
    are scored on the same draw, so the interval of the difference is a paired one.
    A replicate's accuracies depend only on how many items of each kind it drew (both
    right, only A right, only B right, both wrong), so replicates are drawn as
    multinomial counts over those four kinds: the same distribution as resampling
    indices, in O(n_boot) time and memory instead of O(n_boot * n).

    Args:
        correct_a: Whether A classified each item correctly, shape (n,), bool (or 0/1).
        correct_b: Optional, the same for B, shape (n,), same items in the same order.
        n_boot: Number of bootstrap replicates.
        level: Confidence level, in (0, 1).
        seed: Seed of the random generator; equal seeds give equal intervals.

    Returns:
        ``{"n", "n_boot", "level", "a": ci}`` plus, with ``correct_b``, ``"b": ci`` and
        ``"diff": ci`` for ``accuracy_b - accuracy_a``; each ``ci`` is
        ``{"estimate", "low", "high"}`` (estimate = the value on all items).

    Raises:
        ValueError: If the arrays are invalid (see :func:`mcnemar`), ``n_boot < 1`` or
            ``level`` is outside (0, 1).
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"The 'n_boot' parameter must be an int >= 1. Got {n_boot!r} instead.")
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"The 'level' parameter must be a float in the range (0, 1). Got {level!r} instead.")
    if correct_b is None:
        a = _check_one(correct_a, "correct_a")
        b = a  # B == A: the four kinds collapse to "right" and "wrong"
    else:
        a, b = _check_pair(correct_a, correct_b)
    n = a.size
    kinds = np.array([np.sum(a & b), np.sum(a & ~b), np.sum(~a & b), np.sum(~a & ~b)], dtype=float)

    rng = np.random.default_rng(seed)
    counts = np.concatenate(
        [rng.multinomial(n, kinds / n, size=min(_CHUNK, n_boot - start)) for start in range(0, n_boot, _CHUNK)]
    )  # shape (n_boot, 4)
    acc_a = (counts[:, 0] + counts[:, 1]) / n
    acc_b = (counts[:, 0] + counts[:, 2]) / n

    tail = (1.0 - float(level)) / 2.0

    def ci(samples: np.ndarray, estimate: float) -> dict[str, float]:
        low, high = np.quantile(samples, [tail, 1.0 - tail])
        return {"estimate": float(estimate), "low": float(low), "high": float(high)}

    out: dict[str, Any] = {"n": int(n), "n_boot": int(n_boot), "level": float(level), "a": ci(acc_a, a.mean())}
    if correct_b is not None:
        out["b"] = ci(acc_b, b.mean())
        out["diff"] = ci(acc_b - acc_a, b.mean() - a.mean())
    return out


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
