"""Each classifier fitted on one depth's training rows and scored on val and test."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Score:
    """One classifier at one depth (a ``classifiers`` entry of ``probe.json``).

    Attributes:
        val_accuracy, test_accuracy: share of the split classified right.
        test_correct, test_n: the counts behind ``test_accuracy``.
        test_low, test_high: its 95 % Wilson interval.
    """

    val_accuracy: float
    test_accuracy: float
    test_correct: int
    test_n: int
    test_low: float
    test_high: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def score(estimator, x: np.ndarray, y: np.ndarray, split: np.ndarray, n_classes: int) -> Score:
    """Fit a fresh copy of ``estimator`` on the rows of ``split == "train"``, score val and test.

    Args:
        x: features, shape (n_rows, d); y: labels, shape (n_rows,); split: each row's split.
    """
    from sklearn.base import clone

    from tlexp.classifiers import class_proba
    from tlexp.results import wilson_interval

    fitted = clone(estimator).fit(x[split == "train"], y[split == "train"])

    def right(name: str) -> tuple[int, int]:
        rows = split == name
        pred = np.argmax(class_proba(fitted, x[rows], n_classes), axis=1)
        return int(np.sum(pred == y[rows])), int(rows.sum())

    (val_k, val_n), (k, n) = right("val"), right("test")
    low, high = wilson_interval(k, n)
    return Score(val_k / val_n, k / n, k, n, low, high)
