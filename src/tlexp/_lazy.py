"""A package's public names, imported on first use (PEP 562): the ``__getattr__`` of each
package ``__init__`` that lists its names and the private modules that hold them.

So ``import tlexp.model`` costs nothing until a name is needed (STYLE: heavy imports
late), and ``from tlexp.model import build_model`` still works as usual.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``package``: ``exports`` maps each public name to the
    private module (within the package) that defines it."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        setattr(importlib.import_module(package), name, value)  # found once, then a plain attribute
        return value

    return __getattr__
