"""Classical classifiers on the penultimate features: building them from the config."""

from __future__ import annotations

import numpy as np
import pytest

from tlexp.config import load_config
from tlexp.errors import UserError
from tlexp.forest import build_classifiers, class_proba


def cfg(tmp_path, *overrides):
    return load_config(None, [f"data.root={tmp_path}", *overrides])


def test_default_is_forest_and_scaled_logistic_regression(tmp_path):
    clfs = build_classifiers(cfg(tmp_path, "seed=5", "forest.n_estimators=7"))
    assert list(clfs) == ["forest", "logreg"]
    assert clfs["forest"].get_params()["n_estimators"] == 7 and clfs["forest"].random_state == 5
    steps = [type(s).__name__ for _, s in clfs["logreg"].steps]
    assert steps == ["StandardScaler", "LogisticRegression"]
    assert clfs["logreg"].get_params()["logisticregression__random_state"] == 5


def test_extra_classifier_from_config_and_disabling(tmp_path):
    clfs = build_classifiers(cfg(tmp_path, "forest.enabled=false", "classifiers.logreg=null",
                                 "classifiers.knn.estimator=sklearn.neighbors.KNeighborsClassifier",
                                 "classifiers.knn.params={n_neighbors: 3}", "classifiers.knn.scale=false"))
    assert list(clfs) == ["knn"]
    assert clfs["knn"].n_neighbors == 3


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["classifiers.x.estimator=sklearn.linear_model.LogisticRegresion"], r"which scikit-learn does not have"),
        (["classifiers.x.estimator=sklearn.linear_model.LogisticRegression", "classifiers.x.params={bogus: 1}"],
         r"'classifiers.x.params' parameter does not fit LogisticRegression"),
        (["classifiers.x.estimator=sklearn.svm.SVC"], r"must name a classifier with predict_proba \(for SVC"),
        (["classifiers.x.estimator=sklearn.linear_model.LinearRegression"], r"must name a classifier"),
    ],
)
def test_bad_classifiers_are_user_errors(tmp_path, overrides, match):
    with pytest.raises(UserError, match=match):
        build_classifiers(cfg(tmp_path, *overrides))


def test_class_proba_fills_classes_absent_in_training():
    from sklearn.linear_model import LogisticRegression

    x = np.array([[0.0], [1.0], [0.1], [0.9]])
    est = LogisticRegression().fit(x, [0, 2, 0, 2])  # class 1 never seen
    p = class_proba(est, x, 3)
    assert p.shape == (4, 3) and np.all(p[:, 1] == 0)
    np.testing.assert_allclose(p.sum(1), 1.0)
