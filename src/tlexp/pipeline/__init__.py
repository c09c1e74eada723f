"""The input pipeline: what training, evaluation and feature export read.

Images or the frozen prefix's cached activations (sources), through tf.data or Keras'
PyDataset (loaders). It sits above ``data`` and ``model``: it knows images and
activations both. The modules are private; this package's names are the API.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Each public name and the private module that holds it. Imported on first use, so that
# importing the package costs nothing until a name is needed (STYLE: heavy imports late).
_EXPORTS = {
    "ActivationStore": "_prefixcache",
    "Batches": "_loader",
    "Fallback": "_prefixcache",
    "RowFile": "_prefixcache",
    "activation_dataset": "_feeds",
    "blocker": "_prefixcache",
    "image_batches": "_feeds",
    "make_dataset": "_feeds",
    "open_feed": "_feeds",
    "padded": "_loader",
    "prefix_activations": "_prefixcache",
}
__all__ = [
    "ActivationStore",
    "Batches",
    "Fallback",
    "RowFile",
    "activation_dataset",
    "blocker",
    "image_batches",
    "make_dataset",
    "open_feed",
    "padded",
    "prefix_activations",
]

if TYPE_CHECKING:
    from tlexp.pipeline._feeds import activation_dataset, image_batches, make_dataset, open_feed
    from tlexp.pipeline._loader import Batches, padded
    from tlexp.pipeline._prefixcache import ActivationStore, Fallback, RowFile, blocker, prefix_activations


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
