"""Classification metrics from labels and class probabilities. No TensorFlow.

Both classifiers of a run (the dense head and the forest on its features) hand in the
same thing, ``(y_true, proba)``, so they are scored by one function and their numbers
are comparable. Everything returned is plain Python, ready for ``metrics.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# How far a row of `proba` may sum from 1: float32 softmax drifts by ~1e-6, while
# logits or a single column of p would be off by far more.
_ROW_SUM_TOL = 1e-3


def classification_metrics(
    y_true: Any, proba: Any, class_names: Sequence[str], *, logits: Any = None
) -> dict[str, Any]:
    """Score predicted class probabilities against true labels.

    The prediction is the argmax of ``proba`` (ties go to the lowest class index).
    With two classes, precision/recall/F1 are those of the positive class (index 1);
    with more, they are macro averages over the classes that occur in ``y_true`` or in
    the predictions (scikit-learn's default), so a class absent from a small test
    split does not count as a zero.

    Undefined values are None, never a made-up number: the precision of a class that is
    never predicted (0/0), the recall of a class that never occurs; F1 is 0 for a class
    that occurs but is never predicted, None for one that neither occurs nor is
    predicted. A macro average runs over the classes where the value is defined
    (scikit-learn's ``zero_division=np.nan``).

    The log loss is computed from ``logits`` when given (exact, however confident the
    model: the dense head), else from ``proba`` exactly as ``sklearn.metrics.log_loss``
    does (probabilities clipped to [eps, 1 - eps], eps the float64 machine epsilon).

    Args:
        y_true: Integer class indices, shape (n,), values in [0, k).
        proba: Class probabilities, shape (n, k), rows summing to 1. For a two-class
            task pass the columns [1 - p, p], where p is the probability of class 1.
        class_names: The k class names, in column order of ``proba``.
        logits: Pre-activation outputs, shape (n, 1) for a two-class sigmoid unit or
            (n, k) for a softmax, or None.

    Returns:
        A dict of plain Python values: ``n``, ``accuracy``, ``log_loss``,
        ``precision``, ``recall``, ``f1``, ``average`` ("binary" or "macro"),
        ``positive_class`` (class_names[1] for two classes, else None), ``roc_auc``
        (None where undefined), ``confusion`` (k x k list of int lists, rows = true
        class, columns = predicted class) and ``class_names``.

    Raises:
        ValueError: If the inputs are empty, have mismatched shapes, or hold values
            that are not class indices / probabilities.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    names = _check_class_names(class_names)
    k = len(names)
    y, p = _check_inputs(y_true, proba, k)
    pred = np.argmax(p, axis=1)

    binary = k == 2
    average = "binary" if binary else "macro"
    # pos_label only matters for average="binary"; sklearn ignores it for "macro".
    precision, recall, f1, _ = precision_recall_fscore_support(
        y, pred, average=average, pos_label=1, zero_division=np.nan
    )
    confusion = confusion_matrix(y, pred, labels=list(range(k)))

    return {
        "n": int(len(y)),
        "accuracy": float(np.mean(pred == y)),
        "log_loss": _log_loss(y, p) if logits is None else _log_loss_from_logits(y, logits, k),
        "precision": _defined(precision),
        "recall": _defined(recall),
        "f1": _defined(f1),
        "average": average,
        "positive_class": names[1] if binary else None,
        "roc_auc": _roc_auc(y, p),
        "confusion": confusion.astype(int).tolist(),
        "class_names": names,
    }


def roc_points(y_true: Any, score: Any) -> tuple[np.ndarray, np.ndarray, float]:
    """ROC curve of a two-class task.

    Args:
        y_true: Labels 0/1, shape (n,); both classes must occur.
        score: Probability (or any score) of class 1, shape (n,).

    Returns:
        ``(fpr, tpr, auc)``: false and true positive rates, each shape (m,), from
        (0, 0) to (1, 1), and the area under that curve.

    Raises:
        ValueError: If the shapes differ, labels are not 0/1, or only one class occurs.
    """
    from sklearn.metrics import auc, roc_curve

    y = _as_labels(y_true, "y_true")
    s = np.asarray(score, dtype=float)
    if s.ndim != 1 or len(s) != len(y):
        raise ValueError(f"score must have shape (n,) == y_true's shape {y.shape}. Got {s.shape} instead.")
    if not set(np.unique(y)) <= {0, 1}:
        raise ValueError(f"y_true must hold 0/1 labels for a ROC curve. Got classes {np.unique(y).tolist()} instead.")
    if len(np.unique(y)) < 2:
        # Without both positives and negatives one of the two rates is 0/0.
        raise ValueError(
            f"A ROC curve needs both classes in y_true. Got only class {int(y[0])} ({len(y)} samples) instead."
        )
    fpr, tpr, _ = roc_curve(y, s, pos_label=1)
    return fpr, tpr, float(auc(fpr, tpr))


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean cross-entropy of probabilities, as ``sklearn.metrics.log_loss`` computes it."""
    from sklearn.metrics import log_loss

    # Rows may drift from 1 by float32 rounding (within _ROW_SUM_TOL); scikit-learn warns on that.
    return float(log_loss(y, p / p.sum(axis=1, keepdims=True), labels=list(range(p.shape[1]))))


def _log_loss_from_logits(y: np.ndarray, logits: Any, k: int) -> float:
    """Mean cross-entropy from logits, without ever forming a probability that rounds to 0 or 1.

    Two classes (one sigmoid unit z): ``log(1 + e^{(1 - 2y) z})``, i.e. ``logaddexp(0, -z)``
    for y = 1. The textbook ``log(1 + e^z) - y z`` subtracts two numbers near z and so
    returns 0 for a confident correct prediction (z = 40: 40 - 40) instead of its loss,
    ``log1p(e^-40)`` = 4.25e-18; ``logaddexp`` computes ``log1p(e^-|x|)`` itself.

    More classes: ``logsumexp(z) - z_y`` = ``log(sum_j e^{z_j - z_y})``; where ``z_y`` is
    the largest logit that is ``log1p`` of the other terms, exact for the same reason.
    """
    from scipy.special import logsumexp

    z = np.asarray(logits, dtype=np.float64)
    if k == 2:
        z = z.reshape(-1)
        return float(np.mean(np.logaddexp(0.0, (1.0 - 2.0 * y) * z)))
    rows = np.arange(len(y))
    d = z - z[rows, y][:, None]  # d[i, y_i] = 0
    top = d.max(axis=1)  # >= 0; 0 where the true class has the largest logit
    others = np.exp(np.minimum(d, 0.0))  # only read where top == 0, i.e. every d <= 0; no overflow
    others[rows, y] = 0.0
    loss = np.where(top > 0, logsumexp(d, axis=1), np.log1p(others.sum(axis=1)))
    return float(np.mean(loss))


def _defined(x: float) -> float | None:
    """A metric's value, or None where it is undefined (NaN from zero_division=np.nan)."""
    return None if np.isnan(x) else float(x)


def _roc_auc(y: np.ndarray, p: np.ndarray) -> float | None:
    """ROC AUC: of column 1 for two classes, macro one-vs-rest for more; None if undefined.

    An AUC ranks positives against negatives, so it is undefined when y holds fewer
    than two classes (there is nothing to rank against). With more classes, the
    one-vs-rest AUC of a class absent from y is undefined too, so the macro average
    runs over the classes present; with all classes present it equals sklearn's
    roc_auc_score(multi_class="ovr", average="macro").
    """
    from sklearn.metrics import roc_auc_score

    present = np.unique(y)
    if len(present) < 2:
        return None
    if p.shape[1] == 2:
        return float(roc_auc_score(y, p[:, 1]))
    return float(np.mean([roc_auc_score(y == c, p[:, c]) for c in present]))


def _check_class_names(class_names: Sequence[str]) -> list[str]:
    if isinstance(class_names, str):
        raise ValueError(
            f"class_names must be a sequence of names, one per class. Got the string "
            f"{class_names!r} instead; pass e.g. ['cat', 'dog']."
        )
    names = [str(c) for c in class_names]
    if len(names) < 2:
        raise ValueError(f"class_names must name at least 2 classes. Got {len(names)} ({names}) instead.")
    return names


def _as_labels(y_true: Any, name: str) -> np.ndarray:
    """Return ``y_true`` as a 1-D int array, accepting integral floats (e.g. from CSV)."""
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class indices with shape (n,). Got shape {y.shape} instead.")
    if len(y) == 0:
        raise ValueError(f"{name} is empty: metrics need at least one sample. Got shape {y.shape} instead.")
    if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        y = y.astype(int)
    if y.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer class indices. Got dtype {y.dtype} instead.")
    return y.astype(np.int64)


def _check_inputs(y_true: Any, proba: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    y = _as_labels(y_true, "y_true")
    p = np.asarray(proba, dtype=float)
    if p.ndim != 2:
        raise ValueError(
            f"proba must be a 2-D array with shape (n, k). Got shape {p.shape} instead. "
            "For a two-class task pass np.column_stack([1 - p, p])."
        )
    if p.shape[1] != k:
        raise ValueError(f"proba must have shape (n, k) with k == len(class_names) == {k}. Got {p.shape} instead.")
    if p.shape[0] != len(y):
        raise ValueError(
            f"y_true and proba must have the same number of samples. Got {len(y)} labels "
            f"and {p.shape[0]} rows of proba instead."
        )
    bad = (y < 0) | (y >= k)
    if bad.any():
        raise ValueError(
            f"y_true values must be class indices in [0, {k}). Got {sorted(set(y[bad].tolist()))[:5]} instead."
        )
    if not np.all(np.isfinite(p)) or (p < 0).any():
        raise ValueError(
            "proba must hold finite, non-negative probabilities. "
            f"Got values in [{np.nanmin(p)}, {np.nanmax(p)}] instead."
        )
    sums = p.sum(axis=1)
    off = np.abs(sums - 1.0) > _ROW_SUM_TOL
    if off.any():
        i = int(np.argmax(off))
        raise ValueError(
            f"proba rows must sum to 1 (class probabilities). Got row {i} summing to "
            f"{sums[i]:.4g} instead. If these are logits, apply a softmax first."
        )
    return y, p
