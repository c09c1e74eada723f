"""Import TensorFlow without its C++ start-up chatter on the terminal.

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

    tf = import_tensorflow()

    gpus = tf.config.list_physical_devices("GPU")
    names = []
    for g in gpus:
        try:
            names.append(tf.config.experimental.get_device_details(g).get("device_name", g.name))
        except Exception:
            names.append(g.name)
    return {
        "device": ", ".join(names)
        if names
        else f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "scikit_learn": sklearn.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }


def numerics_fingerprint(gpus: list[str]) -> str:
    """What, besides the inputs and weights, decides a computed activation's exact bits.

    The deep-learning libraries (their kernels change between versions) and the device
    (a GPU model, or the CPU architecture: oneDNN picks kernels per instruction set), so
    a cache made elsewhere is never reused as if it were this machine's.
    """
    import keras
    import numpy as np

    tf = import_tensorflow()
    device = ",".join(gpus) if gpus else f"CPU {platform.machine()} {platform.processor()}".strip()
    return f"tensorflow={tf.__version__};keras={keras.__version__};numpy={np.__version__};device={device}"
