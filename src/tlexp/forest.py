"""A scikit-learn Random Forest on the penultimate activations of the trained model."""

from __future__ import annotations

import numpy as np

from tlexp.config import ForestConfig


def fit_forest(features: np.ndarray, labels: np.ndarray, cfg: ForestConfig, seed: int, n_classes: int):
    """Fit a ``RandomForestClassifier``.

    Args:
        features: penultimate activations of the train split, shape (n, d).
        labels: int labels, shape (n,).

    Returns:
        The fitted forest.
    """
    from sklearn.ensemble import RandomForestClassifier

    forest = RandomForestClassifier(
        n_estimators=cfg.n_estimators, max_depth=cfg.max_depth, n_jobs=cfg.n_jobs, random_state=seed
    )
    forest.fit(features, labels)
    return forest


def forest_proba(forest, features: np.ndarray, n_classes: int) -> np.ndarray:
    """Class probabilities, shape (n, n_classes), even if a class was absent when fitting."""
    out = np.zeros((len(features), n_classes))
    if len(features):
        out[:, forest.classes_] = forest.predict_proba(features)
    return out
