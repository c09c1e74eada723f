"""The model of a run: backbone -> pooling -> dense head; and the part of it after a cut.

Follows Keras' transfer-learning guide: the backbone is called in inference mode unless
BatchNorm is asked to train (:class:`tlexp.model._layers.InferenceMode`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

PENULTIMATE = "penultimate"  # name of the layer whose output feeds the output layer
LOGITS = "logits"  # the output layer before its sigmoid / softmax: exact log losses are computed from it


@dataclass
class Network:
    """A model to train, and the same layers returning the penultimate features too.

    The head's layers are shared by the whole model and the model of the cached path
    (:func:`suffix_model`), so a layer's ``output`` (its first graph's) is ambiguous;
    each network therefore carries its own features-and-probabilities twin.

    Attributes:
        model: inputs -> class probabilities; what is saved and what users call.
        predictor: the same layers, inputs -> ``[penultimate features, logits]`` (or
            ``[..., probabilities]`` for a model saved before tlexp kept its logits layer).
        logits: whether the predictor's second output is logits.
        trainer: the same layers, inputs -> logits; what ``fit`` trains (None for a
            loaded model). The loss is computed from logits (``from_logits=True``), not
            from the probabilities: a float32 sigmoid is exactly 1 for every logit above
            17, and a cross-entropy of clipped probabilities has no gradient there, so a
            head whose logits overshoot at the first steps (random weights, a large
            learning rate) never comes back. TensorFlow hid that by finding the sigmoid
            behind a probability and using its logits; JAX does not (what that did:
            docs/guide/config.md, "The head and its loss").
    """

    model: Any
    predictor: Any
    logits: bool = True
    trainer: Any = None

    @cached_property
    def predict_step(self):
        """``predictor`` as one traced function (any batch size), traced once per network."""
        from tlexp.model._segments import inference_fn

        return inference_fn(self.predictor)

    @classmethod
    def of_saved(cls, model) -> Network:
        """The network of a loaded ``model.keras`` (its layers belong to that one graph)."""
        import keras

        features = model.get_layer(PENULTIMATE).output
        if any(layer.name == LOGITS for layer in model.layers):
            return cls(model, keras.Model(model.inputs, [features, model.get_layer(LOGITS).output]))
        return cls(model, keras.Model(model.inputs, [features, model.output]), logits=False)


@dataclass
class TransferModel(Network):
    """The whole model of a run: image in, class probabilities out.

    Attributes:
        backbone: the ``keras.applications`` backbone inside ``model``.
        head: the layers after the backbone in call order (pooling ... output).
    """

    backbone: Any = None
    head: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class HeadSpec:
    """The dense head on the backbone (the config's ``model.head``).

    Attributes:
        pooling: ``flatten``, ``avg`` or ``max``: how feature maps become a vector.
        dense: units of the hidden Dense layers, in order.
        activation: their activation.
        dropout: dropout rate after each hidden Dense layer.
    """

    pooling: str = "flatten"
    dense: tuple[int, ...] = (256, 64)
    activation: str = "relu"
    dropout: float = 0.0


def build_model(
    backbone, n_classes: int, *, image_size: int, head: HeadSpec, batchnorm: str = "inference", seed: int = 0
) -> TransferModel:
    """Backbone -> pooling -> Dense layers (+ dropout) -> output layer.

    The output is one sigmoid unit for two classes, else ``n_classes`` softmax units: a
    Dense layer named ``logits`` and its activation, named ``output``. The input of the
    output layer (the "penultimate activations") is exposed as the output of an identity
    layer named ``penultimate`` so the forest can read it.

    Args:
        image_size: side of the square input images.
        batchnorm: ``train`` (BatchNorm of the trainable part uses batch statistics), or
            ``inference`` / ``frozen`` (every BatchNorm layer keeps its moving statistics).
        seed: the dropout layers' seeds start here.
    """
    import keras

    size = image_size
    inputs = keras.Input((size, size, 3), name="image")
    if batchnorm == "train":
        # fit() passes training=True: BN in the trainable part uses batch statistics and
        # updates its moving averages; frozen BN layers (trainable=False) stay in inference.
        x = backbone(inputs)
    else:
        # 'inference' and 'frozen': every BN layer keeps its moving statistics.
        from tlexp.model._layers import InferenceMode

        x = InferenceMode(backbone, name=f"{backbone.name}_inference")(inputs)
    layers = [
        {
            "flatten": keras.layers.Flatten(name="flatten"),
            "avg": keras.layers.GlobalAveragePooling2D(name="avg_pool"),
            "max": keras.layers.GlobalMaxPooling2D(name="max_pool"),
        }[head.pooling]
    ]
    for i, units in enumerate(head.dense, start=1):
        layers.append(keras.layers.Dense(units, activation=head.activation, name=f"dense_{i}"))
        if head.dropout > 0:
            layers.append(keras.layers.Dropout(head.dropout, seed=seed + i, name=f"dropout_{i}"))
    layers.append(keras.layers.Identity(name=PENULTIMATE))
    if n_classes == 2:
        layers += [
            keras.layers.Dense(1, name=LOGITS, dtype="float32"),
            keras.layers.Activation("sigmoid", name="output", dtype="float32"),
        ]
    else:
        layers += [
            keras.layers.Dense(n_classes, name=LOGITS, dtype="float32"),
            keras.layers.Activation("softmax", name="output", dtype="float32"),
        ]
    outputs, features, logits = _call_head(layers, x)
    model = keras.Model(inputs, outputs, name=f"{backbone.name}_transfer")
    return TransferModel(
        model,
        keras.Model(inputs, [features, logits], name=f"{model.name}_features"),
        trainer=keras.Model(inputs, logits, name=f"{model.name}_logits"),
        backbone=backbone,
        head=layers,
    )


def suffix_model(whole: TransferModel, cut: int, batchnorm: str) -> Network:
    """The part of ``whole`` after ``backbone.layers[:cut]``, fed with the activations there.

    The same layer objects as ``whole`` (its backbone layers from ``cut`` on, then its
    head), called the same way (``InferenceMode`` unless BatchNorm trains), so training
    this network trains ``whole``. Build it in the run's ``accel.scope``: its wrapper
    layer must have the run's dtype policy.
    """
    import keras

    backbone = whole.backbone

    from tlexp.model._segments import segment

    if cut == len(backbone.layers):  # everything frozen: the cached values are the backbone's output
        inputs = keras.Input(batch_shape=backbone.output.shape, dtype=backbone.output.dtype, name="cut")
        x = inputs
    else:
        inner = segment(backbone, cut, len(backbone.layers), name=f"{backbone.name}_from_{cut}")
        inputs = inner.inputs[0] if len(inner.inputs) == 1 else inner.inputs
        inputs = keras.tree.map_structure(
            lambda t: keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t.name.replace(":", "_")), inputs
        )
        if batchnorm == "train":
            x = inner(inputs)
        else:
            from tlexp.model._layers import InferenceMode

            x = InferenceMode(inner, name=f"{backbone.name}_inference")(inputs)
    outputs, features, logits = _call_head(whole.head, x)
    name = f"{whole.model.name}_from_{cut}"
    return Network(
        keras.Model(inputs, outputs, name=name),
        keras.Model(inputs, [features, logits], name=f"{name}_features"),
        trainer=keras.Model(inputs, logits, name=f"{name}_logits"),
    )


def _call_head(layers: list[Any], x):
    """Call the head's layers in order; return the output, the penultimate and the logits tensors."""
    found = {}
    for layer in layers:
        x = layer(x)
        found[layer.name] = x
    return x, found[PENULTIMATE], found[LOGITS]
