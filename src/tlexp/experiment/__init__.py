"""One experiment: a config in, a run folder out, read top-down as its phases (``_run.py``)."""

from tlexp.experiment._run import plan_experiment, run_experiment

__all__ = ["plan_experiment", "run_experiment"]
