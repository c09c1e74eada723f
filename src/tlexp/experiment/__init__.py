"""One experiment: a config in, a run folder out (:func:`run_experiment`), and what it would
do without training (:func:`plan_experiment`). ``_run.py`` reads top-down as the phases."""

from tlexp.experiment._build import plan_experiment
from tlexp.experiment._run import run_experiment

__all__ = ["plan_experiment", "run_experiment"]
