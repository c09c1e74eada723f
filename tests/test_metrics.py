"""Tests for tlexp.results._metrics: hand-computed examples, agreement with sklearn, input errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn import metrics as skm

from tlexp.results import classification_metrics, roc_points


def two_col(p1):
    """Two-class proba columns [1 - p, p] from the probability of class 1."""
    p1 = np.asarray(p1, dtype=float)
    return np.column_stack([1 - p1, p1])


def test_binary_hand_computed():
    # y = [0, 0, 1, 1], p(class 1) = [0.1, 0.6, 0.4, 0.9]
    # argmax predictions: [0, 1, 0, 1] -> 2 of 4 right: accuracy 0.5.
    # Confusion (rows true, cols predicted): true 0 -> [1, 1], true 1 -> [1, 1].
    # Positive class 1: TP = 1, FP = 1, FN = 1 -> precision = recall = F1 = 0.5.
    # AUC: positive scores {0.4, 0.9} vs negative {0.1, 0.6}: of the 4 pairs,
    #   0.4>0.1, 0.9>0.1, 0.9>0.6 are ranked right, 0.4<0.6 is not -> 3/4 = 0.75.
    # Log loss: true-class probabilities 0.9, 0.4, 0.4, 0.9 ->
    #   -(2 ln 0.9 + 2 ln 0.4) / 4 = (0.1053605 + 0.9162907) / 2 = 0.5108256.
    m = classification_metrics([0, 0, 1, 1], two_col([0.1, 0.6, 0.4, 0.9]), ["cat", "dog"])
    assert m["n"] == 4
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["confusion"] == [[1, 1], [1, 1]]
    assert m["precision"] == pytest.approx(0.5)
    assert m["recall"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(0.5)
    assert m["roc_auc"] == pytest.approx(0.75)
    assert m["log_loss"] == pytest.approx(0.5108256, abs=1e-7)
    assert m["average"] == "binary"
    assert m["positive_class"] == "dog"
    assert m["class_names"] == ["cat", "dog"]


def test_binary_positive_class_is_index_1():
    # y = [1, 1, 0], predictions [1, 0, 0]: for class 1, TP = 1, FP = 0, FN = 1
    # -> precision 1.0, recall 0.5, F1 = 2 * 1 * 0.5 / 1.5 = 2/3.
    m = classification_metrics([1, 1, 0], two_col([0.8, 0.3, 0.2]), ["neg", "pos"])
    assert (m["precision"], m["recall"]) == pytest.approx((1.0, 0.5))
    assert m["f1"] == pytest.approx(2 / 3)


def test_log_loss_of_probabilities_is_sklearns_even_when_certain():
    # A certain, wrong prediction: p(true) = 0 is clipped to the float64 epsilon, as
    # scikit-learn does: -ln(2.22e-16) = 36.04 (Keras' 1e-7 would give 16.12).
    m = classification_metrics([1], [[1.0, 0.0]], ["a", "b"])
    assert m["log_loss"] == pytest.approx(skm.log_loss([1], [[1.0, 0.0]], labels=[0, 1]))
    assert m["log_loss"] == pytest.approx(-math.log(np.finfo(np.float64).eps))
    m = classification_metrics([0, 1], [[1.0, 0.0], [0.0, 1.0]], ["a", "b"])
    assert m["log_loss"] == pytest.approx(skm.log_loss([0, 1], [[1.0, 0.0], [0.0, 1.0]], labels=[0, 1]))


def test_log_loss_from_logits_is_exact_and_matches_sklearn():
    """From logits the loss needs no clipping: it equals scikit-learn's on the float64
    probabilities wherever those are still below 1, and stays exact beyond."""
    from scipy.special import expit, softmax

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    z = rng.uniform(-30, 30, 400)  # many confident predictions, right and wrong
    p = np.column_stack([expit(-z), expit(z)])
    m = classification_metrics(y, p, ["a", "b"], logits=z[:, None])
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, p, labels=[0, 1]), rel=1e-9)
    assert m["accuracy"] == pytest.approx(np.mean((z > 0) == y))
    # A wrong prediction at logit 60: the loss is 60; float32 probabilities would say 0 and
    # any clipping rule caps it (Keras at 16.1, scikit-learn at 36.0).
    m = classification_metrics([0], [[0.0, 1.0]], ["a", "b"], logits=[[60.0]])
    assert m["log_loss"] == pytest.approx(60.0, rel=1e-12)
    # Softmax logits, four classes.
    z4 = rng.normal(0, 8, (300, 4))
    y4 = rng.integers(0, 4, 300)
    p4 = softmax(z4, axis=1)
    m = classification_metrics(y4, p4, list("abcd"), logits=z4)
    assert m["log_loss"] == pytest.approx(skm.log_loss(y4, p4, labels=[0, 1, 2, 3]), rel=1e-9)


def test_undefined_precision_recall_f1_are_none_not_zero():
    # The positive class occurs but is never predicted: precision is 0/0 (undefined),
    # recall 0, F1 0 (the class was never found).
    m = classification_metrics([0, 0, 1, 1], two_col([0.1, 0.2, 0.3, 0.4]), ["cat", "dog"])
    assert (m["precision"], m["recall"], m["f1"]) == (None, 0.0, 0.0)
    # The positive class neither occurs nor is predicted: nothing is defined.
    m = classification_metrics([0, 0], two_col([0.1, 0.2]), ["cat", "dog"])
    assert (m["precision"], m["recall"], m["f1"]) == (None, None, None)
    json.dumps(m)  # null in metrics.json, not NaN
    # Macro: a class never predicted is left out of the precision average, not counted as 0.
    m = classification_metrics(
        [0, 1, 2, 2], [[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.8, 0.1], [0.1, 0.8, 0.1]], ["a", "b", "c"]
    )
    # per class precision: a 1/1, b 1/3, c undefined -> mean of the defined ones = 2/3
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx((1 + 1 + 0) / 3)


def test_three_class_macro_hand_computed():
    y = [0, 1, 2, 2]
    proba = [
        [0.7, 0.2, 0.1],  # true 0, predicted 0
        [0.5, 0.3, 0.2],  # true 1, predicted 0
        [0.1, 0.2, 0.7],  # true 2, predicted 2
        [0.2, 0.5, 0.3],  # true 2, predicted 1
    ]
    # Confusion: true 0 -> [1,0,0], true 1 -> [1,0,0], true 2 -> [0,1,1]; accuracy 2/4.
    # Per class (precision, recall, F1):
    #   0: TP 1, FP 1, FN 0 -> (0.5, 1.0, 2/3)
    #   1: TP 0, FP 1, FN 1 -> (0.0, 0.0, 0.0)
    #   2: TP 1, FP 0, FN 1 -> (1.0, 0.5, 2/3)
    # Macro: precision 1.5/3 = 0.5, recall 1.5/3 = 0.5, F1 (4/3)/3 = 4/9.
    # One-vs-rest AUC: class 0: 0.7 beats 0.5, 0.1, 0.2 -> 1; class 1: 0.3 beats
    #   0.2, 0.2 but not 0.5 -> 2/3; class 2: 0.7 and 0.3 beat 0.1 and 0.2 -> 1.
    #   Macro = (1 + 2/3 + 1) / 3 = 8/9.
    # Log loss: true-class probabilities 0.7, 0.3, 0.7, 0.3 ->
    #   -(ln 0.7 + ln 0.3) / 2 = (0.3566749 + 1.2039728) / 2 = 0.7803239.
    m = classification_metrics(y, proba, ["a", "b", "c"])
    assert m["confusion"] == [[1, 0, 0], [1, 0, 0], [0, 1, 1]]
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["precision"] == pytest.approx(0.5)
    assert m["recall"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(4 / 9)
    assert m["roc_auc"] == pytest.approx(8 / 9)
    assert m["log_loss"] == pytest.approx(0.7803239, abs=1e-7)
    assert m["average"] == "macro"
    assert m["positive_class"] is None


@pytest.mark.parametrize("k", [2, 4])
def test_agrees_with_sklearn_on_random_input(k):
    rng = np.random.default_rng(0)
    n = 200
    y = rng.integers(0, k, n)
    proba = rng.dirichlet(np.ones(k), n)
    proba[np.arange(n), y] += 0.3  # better than chance, so the numbers are not trivial
    proba /= proba.sum(axis=1, keepdims=True)
    pred = proba.argmax(axis=1)
    m = classification_metrics(y, proba, [f"c{i}" for i in range(k)])

    average = "binary" if k == 2 else "macro"
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred, average=average, zero_division=np.nan))
    assert m["confusion"] == skm.confusion_matrix(y, pred).tolist()
    expected_auc = (
        skm.roc_auc_score(y, proba[:, 1]) if k == 2 else skm.roc_auc_score(y, proba, multi_class="ovr", average="macro")
    )
    assert m["roc_auc"] == pytest.approx(expected_auc)
    # No probability here is near 0 or 1, so clipping is a no-op and sklearn agrees.
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, proba, labels=list(range(k))))


def test_single_class_has_no_auc():
    # y = [1, 1, 1], predictions [0, 1, 1]: accuracy 2/3; no negatives, so no AUC.
    m = classification_metrics([1, 1, 1], two_col([0.2, 0.7, 0.9]), ["a", "b"])
    assert m["roc_auc"] is None
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["confusion"] == [[0, 0], [1, 2]]


def test_confusion_is_k_by_k_when_classes_are_absent():
    # Class 2 occurs neither in y nor in the predictions: the matrix keeps its row and
    # column; macro F1 and AUC average over classes 0 and 1 only (both perfect).
    m = classification_metrics([0, 1], [[0.9, 0.05, 0.05], [0.1, 0.8, 0.1]], ["a", "b", "c"])
    assert m["confusion"] == [[1, 0, 0], [0, 1, 0], [0, 0, 0]]
    assert m["f1"] == pytest.approx(1.0)
    assert m["roc_auc"] == pytest.approx(1.0)


def test_argmax_ties_go_to_lowest_index():
    m = classification_metrics([0, 1], [[0.5, 0.5], [0.5, 0.5]], ["a", "b"])
    assert m["confusion"] == [[1, 0], [1, 0]]


def test_output_is_plain_json():
    m = classification_metrics(np.array([0, 1, 1]), two_col([0.2, 0.7, 0.4]), ("a", "b"))
    json.dumps(m, allow_nan=False)
    assert all(not type(v).__module__.startswith("numpy") for v in m.values())


def test_accepts_integral_float_labels():
    m = classification_metrics(np.array([0.0, 1.0]), two_col([0.3, 0.8]), ["a", "b"])
    assert m["accuracy"] == 1.0


AB = ["a", "b"]
HALF = [[0.5, 0.5]] * 2  # two rows of a valid two-class proba


@pytest.mark.parametrize(
    ("y", "proba", "names", "match"),
    [
        (
            [0, 1],
            [[0.5, 0.5, 0.0]] * 2,
            AB,
            r"proba must have shape \(n, k\) with k == len\(class_names\) == 2\. "
            r"Got \(2, 3\) instead",
        ),
        ([0, 1], [0.3, 0.7], AB, r"proba must be a 2-D array .* Got shape \(2,\)"),
        ([0, 1, 1], HALF, AB, r"same number of samples\. Got 3 labels and 2 rows"),
        ([], np.zeros((0, 2)), AB, r"y_true is empty"),
        ([[0], [1]], HALF, AB, r"y_true must be a 1-D array .* Got shape \(2, 1\)"),
        ([0, 2], HALF, AB, r"class indices in \[0, 2\)\. Got \[2\]"),
        ([0, 1], HALF, ["a"], r"at least 2 classes\. Got 1"),
        ([0, 1], HALF, "ab", r"sequence of names"),
        ([0.5, 1], HALF, AB, r"integer class indices\. Got dtype float64"),
        ([0, 1], [[2.0, -1.0]] * 2, AB, r"finite, non-negative probabilities"),
        ([0, 1], [[3.0, 1.0]] * 2, AB, r"rows must sum to 1 .* row 0 summing to 4 .* softmax"),
    ],
)
def test_invalid_inputs(y, proba, names, match):
    with pytest.raises(ValueError, match=match):
        classification_metrics(y, proba, names)


def test_roc_points():
    # Same example as test_binary_hand_computed: AUC 0.75; the curve runs (0,0) -> (1,1).
    fpr, tpr, auc = roc_points([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9])
    assert auc == pytest.approx(0.75)
    # Thresholds 0.9, 0.6, 0.4, 0.1 in turn: a positive, a negative, a positive, a negative.
    assert fpr.tolist() == [0, 0, 0.5, 0.5, 1] and tpr.tolist() == [0, 0.5, 0.5, 1, 1]
    assert type(auc) is float  # a plain float, as metrics.json needs it (not numpy's)


@pytest.mark.parametrize(
    ("y", "score", "match"),
    [
        ([1, 1], [0.2, 0.3], r"needs both classes in y_true\. Got only class 1"),
        ([0, 2], [0.2, 0.3], r"0/1 labels .* Got classes \[0, 2\]"),
        ([0, 1], [0.2, 0.3, 0.4], r"score must have shape \(n,\)"),
    ],
)
def test_roc_points_errors(y, score, match):
    with pytest.raises(ValueError, match=match):
        roc_points(y, score)


def test_log_loss_of_a_confident_correct_prediction_is_not_zero():
    """Logit 40, label 1: the loss is log1p(e^-40) = 4.25e-18. The textbook form
    logaddexp(0, z) - y z is 40 - 40 = 0 in floats (issue #23, point 5)."""
    from scipy.special import expit

    expected = np.log1p(np.exp(-40.0))
    assert expected == pytest.approx(4.248354255291589e-18, rel=1e-12)
    m = classification_metrics([1], [[expit(-40.0), expit(40.0)]], ["a", "b"], logits=[[40.0]])
    assert m["log_loss"] == pytest.approx(expected, rel=1e-12, abs=0)
    m = classification_metrics([0], [[expit(40.0), expit(-40.0)]], ["a", "b"], logits=[[-40.0]])  # label 0
    assert m["log_loss"] == pytest.approx(expected, rel=1e-12, abs=0)
    # Softmax: the true class 40 above the two others: log1p(2 e^-40).
    m = classification_metrics([2], [[0.0, 0.0, 1.0]], list("abc"), logits=[[0.0, 0.0, 40.0]])
    assert m["log_loss"] == pytest.approx(np.log1p(2 * np.exp(-40.0)), rel=1e-12, abs=0)
    # and a wrong one still costs its margin (no overflow warning from the exact branch)
    with np.errstate(over="raise"):
        m = classification_metrics([0], [[0.0, 0.0, 1.0]], list("abc"), logits=[[0.0, 0.0, 800.0]])
    assert m["log_loss"] == pytest.approx(800.0, rel=1e-12)
