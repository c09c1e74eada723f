"""tlexp: transfer-learning experiments from YAML configs.

The library API (:mod:`tlexp.api`), what the ``tlexp`` command calls::

    import tlexp
    cfg = tlexp.load_config("configs/demo.yaml", ["train.epochs=1"])
    run_dir = tlexp.run(cfg)
    print(tlexp.load_record(run_dir).classifiers["head"].test.accuracy)

``run_experiment`` and ``plan_experiment`` (:mod:`tlexp.experiment`) stay importable from
here for code written against earlier versions.
"""

from __future__ import annotations

from typing import Any

from tlexp.version import __version__

_API = ("check_data", "load_config", "load_record", "plan", "predict", "probe", "report", "run", "sweep")
__all__ = ["__version__", *_API, "plan_experiment", "run_experiment"]


def __getattr__(name: str) -> Any:
    # Lazy: `import tlexp` (and `tlexp --help`) must not pull in Keras or TensorFlow.
    if name in _API:
        from tlexp import api

        return getattr(api, name)
    if name in ("run_experiment", "plan_experiment"):
        from tlexp import experiment

        return getattr(experiment, name)
    raise AttributeError(f"module 'tlexp' has no attribute {name!r}")
