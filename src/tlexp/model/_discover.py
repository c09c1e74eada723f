"""What the installed Keras offers as backbones, found by asking Keras itself (imports Keras).

Used by ``scripts/backbone_catalog.py`` to write :mod:`tlexp.catalog` and by the
tests that check that catalog against the installed Keras; never by a run (a run reads
the catalog, which needs no TensorFlow).

Nothing here knows a family by name: every public constructor of ``keras.applications``
is a backbone, its preprocessing is its own submodule's ``preprocess_input``, its minimum
input size is the one its own check reports, and its ImageNet file is the one its own
loader asks ``get_file`` for.
"""

from __future__ import annotations

import importlib
import inspect
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras

from tlexp.model._backbones import BackboneSpec


@dataclass(frozen=True)
class Found(BackboneSpec):
    """One ``keras.applications`` constructor, as Keras describes it: the catalog's entry
    (:class:`tlexp.model._backbones.BackboneSpec`, whose fields say what each value is) and
    its config ``name``, the constructor's name in lower case (``efficientnetv2b0``).

    ``weights_file``, ``weights_url`` and ``weights_hash`` are what its loader passes to
    ``get_file`` for ``weights="imagenet", include_top=False``.
    """

    name: str


def constructors() -> dict[str, Callable[..., Any]]:
    """Every image classifier constructor of ``keras.applications``, by config name."""
    found = {}
    for attr in sorted(dir(keras.applications)):
        obj = getattr(keras.applications, attr)
        if attr.startswith("_") or not inspect.isfunction(obj):
            continue
        params = inspect.signature(obj).parameters
        if {"include_top", "weights", "input_shape"} <= set(params):
            found[attr.lower()] = obj
    return found


def family(ctor: Callable[..., Any]) -> str:
    """The public submodule of ``keras.applications`` a constructor comes from."""
    module = ctor.__module__.rsplit(".", 1)[-1]  # keras.src.applications.efficientnet_v2
    if not hasattr(keras.applications, module):
        raise LookupError(f"{ctor.__name__} comes from {ctor.__module__}, which keras.applications does not export")
    return module


def preprocess_input(module: str) -> Callable[..., Any]:
    return importlib.import_module(f"keras.applications.{module}").preprocess_input


_AT_LEAST = re.compile(r"at least (\d+)x(\d+)")


def min_input_size(ctor: Callable[..., Any]) -> int:
    """The smallest width/height the constructor accepts, from its own check's message.

    Keras checks the size before creating a layer, so asking with a 1x1 input is instant.
    """
    try:
        ctor(include_top=False, weights=None, input_shape=(1, 1, 3))
    except ValueError as e:
        match = _AT_LEAST.search(str(e))
        if match:
            return int(match.group(1))
        raise LookupError(f"{ctor.__name__} refused a 1x1 input without naming a minimum: {e}") from None
    raise LookupError(f"{ctor.__name__} accepted a 1x1 input; tlexp cannot find its minimum size")


class _Asked(Exception):
    """Raised by the stand-in ``get_file``: Keras said which file it wants; download nothing."""

    def __init__(self, fname: str, origin: str, file_hash: str | None):
        super().__init__(fname)
        self.request = (fname, origin, file_hash)


def imagenet_file(ctor: Callable[..., Any], size: int) -> tuple[str, str, str | None]:
    """(file name, URL, hash) of the no-top ImageNet weights the constructor would download.

    Calls it with ``weights="imagenet"`` while Keras' ``get_file`` is replaced by one that
    records its arguments and aborts: exact for every family however its module spells
    the file, and nothing is downloaded. It builds the model first (seconds for big ones).
    """
    from keras.src.utils import file_utils

    def ask(fname=None, origin=None, *args, file_hash=None, **kwargs):
        raise _Asked(fname, origin, file_hash)

    real = file_utils.get_file
    file_utils.get_file = ask  # the applications call it as file_utils.get_file(...)
    try:
        with warnings.catch_warnings():  # MobileNets: "weights for input shape (224, 224) will be loaded"
            warnings.simplefilter("ignore", UserWarning)
            ctor(include_top=False, weights="imagenet", input_shape=(size, size, 3))
    except _Asked as asked:
        return asked.request
    finally:
        file_utils.get_file = real
        keras.backend.clear_session()
    raise LookupError(f"{ctor.__name__} loaded ImageNet weights without calling get_file")


def describe(name: str, ctor: Callable[..., Any]) -> Found:
    """Everything the catalog records about one constructor (builds it twice: seconds)."""
    size = min_input_size(ctor)
    params = ctor(include_top=False, weights=None, input_shape=(size, size, 3)).count_params()
    keras.backend.clear_session()
    fname, url, file_hash = imagenet_file(ctor, size)
    return Found(
        constructor=ctor.__name__,
        module=family(ctor),
        min_size=size,
        params=int(params),
        weights_file=fname,
        weights_url=url,
        weights_hash=file_hash,
        name=name,
    )
