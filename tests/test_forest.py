"""Classical classifiers on the penultimate features: building them from the config."""

from __future__ import annotations

import numpy as np
import pytest

from tlexp.classifiers import build_classifiers, class_proba
from tlexp.config import load_config
from tlexp.errors import UserError


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
    clfs = build_classifiers(
        cfg(
            tmp_path,
            "forest.enabled=false",
            "classifiers.logreg=null",
            "classifiers.knn.estimator=sklearn.neighbors.KNeighborsClassifier",
            "classifiers.knn.params={n_neighbors: 3}",
            "classifiers.knn.scale=false",
        )
    )
    assert list(clfs) == ["knn"]
    assert clfs["knn"].n_neighbors == 3


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["classifiers.x.estimator=sklearn.linear_model.LogisticRegresion"], r"which scikit-learn does not have"),
        (
            ["classifiers.x.estimator=sklearn.linear_model.LogisticRegression", "classifiers.x.params={bogus: 1}"],
            r"'classifiers.x.params' parameter does not fit LogisticRegression",
        ),
        (
            ["classifiers.x.estimator=sklearn.svm.SVC"],
            r"must name a classifier with predict_proba \(for an SVM: estimator: sklearn.calibration",
        ),
        (
            [
                "classifiers.x.estimator=sklearn.calibration.CalibratedClassifierCV",
                "classifiers.x.params={estimator: {estimator: os.system}}",
            ],
            r"'classifiers.x.params.estimator.estimator' parameter must be the dotted path of a scikit-learn class",
        ),
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


def test_meta_estimator_from_nested_spec_without_deprecated_probability(tmp_path):
    """An SVM with probabilities the way scikit-learn >= 1.9 wants it (SVC(probability=True)
    is deprecated): CalibratedClassifierCV around SVC, built from a nested spec."""
    import warnings

    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import SVC

    clfs = build_classifiers(
        cfg(
            tmp_path,
            "seed=3",
            "forest.enabled=false",
            "classifiers.logreg=null",
            "classifiers.svm.estimator=sklearn.calibration.CalibratedClassifierCV",
            "classifiers.svm.params={estimator: {estimator: sklearn.svm.SVC, params: {C: 2.0}}, ensemble: false}",
        )
    )
    scaler, est = (s for _, s in clfs["svm"].steps)
    assert isinstance(est, CalibratedClassifierCV) and est.ensemble is False
    assert isinstance(est.estimator, SVC) and est.estimator.C == 2.0 and est.estimator.random_state == 3
    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(0, 1, (30, 4)), rng.normal(3, 1, (30, 4))]
    y = np.r_[np.zeros(30, int), np.ones(30, int)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no FutureWarning on the path the README recommends
        p = class_proba(clfs["svm"].fit(x, y), x, 2)
    assert p.shape == (60, 2) and (p.argmax(1) == y).mean() > 0.9
