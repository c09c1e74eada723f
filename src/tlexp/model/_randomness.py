"""Which layers compute something random: those make cached activations wrong.

Found generically rather than from a list of classes: a Keras 3 layer that draws random
numbers keeps a ``keras.random.SeedGenerator`` (Dropout, SpatialDropout, GaussianNoise,
AlphaDropout, the Random* augmentations, and any custom layer written the Keras way),
and Keras tracks those in ``layer._seed_generators``. Layers that call ``keras.random``
without one (ConvNeXt's ``StochasticDepth``, only present when ``drop_path_rate > 0``)
are caught by their class name. Nested blocks (a ``Sequential`` inside a backbone) are
searched through.
"""

from __future__ import annotations

# Class-name fragments of layers that are random in training but may hold no SeedGenerator.
_RANDOM_NAMES = ("Dropout", "Noise", "StochasticDepth", "DropPath", "DropBlock")


def randomness(layer) -> str | None:
    """``"augmentation"``, ``"training"`` (random when called with training=True) or ``None``.

    Random augmentation layers (``RandomFlip`` ...) are reported apart: tlexp never puts
    one in a backbone, so finding one means the backbone is not what tlexp expects.
    """
    found = None
    for sub in layer._flatten_layers(include_self=True, recursive=True):
        name = type(sub).__name__
        if name.startswith("Random"):
            return "augmentation"
        if getattr(sub, "_seed_generators", None) or any(part in name for part in _RANDOM_NAMES):
            found = "training"
    return found
