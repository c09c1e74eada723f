"""tlexp: transfer-learning experiments from YAML configs.

Library API (what the CLI calls; usable from a notebook)::

    from tlexp import load_config
    from tlexp import run_experiment
    from tlexp import plan_experiment
    cfg = load_config("configs/demo.yaml", ["train.epochs=1"])
    run_dir = run_experiment(cfg)
"""

from __future__ import annotations

from tlexp.version import __version__

__all__ = ["__version__", "load_config", "plan_experiment", "run_experiment"]


def __getattr__(name: str):
    # Lazy: `import tlexp` (and `tlexp --help`) must not pull in TensorFlow.
    if name == "load_config":
        from tlexp.config import load_config

        return load_config
    if name in ("run_experiment", "plan_experiment"):
        from tlexp import experiment

        return getattr(experiment, name)
    raise AttributeError(f"module 'tlexp' has no attribute {name!r}")
