"""The library API: what the ``tlexp`` command calls, and what a notebook calls.

    import tlexp
    cfg = tlexp.load_config("configs/demo.yaml", ["train.epochs=1"])
    run_dir = tlexp.run(cfg)                       # one experiment -> its run folder
    record = tlexp.load_record(run_dir)            # metrics.json, typed
    result = tlexp.sweep(tlexp.load_config("configs/demo_sweep.yaml"))
    tlexp.report([result.dir])                     # summary.md, report.html, charts
    probe_dir = tlexp.api.probe("configs/demo.yaml")  # the frozen backbone's features at each stage
    names, rows = tlexp.predict(run_dir, ["photo.jpg"])

Every function takes a loaded config (:func:`load_config`) or paths, raises
:class:`tlexp.errors.UserError` for a user's mistake (with what is wrong, the value and
the fix), and writes nothing outside the folders it names.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tlexp.config import Config, load_config
from tlexp.errors import UserError
from tlexp.results import load_record

__all__ = ["check_data", "load_config", "load_record", "plan", "predict", "probe", "report", "run", "sweep"]

log = logging.getLogger("tlexp")


def run(cfg: Config, run_dir: str | os.PathLike | None = None) -> Path:
    """Run one experiment and write its run folder (:func:`tlexp.experiment.run_experiment`).

    Returns:
        The run folder; its ``metrics.json`` (:func:`load_record`) holds the results.
    """
    from tlexp.experiment import run_experiment

    return run_experiment(cfg, run_dir)


def sweep(cfg: Config, *, new: bool = False, name: str | None = None, executor: str = "local", **options: Any):
    """Run every cell of the config's sweep grid, resuming an unfinished sweep folder, then
    write its report (:func:`tlexp.sweeps.run_sweep`; ``options``: ``address``, ``workers``).

    ``name``: the sweep folder's name where the config sets none (the CLI passes the
    config file's name); ``new``: a new folder (``name2``, ...) instead of resuming.

    Returns:
        The :class:`tlexp.sweeps.SweepResult`: its folder and exit code.
    """
    from tlexp.sweeps import run_sweep

    return run_sweep(cfg, new=new, default_name=name or "sweep", executor=executor, **options)


def probe(
    cfg: Config | str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
) -> Path:
    """The depth probe (:func:`tlexp.probes.run_probe`): the forest and the classifiers fitted on
    the frozen backbone's pooled activations at each of its stages.

    Args:
        cfg: a loaded config, or the path of a config file (loaded with ``overrides``).
        out_dir: the folder to write (it must not exist); default
            ``<output.dir>/<run name>_probe`` (``..._probe2``, ... if taken).

    Returns:
        The probe folder; its ``probe.json`` holds the accuracies per depth.
    """
    from tlexp.probes import default_probe_dir, run_probe

    if not isinstance(cfg, Config):
        cfg = load_config(cfg, list(overrides))
    elif overrides:
        raise UserError("overrides go with a config file's path; with a loaded Config, set the values on it.")
    return run_probe(cfg, out_dir if out_dir is not None else default_probe_dir(cfg))


def plan(cfg: Config) -> dict[str, Any]:
    """What :func:`run` (or :func:`sweep`, for a sweep config) would do: the data found, the
    freeze plans and parameter counts, without decoding an image or loading weights."""
    if cfg.grids():
        from tlexp.sweeps import plan_sweep

        return plan_sweep(cfg)
    from tlexp.experiment import plan_experiment

    return plan_experiment(cfg)


def report(dirs: Sequence[str | os.PathLike], out: str | os.PathLike | None = None) -> dict[str, Path]:
    """Summary tables, charts and report.html of the finished runs found under ``dirs``.

    Args:
        dirs: run folders, sweep folders, or folders holding them (searched recursively;
            unfinished runs are left out, and the log says which).
        out: where to write; default the one folder given, else ``results/report``.

    Returns:
        The files written, by kind.
    """
    from tlexp.results import build_report, find_runs

    folders = [Path(d) for d in dirs]
    missing = [str(d) for d in folders if not d.is_dir()]
    if missing:
        raise UserError(f"Not a folder: {', '.join(missing)}. Give run folders, sweep folders, or their parents.")
    finished, unfinished = find_runs(folders)
    if not finished:
        raise UserError(
            f"No finished run (a folder with config.yaml and metrics.json) under {', '.join(map(str, dirs))}."
        )
    target = Path(out) if out else (folders[0] if len(folders) == 1 else Path("results") / "report")
    target.mkdir(parents=True, exist_ok=True)
    if unfinished:
        log.info("report: left out %d unfinished run(s): %s", len(unfinished), ", ".join(str(u) for u in unfinished))
    paths = build_report(finished, target)
    log.info("report: %d run(s) -> %s", len(finished), target)
    return paths


def predict(
    run_dir: str | os.PathLike, images: Sequence[str | os.PathLike], classifier: str = "head"
) -> tuple[list[str], list[dict[str, Any]]]:
    """Class probabilities of image files (or folders of them) from a finished run's saved
    model or classifier, with the run's own preprocessing (:func:`tlexp.classify.predict_images`).

    Returns:
        ``(class_names, rows)``: one row per image (``path``, ``prediction``, ``proba``, ``error``).
    """
    from tlexp.classify import find_images, predict_images

    found = find_images(images)
    log.info("predict: %d image(s) with the %s of %s", len(found), classifier, run_dir)
    return predict_images(run_dir, found, classifier)


def check_data(
    root: str | os.PathLike,
    layout: str = "auto",
    *,
    out: str | os.PathLike = "results",
    cache_dir: str | os.PathLike | None = None,
):
    """Check every file of a dataset (read-only) and write the check's CSV files into a new
    folder under ``out``.

    Returns:
        ``(result, folder)``: the :class:`tlexp.data.CheckResult` and the report folder.
    """
    from tlexp import runfolder
    from tlexp.data import check_dataset, write_check
    from tlexp.files import cache_root
    from tlexp.logs import show_progress

    result = check_dataset(
        root, layout, cache_dir=Path(cache_dir) if cache_dir else cache_root(), progress=show_progress()
    )
    folder = runfolder.new_run_dir(out, f"check-{result.root.name}")
    write_check(result, folder)
    return result, folder
