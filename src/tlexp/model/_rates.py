"""Layer-wise learning-rate decay: one learning rate per backbone stage, lower towards the input.

BEiT (Bao et al. 2022) and timm's ``--layer-decay`` give the layer at depth ``d`` from the
top the rate ``lr * decay**d``; tlexp counts depth in the backbone's stages
(:func:`tlexp.model.backbone_stages`): the head trains at ``lr``, the top stage at
``lr * decay``, the one below at ``lr * decay**2``, and so on.

Keras 3 optimizers have one rate. Scaling the gradients instead would be wrong for Adam,
whose step does not depend on the gradient's scale, so the optimizer's own per-variable
update (``update_step``, called for every variable on TensorFlow and JAX alike) is given
the scaled rate. AdamW's decoupled weight decay keeps the unscaled rate.
"""

from __future__ import annotations

from collections.abc import Sequence


def stage_depths(backbone, stages: Sequence) -> dict[int, int]:
    """``id(variable) -> depth`` for every trainable-by-construction variable of the backbone:
    1 for the top stage, 2 for the one below, ... (the head, absent here, is depth 0)."""
    depths = {}
    for depth, stage in enumerate(reversed(stages), start=1):
        for layer in backbone.layers[stage.start : stage.stop]:
            for sub in layer._flatten_layers(include_self=True, recursive=True):
                for v in sub._trainable_variables:
                    depths[id(v)] = depth
    return depths


def scaled(optimizer_class, learning_rate: float, scales: dict[int, float]):
    """An instance of ``optimizer_class`` that steps variable ``v`` at ``learning_rate *
    scales[id(v)]`` (1 where absent).

    The scales are looked up once per variable when the optimizer is built, by position,
    which is how Keras itself finds a variable's slots on every backend (a TensorFlow
    update sees the backing ``tf.Variable``, not the Keras one).
    """

    class LayerScaled(optimizer_class):
        def build(self, variables):
            self._tlexp_scales = [float(scales.get(id(v), 1.0)) for v in variables]
            super().build(variables)

        def update_step(self, gradient, variable, learning_rate):
            scale = self._tlexp_scales[self._get_variable_index(variable)]
            if scale != 1.0:  # a Python float: decided when the step is traced
                learning_rate = learning_rate * scale
            return super().update_step(gradient, variable, learning_rate)

    LayerScaled.__name__ = f"LayerScaled{optimizer_class.__name__}"
    return LayerScaled(learning_rate=learning_rate)
