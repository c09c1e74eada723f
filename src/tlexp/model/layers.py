"""Keras layers tlexp adds to models. Imported only where a model is built (needs Keras)."""

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
