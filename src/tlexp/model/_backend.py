"""The Keras backend of this process (TensorFlow by default, or JAX), imported quietly.

``KERAS_BACKEND`` picks the backend as in Keras itself (``tensorflow`` when unset);
:func:`import_backend` checks it is supported and installed (a clear error naming the
pip extra otherwise) before Keras is imported, since importing Keras imports it.

TensorFlow: import it without its C++ start-up chatter on the terminal.

TensorFlow >= 2.20 prints oneDNN/CUDA notes through absl before any log level applies
(``TF_CPP_MIN_LOG_LEVEL`` cannot hide them), which buries tlexp's own log. The import
and the first device query run with file descriptor 2 pointed at a temp file; what was
captured is logged at DEBUG (``tlexp -v`` shows it) or printed if the import fails.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import tempfile
from typing import Any

log = logging.getLogger("tlexp")

SUPPORTED = ("tensorflow", "jax")


def backend_name() -> str:
    """The Keras backend this process uses or will use, without importing any framework."""
    if "keras" in sys.modules:
        return sys.modules["keras"].backend.backend()
    name = os.environ.get("KERAS_BACKEND")
    if not name:
        import json
        from pathlib import Path

        home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
        try:
            name = json.loads((home / "keras.json").read_text()).get("backend")
        except (OSError, ValueError, AttributeError):
            name = None
    return name or "tensorflow"


def check_backend() -> str:
    """The backend's name, once it is known to be supported and installed (nothing imported).

    Raises:
        UserError: an unsupported backend (PyTorch, numpy, ...) or one not installed.
    """
    import importlib.util

    from tlexp.errors import UserError

    name = backend_name()
    if name not in SUPPORTED:
        raise UserError(
            f"KERAS_BACKEND={name} is not supported yet: use tensorflow (the default) or jax, "
            "e.g. KERAS_BACKEND=jax after pip install -e '.[jax]'."
        )
    if importlib.util.find_spec(name) is None:
        raise UserError(
            f"The Keras backend {name!r} is not installed. Install it with: pip install -e '.[{name}]' "
            f"(or pip install 'tlexp[{name}]'), or pick an installed one with KERAS_BACKEND."
        )
    return name


def import_backend() -> str:
    """Check the backend is supported and installed, import it quietly; return its name.

    Raises:
        UserError: an unsupported backend (PyTorch, numpy, ...) or one not installed.
    """
    name = check_backend()
    if name == "tensorflow":
        import_tensorflow()
    else:
        keep_jax_compilations()
    return name


JAX_CACHE_BYTES = 2 * 1024**3  # the compilation cache's bound on disk; JAX evicts the least recently used


def keep_jax_compilations() -> None:
    """Turn on JAX's persistent compilation cache in tlexp's cache folder (``jax/`` there).

    JAX compiles every function per input shape, and a process starts with nothing
    compiled; reading a compilation back from this cache costs a fraction of compiling it
    (figures: docs/benchmarks.md, "JAX"). So a run, a sweep's next worker and the next
    sweep start from what earlier ones compiled. Bounded to
    :data:`JAX_CACHE_BYTES`; with a bound, JAX locks the folder for every read and write
    (the ``filelock`` package), so processes sharing it never read a half-written entry.

    The user's choice wins: ``JAX_COMPILATION_CACHE_DIR`` names another folder,
    ``JAX_ENABLE_COMPILATION_CACHE=false`` turns it off. Effective before the process'
    first compilation, as JAX sets up its cache then.
    """
    import jax

    if not jax.config.jax_enable_compilation_cache or jax.config.jax_compilation_cache_dir:
        return
    from tlexp.files import cache_root

    jax.config.update("jax_compilation_cache_dir", str(cache_root() / "jax"))
    jax.config.update("jax_compilation_cache_max_size", JAX_CACHE_BYTES)
    # Everything, not only compilations of over 1 s (JAX's default): those of VGG16's
    # initializers take 0.4-0.9 s each, and there are many of them.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def require_tensorflow(what: str) -> None:
    """A clear error where ``what`` has no equivalent outside TensorFlow."""
    from tlexp.errors import UserError

    name = backend_name()
    if name != "tensorflow":
        raise UserError(
            f"{what} needs TensorFlow, and this run uses KERAS_BACKEND={name}. "
            "Turn it off, or run with the TensorFlow backend (pip install -e '.[tensorflow]', KERAS_BACKEND unset)."
        )


def backend_version(name: str | None = None) -> str:
    from importlib.metadata import PackageNotFoundError, version

    name = name or backend_name()
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def gpu_names() -> list[str]:
    """The GPUs the backend sees, by model name."""
    if backend_name() == "jax":
        return [d.device_kind for d in jax_gpus()]
    tf = import_tensorflow()
    names = []
    for g in tf.config.list_physical_devices("GPU"):
        try:
            names.append(tf.config.experimental.get_device_details(g).get("device_name", g.name))
        except Exception:
            names.append(g.name)
    return names


def jax_gpus() -> list[Any]:
    import jax

    return [d for d in jax.devices() if d.platform == "gpu"]


def import_tensorflow():
    """Import and return ``tensorflow`` with its start-up messages captured."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")  # device discovery prints here too
        except BaseException:
            os.dup2(saved, 2)
            capture.seek(0)
            sys.stderr.write(capture.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        text = capture.read().decode(errors="replace").strip()
    if text:
        log.debug("tensorflow start-up messages:\n%s", text)
    return tf


def describe_environment() -> dict[str, Any]:
    import keras
    import numpy as np
    import sklearn

    name = import_backend()
    names = gpu_names()
    return {
        "device": ", ".join(names)
        if names
        else f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
        "python": platform.python_version(),
        "backend": name,
        "backend_version": backend_version(name),
        "tensorflow": import_tensorflow().__version__ if name == "tensorflow" else None,
        "keras": keras.__version__,
        "scikit_learn": sklearn.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }


def numerics_fingerprint(gpus: list[str]) -> str:
    """What, besides the inputs and weights, decides a computed activation's exact bits.

    The deep-learning libraries (their kernels change between versions) and the device
    (a GPU model, or the CPU architecture: oneDNN picks kernels per instruction set), so
    a cache made elsewhere is never reused as if it were this machine's. The Keras
    backend is part of it: TensorFlow and JAX (XLA) compute different last bits, so an
    activation cache made on one backend is keyed apart from the other's (reusing it
    would need the values shown to agree, which nothing here checks).
    """
    import keras
    import numpy as np

    device = ",".join(gpus) if gpus else f"CPU {platform.machine()} {platform.processor()}".strip()
    name = import_backend()
    if name == "tensorflow":  # the string TensorFlow caches were keyed with: they stay valid
        lib = f"tensorflow={import_tensorflow().__version__}"
    else:
        lib = f"{name}={backend_version(name)};jaxlib={backend_version('jaxlib')}"
    return f"{lib};keras={keras.__version__};numpy={np.__version__};device={device}"
