"""The input pipeline: what training, evaluation and feature export read.

Images or the frozen prefix's cached activations (sources), through tf.data or Keras'
PyDataset (loaders). It sits above ``data`` and ``model``: it knows images and
activations both. The modules are private; this package's names are the API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tlexp._lazy import lazy_exports

# Each public name and the private module that holds it, imported on first use (tlexp._lazy).
_EXPORTS = {
    "ActivationSource": "_sources",
    "ActivationStore": "_store",
    "BatchPlan": "_plan",
    "Batches": "_loaders",
    "Fallback": "_store",
    "Feed": "_feed",
    "FitInput": "_plan",
    "ImageSource": "_sources",
    "PrefixActivations": "_store",
    "RowFile": "_rowfile",
    "Source": "_sources",
    "TFBatches": "_loaders",
    "blocker": "_prefix",
    "cached_cuts": "_feed",
    "numpy_dtype": "_rowfile",
    "open_feed": "_feed",
    "padded": "_loaders",
    "prefix_activations": "_prefix",
    "stream": "_loaders",
}
__all__ = [
    "ActivationSource",
    "ActivationStore",
    "BatchPlan",
    "Batches",
    "Fallback",
    "Feed",
    "FitInput",
    "ImageSource",
    "PrefixActivations",
    "RowFile",
    "Source",
    "TFBatches",
    "blocker",
    "cached_cuts",
    "numpy_dtype",
    "open_feed",
    "padded",
    "prefix_activations",
    "stream",
]

if TYPE_CHECKING:
    from tlexp.pipeline._feed import Feed, cached_cuts, open_feed
    from tlexp.pipeline._loaders import Batches, TFBatches, padded, stream
    from tlexp.pipeline._plan import BatchPlan, FitInput
    from tlexp.pipeline._prefix import blocker, prefix_activations
    from tlexp.pipeline._rowfile import RowFile, numpy_dtype
    from tlexp.pipeline._sources import ActivationSource, ImageSource, Source
    from tlexp.pipeline._store import ActivationStore, Fallback, PrefixActivations


__getattr__ = lazy_exports(__name__, _EXPORTS)
