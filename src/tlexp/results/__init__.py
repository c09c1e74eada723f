"""Results: the run record, metrics, statistics, plots, the report and tracking. No TensorFlow.

The modules are private; this package's names are the API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tlexp._lazy import lazy_exports

# Each public name and the private module that holds it, imported on first use (tlexp._lazy).
_EXPORTS = {
    "ClassifierResult": "_record",
    "CostPoint": "_costchart",
    "Curve": "_sweepcharts",
    "RecordError": "_record",
    "RunRecord": "_record",
    "ScoredImages": "_leads",
    "Strategy": "_strategy",
    "TrackingError": "_tracking",
    "VERSION": "_record",
    "build_report": "_report",
    "classification_metrics": "_metrics",
    "find_runs": "_report",
    "fmt_p": "_tables",
    "load_record": "_record",
    "log_run": "_logrun",
    "pareto_frontier": "_cost",
    "plot_accuracy_vs_frozen": "_sweepcharts",
    "plot_accuracy_vs_minutes": "_costchart",
    "plot_confusions": "_plots",
    "plot_history": "_plots",
    "plot_roc": "_plots",
    "plot_time_vs_frozen": "_sweepcharts",
    "require_mlflow": "_tracking",
    "resolve_uri": "_tracking",
    "roc_points": "_metrics",
    "setting_costs": "_cost",
    "sweep_parent": "_tracking",
    "wilson_interval": "_stats",
}
__all__ = [
    "ClassifierResult",
    "CostPoint",
    "Curve",
    "RecordError",
    "RunRecord",
    "ScoredImages",
    "Strategy",
    "TrackingError",
    "VERSION",
    "build_report",
    "classification_metrics",
    "find_runs",
    "fmt_p",
    "load_record",
    "log_run",
    "pareto_frontier",
    "plot_accuracy_vs_frozen",
    "plot_accuracy_vs_minutes",
    "plot_confusions",
    "plot_history",
    "plot_roc",
    "plot_time_vs_frozen",
    "require_mlflow",
    "resolve_uri",
    "roc_points",
    "setting_costs",
    "sweep_parent",
    "wilson_interval",
]

if TYPE_CHECKING:
    from tlexp.results._cost import pareto_frontier, setting_costs
    from tlexp.results._costchart import CostPoint, plot_accuracy_vs_minutes
    from tlexp.results._leads import ScoredImages
    from tlexp.results._logrun import log_run
    from tlexp.results._metrics import classification_metrics, roc_points
    from tlexp.results._plots import plot_confusions, plot_history, plot_roc
    from tlexp.results._record import VERSION, ClassifierResult, RecordError, RunRecord, load_record
    from tlexp.results._report import build_report, find_runs
    from tlexp.results._stats import wilson_interval
    from tlexp.results._strategy import Strategy
    from tlexp.results._sweepcharts import Curve, plot_accuracy_vs_frozen, plot_time_vs_frozen
    from tlexp.results._tables import fmt_p
    from tlexp.results._tracking import TrackingError, require_mlflow, resolve_uri, sweep_parent


__getattr__ = lazy_exports(__name__, _EXPORTS)
