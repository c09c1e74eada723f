"""Classical classifiers on the penultimate activations: the Random Forest and friends.

Every classifier sees the same features of the same images as the dense head, so their
scores compare like for like.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from tlexp.config import Config
from tlexp.errors import UserError


def build_classifiers(cfg: Config) -> dict[str, Any]:
    """Unfitted estimators by name: ``forest`` (if enabled), then ``cfg.classifiers``.

    Called before any data work, so a wrong class name or parameter fails in seconds.

    Raises:
        UserError: a class that does not exist, is not a classifier with
            ``predict_proba``, or rejects its parameters.
    """
    from sklearn.ensemble import RandomForestClassifier

    out: dict[str, Any] = {}
    if cfg.forest.enabled:
        out["forest"] = RandomForestClassifier(
            n_estimators=cfg.forest.n_estimators,
            max_depth=cfg.forest.max_depth,
            n_jobs=cfg.forest.n_jobs,
            random_state=cfg.seed,
        )
    for name, spec in cfg.classifiers.items():
        out[name] = _build(name, spec.estimator, spec.params, spec.scale, cfg.seed)
    return out


def _build(name: str, dotted: str, params: dict[str, Any], scale: bool, seed: int):
    from sklearn.base import is_classifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    est = _estimator(f"classifiers.{name}", dotted, params, seed)
    if not is_classifier(est) or not hasattr(est, "predict_proba"):
        raise UserError(
            f"The 'classifiers.{name}.estimator' parameter must name a classifier with predict_proba "
            "(for an SVM: estimator: sklearn.calibration.CalibratedClassifierCV, params: {estimator: "
            f"{{estimator: sklearn.svm.SVC}}, ensemble: false}}). Got {dotted!r} instead."
        )
    return make_pipeline(StandardScaler(), est) if scale else est


def _estimator(key: str, dotted: str, params: dict[str, Any], seed: int):
    """``dotted(**params)``; a parameter that is itself ``{estimator: sklearn.x.Y, params: {...}}``
    is built first (meta-estimators: ``CalibratedClassifierCV(estimator=SVC())``)."""
    if not (isinstance(dotted, str) and dotted.startswith("sklearn.")):
        # Only scikit-learn classes: a config file must not be a way to import arbitrary code.
        raise UserError(
            f"The '{key}.estimator' parameter must be the dotted path of a scikit-learn class, e.g. "
            f"sklearn.svm.SVC. Got {dotted!r} instead."
        )
    module_name, _, cls_name = dotted.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError, ValueError):
        raise UserError(
            f"The '{key}.estimator' parameter names {dotted!r}, which scikit-learn does not have. "
            "Check the spelling, e.g. sklearn.linear_model.LogisticRegression."
        ) from None
    built = {
        k: _estimator(f"{key}.params.{k}", v["estimator"], v.get("params") or {}, seed)
        if isinstance(v, dict) and set(v) <= {"estimator", "params"} and "estimator" in v
        else v
        for k, v in params.items()
    }
    try:
        est = cls(**built)
    except TypeError as e:
        raise UserError(f"The '{key}.params' parameter does not fit {cls_name}: {e}. Got {params!r} instead.") from None
    if "random_state" in est.get_params(deep=False) and "random_state" not in params:
        est.set_params(random_state=seed)  # randomness goes through the run's seed
    return est


def class_proba(estimator, features: np.ndarray, n_classes: int) -> np.ndarray:
    """Class probabilities, shape (n, n_classes), even if a class was absent when fitting."""
    out = np.zeros((len(features), n_classes))
    if len(features):
        out[:, estimator.classes_] = estimator.predict_proba(features)
    return out


def describe(estimator) -> str:
    """What an estimator is, e.g. ``RandomForestClassifier`` or ``StandardScaler + LogisticRegression``."""
    steps = getattr(estimator, "steps", None)
    return " + ".join(type(e).__name__ for _, e in steps) if steps else type(estimator).__name__
