"""Cut a backbone into consecutive segments that share its layers (and weights).

A freeze plan freezes a prefix of ``backbone.layers``. The activations where the frozen
prefix ends are the *frontier*: every tensor made by a prefix layer and used by a later
layer (or returned by the model). In VGG16 that is one tensor; inside a ResNet or
DenseNet block it can be two or more (a shortcut and the main branch). A segment
model maps the frontier at one cut to the frontier at a later cut by calling the
original layer objects again, so training a segment trains the backbone itself.

Cuts are layer counts, as in :class:`tlexp.model._freeze.FreezePlan`: cut ``k`` runs after
``backbone.layers[:k]`` (the input layer counts as one). The graph also holds operations
that are not layers (``x + y`` in ConvNeXt's and MobileNetV3's blocks is a bare ``Add``);
``model.operations`` lists them all in topological order, with the layers in the same
order as ``model.layers``. A cut takes every operation before the first layer after it:
the parameter-free ones between the two go with the frozen part, like the pooling a
freeze plan takes along. So every prefix can be computed on its own.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _nodes(model) -> list[Any]:
    """The model's own graph nodes, inputs first (Keras' Function uses the same order)."""
    by_depth = model._nodes_by_depth
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]


def _producer(tensor) -> Any:
    return tensor._keras_history.operation


def _split(model, cut: int) -> int:
    """How many of ``model.operations`` run before the cut after ``model.layers[:cut]``."""
    layers, ops = model.layers, model.operations
    if cut == len(layers):
        return len(ops)  # everything, trailing bare operations (a last residual Add) included
    first_after = layers[cut]
    return next(i for i, op in enumerate(ops) if op is first_after)


def frontier(model, cut: int) -> list[Any]:
    """The symbolic tensors that carry everything ``model.layers[:cut]`` passes on.

    Args:
        model: a functional Keras model (a ``keras.applications`` backbone).
        cut: number of leading layers, 1 <= cut <= len(model.layers).

    Returns:
        KerasTensors of the original graph, in a fixed order (graph order).
    """
    if not 1 <= cut <= len(model.layers):
        raise ValueError(f"cut must be in [1, {len(model.layers)}], got {cut}")
    ops, split = model.operations, _split(model, cut)
    before = {id(op) for op in ops[:split]}
    after = {id(op) for op in ops[split:]}
    found: dict[int, Any] = {}
    for node in _nodes(model):
        if id(node.operation) in after:
            for t in node.input_tensors:
                if id(_producer(t)) in before:
                    found.setdefault(id(t), t)
    for t in model.outputs:
        if id(_producer(t)) in before:
            found.setdefault(id(t), t)
    return list(found.values())


def segment(model, start: int, stop: int, name: str | None = None):
    """A model from the frontier at ``start`` to the frontier at ``stop``.

    It calls the layers ``model.layers[start:stop]`` themselves (shared weights), and the
    bare operations between them. Its
    inputs are new ``keras.Input`` tensors shaped and typed like the frontier at
    ``start``; a single tensor when the frontier has one, else a list (likewise the
    outputs). A tensor that crosses the whole segment untouched is passed through.
    """
    import keras

    if not 1 <= start <= stop <= len(model.layers):
        raise ValueError(f"need 1 <= start <= stop <= {len(model.layers)}, got {start}, {stop}")
    src, dst = frontier(model, start), frontier(model, stop)
    inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype, name=f"cut{start}_{i}") for i, t in enumerate(src)]
    values = {id(t): x for t, x in zip(src, inputs, strict=True)}
    ops = model.operations
    run = {id(op) for op in ops[_split(model, start) : _split(model, stop)]}
    for node in _nodes(model):
        if id(node.operation) not in run:
            continue
        missing = [t.name for t in node.input_tensors if id(t) not in values]
        if missing:  # cannot happen for a topologically ordered model; say so if it does
            raise ValueError(f"layer {node.operation.name} needs {missing}, which the cut at {start} does not carry")
        args, kwargs = node.arguments.fill_in(values)
        out = node.operation(*args, **kwargs)
        for t, x in zip(node.outputs, keras.tree.flatten(out), strict=True):
            values[id(t)] = x
    outputs = [values[id(t)] for t in dst]
    # A Functional model may not return its own input tensor; give it an identity.
    outputs = [
        keras.layers.Identity(name=f"pass_{i}")(x) if any(x is i_ for i_ in inputs) else x
        for i, x in enumerate(outputs)
    ]
    return keras.Model(
        inputs[0] if len(inputs) == 1 else inputs,
        outputs[0] if len(outputs) == 1 else outputs,
        name=name or f"{model.name}_{start}_{stop}",
    )


def frontier_spec(model, cut: int) -> list[tuple[tuple[int, ...], str]]:
    """(shape without batch, dtype) of each frontier tensor at ``cut``."""
    return [(tuple(int(d) for d in t.shape[1:]), str(t.dtype)) for t in frontier(model, cut)]


def inference_fn(model):
    """``model(x, training=False)`` as one traced function for any batch size.

    ``x`` is a tensor for a one-input model, a list of tensors for a model fed at a cut
    with several frontier tensors. Traced, not eager: eager execution of a 427-layer
    DenseNet costs more per batch than its convolutions on a GPU.

    Traced once, explicitly, for the batch-free signature (``get_concrete_function``): a
    run makes one of these per model (the prefix segment, the predictor), each called a
    few times on a small split. Left to ``tf.function``'s first call, those traces count
    as retracing of one function (TensorFlow keys its counter by the Python code, which
    every instance shares) and, from the fifth cell of a sweep on, TensorFlow warns about
    "excessive retracing" that never happened.

    On JAX: ``jax.jit`` through Keras' ``predict_on_batch`` (one compile per input shape).
    Under data parallel training (:func:`tlexp.model.data_parallel`) each batch is padded
    to split evenly over the devices, sharded over them, and the padding cut off the
    outputs.
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        # JAX: Keras' own jitted predict step (the model's current weights, one compile
        # per input shape, reused across calls), numpy out.
        from tlexp.model._accel import batch_multiple

        multiple = batch_multiple()
        if multiple == 1:
            return model.predict_on_batch
        return lambda x: _sharded_predict(model, x, multiple)
    import tensorflow as tf

    specs = [tf.TensorSpec((None, *t.shape[1:]), t.dtype) for t in model.inputs]
    signature = specs[0] if len(specs) == 1 else specs
    traced = tf.function(lambda x: model(x, training=False)).get_concrete_function(signature)
    return lambda x: traced(x if len(specs) == 1 else list(x))


def _sharded_predict(model, x, multiple: int):
    """``model.predict_on_batch(x)`` with the batch padded to a multiple of ``multiple`` rows
    and sharded over the devices of the data parallel distribution in effect (Keras'
    ``predict_on_batch`` does not shard its input, ``predict`` does), padding cut off."""
    import keras

    from tlexp.model._accel import padding_rows

    dist = keras.distribution.distribution()
    xs = list(x) if isinstance(x, tuple | list) else [x]
    n = len(xs[0])
    rows = padding_rows(n, multiple)
    xs = [np.asarray(a)[rows] for a in xs]
    xs = [keras.distribution.distribute_tensor(a, dist.get_data_layout(a.shape)) for a in xs]
    out = model.predict_on_batch(xs if isinstance(x, tuple | list) else xs[0])
    return [o[:n] for o in out] if isinstance(out, list | tuple) else out[:n]
