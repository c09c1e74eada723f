"""Keras layers tlexp adds to models. Imported only where a model is built (needs Keras).

The ``model.keras`` of a run holds none of them (:func:`plain_model`): it loads with plain
``keras.saving.load_model`` on any backend. Files written before that hold an
:class:`InferenceMode` layer; importing this module registers it, so they still load.
"""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="tlexp")
class InferenceMode(keras.layers.Layer):
    """Runs the wrapped model with ``training=False`` always, while its weights still train.

    Keras' transfer-learning advice is to call the backbone with ``training=False`` so
    BatchNormalization keeps its moving statistics while the layer is fine-tuned. In a
    Keras 3 functional model that argument does not stick: the outer model's
    ``training=True`` (from ``fit``) is passed to every inner layer that takes a
    ``training`` argument, overriding it. This layer takes none, so ``fit`` cannot
    reach inside it, and it calls the backbone in inference mode itself.
    """

    def __init__(self, inner: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.inner = inner

    def call(self, inputs):
        return self.inner(inputs, training=False)

    def compute_output_shape(self, input_shape):
        return self.inner.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "inner": keras.saving.serialize_keras_object(self.inner)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["inner"] = keras.saving.deserialize_keras_object(config["inner"])
        return cls(**config)


def plain_model(model: keras.Model) -> keras.Model:
    """``model`` made of standard Keras layers only: each :class:`InferenceMode` replaced by
    the model it wraps, called plainly. What a run saves as ``model.keras``.

    The same layer objects (weights shared, nothing copied), wired into a new functional
    graph with the same input and output structure. Its inference (``predict``, or a call
    with ``training`` False or unset) is the same computation: BatchNorm then uses its
    moving statistics and Dropout is off, all the wrapper enforces. Only ``training=True``
    differs: fine-tuning the loaded model further trains its BatchNorm statistics, as
    ``model.batchnorm: train`` does.
    """
    clone = keras.models.clone_model(
        model, clone_function=lambda layer: layer.inner if isinstance(layer, InferenceMode) else layer
    )
    return keras.Model(clone.input, clone.output, name=model.name)
