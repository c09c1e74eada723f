"""A run's model.keras is plain Keras: it loads without tlexp, on any backend, and predicts
what the trained in-memory model predicts."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tlexp.config import load_config

pytestmark = pytest.mark.slow

# Run as `python -I -c LOAD model.keras x.npy out.npz`: no tlexp (blocked even where it is
# installed), nothing of the caller's environment but KERAS_BACKEND. Plain Keras only.
LOAD = """
import sys
sys.modules["tlexp"] = None  # 'import tlexp' fails: what the file needs must be Keras' own
import keras
import numpy as np
model = keras.saving.load_model(sys.argv[1], compile=False)
x = np.load(sys.argv[2])
logits = keras.Model(model.inputs, model.get_layer("logits").output)
np.savez(
    sys.argv[3],
    proba=np.asarray(model.predict(x, verbose=0)),
    logits=np.asarray(logits.predict(x, verbose=0)),
    backend=keras.backend.backend(),
)
"""


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A transfer model as tlexp builds it (batchnorm 'inference': the backbone inside an
    InferenceMode wrapper), over a tiny functional backbone with BatchNorm (random moving
    statistics) standing in for a keras.applications one; saved as a run saves it; its
    in-memory probabilities and logits on a fixed batch. ``old.keras``: the same model
    saved the way runs saved it before (wrapper included)."""
    import keras

    from tlexp.experiment._build import build_whole
    from tlexp.experiment._phases import save_models
    from tlexp.model import InferenceMode

    folder = tmp_path_factory.mktemp("savedmodel")
    cfg = load_config(None, [f"data.root={folder}", "data.image_size=32", "model.head.dense=[8]"])
    keras.utils.set_random_seed(0)
    image = keras.Input((32, 32, 3))
    features = keras.layers.Conv2D(8, 3, strides=2, name="conv")(image)
    features = keras.layers.Activation("relu", name="relu")(keras.layers.BatchNormalization(name="bn")(features))
    backbone = keras.Model(image, features, name="tiny")
    built = build_whole(cfg, backbone, 3)
    assert any(isinstance(layer, InferenceMode) for layer in built.model.layers)  # what the file must not hold
    rng = np.random.default_rng(0)
    bn = backbone.get_layer("bn")  # moving statistics far from any batch's: a mode mix-up would show
    bn.moving_mean.assign(rng.normal(0, 5, 8))
    bn.moving_variance.assign(rng.uniform(10, 40, 8))
    x = rng.normal(0, 50, (4, 32, 32, 3)).astype("float32")
    assert not np.allclose(backbone(x, training=True), backbone(x, training=False), atol=1e-2)
    np.save(folder / "x.npy", x)
    save_models(folder, built.model, {})
    model = built.model  # and as runs saved it before: with the wrapper
    keras.Model(model.input, model.output, name=model.name).save(folder / "old.keras")
    _, logits = built.predictor.predict(x, verbose=0)
    return folder, x, np.asarray(built.model.predict(x, verbose=0)), np.asarray(logits)


# The Python that loads the file under JAX: this one where JAX is installed, else the one
# TLEXP_JAX_PYTHON names (CI points it at its JAX-only venv, so the check runs there for sure).
JAX_PYTHON = os.environ.get("TLEXP_JAX_PYTHON") or (sys.executable if importlib.util.find_spec("jax") else None)


def _load_without_tlexp(folder: Path, backend: str) -> dict[str, np.ndarray]:
    out = folder / f"{backend}.npz"
    python = JAX_PYTHON if backend == "jax" else sys.executable
    proc = subprocess.run(
        [python, "-I", "-c", LOAD, str(folder / "model.keras"), str(folder / "x.npy"), str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = dict(np.load(out))
    assert str(got["backend"]) == backend
    return got


def test_model_file_loads_with_plain_keras_and_predicts_the_same(saved):
    folder, _, proba, logits = saved
    got = _load_without_tlexp(folder, "tensorflow")
    np.testing.assert_allclose(got["proba"], proba, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["logits"], logits, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(
    JAX_PYTHON is None,
    reason="JAX is not installed here; the cross-backend check needs it (pip install 'jax[cpu]', or "
    "TLEXP_JAX_PYTHON=<a Python with keras and jax>)",
)
def test_model_file_saved_with_tensorflow_predicts_the_same_under_jax(saved):
    folder, _, proba, logits = saved
    got = _load_without_tlexp(folder, "jax")
    np.testing.assert_allclose(got["proba"], proba, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got["logits"], logits, rtol=1e-4, atol=1e-4)


def test_model_files_of_older_runs_still_load_with_tlexp(saved):
    """Run folders written before held the InferenceMode wrapper; tlexp (predict) loads them."""
    import keras

    from tlexp.model import (
        InferenceMode,
        Network,
        plain_model,
    )

    folder, x, proba, logits = saved
    old = keras.saving.load_model(folder / "old.keras", compile=False)
    assert any(isinstance(layer, InferenceMode) for layer in old.layers)
    _, old_logits = Network.of_saved(old).predictor.predict(x, verbose=0)
    np.testing.assert_allclose(old.predict(x, verbose=0), proba, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(old_logits, logits, rtol=1e-5, atol=1e-5)
    assert not any(isinstance(layer, InferenceMode) for layer in plain_model(old).layers)  # and it converts
