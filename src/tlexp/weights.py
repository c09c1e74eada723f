"""ImageNet weights files: where Keras keeps them, whether they are there and intact.

No TensorFlow here: checking weights must be instant, and happens before any data work.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from tlexp.backbones import REGISTRY
from tlexp.errors import WeightsError

log = logging.getLogger("tlexp")


def keras_cache_dir() -> Path:
    """The folder where Keras keeps downloaded weights (``$KERAS_HOME/models``).

    Mirrors ``keras.src.backend.config``: ``$KERAS_HOME`` if set, else ``~/.keras``
    (``/tmp/.keras`` when the home folder is not writable).
    """
    if "KERAS_HOME" in os.environ:
        base = Path(os.environ["KERAS_HOME"])
    else:
        home = Path(os.path.expanduser("~"))
        base = (home if os.access(home, os.W_OK) else Path("/tmp")) / ".keras"
    return base / "models"


def resolve_weights(backbone: str, weights: str, download: bool) -> Path | None:
    """Turn ``model.weights`` into a local file to load (``None`` for random init).

    For ``imagenet`` the Keras cache is used, downloading through Keras' own
    ``get_file`` (which checks the MD5) when allowed. Called before any data work, so a
    missing file fails a run in seconds, not after the dataset was read.

    Raises:
        WeightsError: the file is missing and cannot be downloaded, or is corrupt.
    """
    if weights == "none":
        return None
    if weights != "imagenet":
        return Path(weights)
    spec = REGISTRY[backbone]
    cached = keras_cache_dir() / spec.weights_file
    how_to = (
        f"Download {spec.weights_url} on a machine with internet and put it at '{cached}' "
        f"(the folder Keras reads, set by $KERAS_HOME), or set model.weights to the file's path."
    )
    if cached.is_file():
        if _md5(cached) != spec.weights_md5:
            raise WeightsError(
                f"The cached ImageNet weights '{cached}' are corrupt or not the no-top file "
                f"(MD5 {_md5(cached)}, expected {spec.weights_md5}). Delete it and retry. {how_to}"
            )
        return cached
    if not download:
        raise WeightsError(f"ImageNet weights for {backbone} are not cached ('{spec.weights_file}' missing) "
                           f"and model.download is false. {how_to}")
    from keras.utils import get_file

    log.info("weights: downloading %s into %s", spec.weights_file, cached.parent)
    try:
        path = get_file(spec.weights_file, spec.weights_url, cache_subdir="models", file_hash=spec.weights_md5)
    except Exception as e:  # noqa: BLE001 - Keras raises bare Exception for network failures
        raise WeightsError(f"Could not download ImageNet weights for {backbone}: {e}. {how_to}") from None
    return Path(path)


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
