"""Traced inference functions: one trace per model, no retracing across the models of a sweep."""

from __future__ import annotations

import numpy as np


def test_one_trace_per_model_and_no_retracing_warning(caplog):
    """A sweep makes a prefix segment and a predictor per cell, each called a few times.

    TensorFlow counts traces per Python code, so tracing on first call made it warn about
    "excessive retracing" from the fifth model on (reproduced: 7 models, 2 calls each).
    """
    import keras

    from tlexp.model import inference_fn

    for i in range(7):
        inputs = [keras.Input((4,)), keras.Input((3,))]
        x = keras.layers.Concatenate()(inputs)
        model = keras.Model(inputs, keras.layers.Dense(2, name=f"d{i}")(x))
        fn = inference_fn(model)
        for n in (3, 2):  # two batch sizes: one signature, no new trace
            a, b = np.ones((n, 4), np.float32), np.ones((n, 3), np.float32)
            out = np.asarray(fn([a, b]))
            np.testing.assert_allclose(out, np.asarray(model([a, b], training=False)), rtol=1e-6)
    assert "retracing" not in caplog.text
