"""One experiment, read top-down as its phases.

:func:`run_experiment`: check the inputs (weights, classifiers) -> find, check and split
the data -> decode it (the decoded-image cache) -> build the backbone, freeze it, put
the head on -> open the run folder -> pick the feed (images through the whole model, or
the cached frozen prefix through the rest) -> train -> one prediction pass per split
(the head's logits and the penultimate features) -> fit the forest and the other
classifiers on those features -> write predictions, models, plots -> write the run
record (``metrics.json``) last.
"""

from __future__ import annotations

import contextlib
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

from tlexp import files, runfolder
from tlexp.config import Config
from tlexp.data import SPLITS, data_summary, make_decoder, prepare_data, write_run_check
from tlexp.errors import UserError
from tlexp.experiment import _phases as phases
from tlexp.experiment._build import build, check_inputs
from tlexp.experiment._outputs import write_predictions
from tlexp.interrupts import TERMINATED
from tlexp.logs import PhaseClock, RunLog
from tlexp.results import RunRecord

log = logging.getLogger("tlexp")


def run_experiment(cfg: Config, run_dir: str | os.PathLike | None = None, *, mlflow_parent: str | None = None) -> Path:
    """Run one experiment end to end and write its run folder.

    Order matters for the user: weights and data problems fail in seconds, before a run
    folder exists; the resolved config is the first file written; ``metrics.json`` is
    the last, so its presence means the run finished.

    Args:
        cfg: a validated config without a sweep.
        run_dir: the exact folder to create (it must not exist; sweeps use this);
            default ``<output.dir>/<name>``, or ``<name>2``, ... if taken.
        mlflow_parent: MLflow run id to nest this run under (a sweep's parent run).

    Returns:
        The run folder.
    """
    if cfg.grids():
        raise UserError(
            f"This config defines a sweep over {', '.join(cfg.swept_keys())}; run it with 'tlexp sweep', "
            "or add sweep={} to run its base config once."
        )
    clock = PhaseClock()
    with RunLog() as run_log, contextlib.ExitStack() as on_devices:
        with clock("weights"):
            weights_path, classifiers = check_inputs(cfg)
        with clock("data"):
            ds, check = prepare_data(cfg)
        with clock("decode"):  # before the run folder: a full cache disk fails a run that left nothing
            decoder = make_decoder(cfg, ds, check)
        with clock("build"):
            built = build(cfg, ds, check, weights_path, on_devices)
        run_dir = _open_run_dir(cfg, run_dir, run_log)
        with _stopped_says_why(run_dir, run_log):  # from here on, whatever stops the run says so in its run.log
            files.write_yaml(run_dir / runfolder.CONFIG_FILE, cfg.to_dict())
            files.write_csv(
                run_dir / runfolder.SPLIT_FILE,
                ["path", "label", "split"],
                ((p, ds.class_names[y], s) for p, y, s in zip(ds.paths, ds.labels, ds.split, strict=True)),
            )
            check_info = write_run_check(run_dir, check, ds, cfg.data.near_duplicate_threshold)
            with clock("prefix"):
                from tlexp.pipeline import open_feed

                feed = open_feed(cfg, ds, built.whole, built.plan, built.accel, check, decoder)
            with clock("train"):
                history, stages = phases.train(cfg, feed, built, run_dir)
            with clock("predict"):
                out = phases.predict(feed, run_dir)
            scored = phases.classify(out, ds, classifiers, clock)
            write_predictions(run_dir, ds, out, {name: s.proba for name, s in scored.items()})
            if cfg.output.save_model:
                phases.save_models(run_dir, built.whole.model, classifiers)
            with clock("plots"):
                phases.plot(run_dir, history, scored, out, ds)
        record = RunRecord(
            run={"name": run_dir.name, "dir": str(run_dir), "started": clock.started, "finished": _now()},
            config=cfg.to_dict(),
            data={
                **data_summary(ds),
                "used": {s: len(out[s].labels) for s in SPLITS},
                "skipped": len(feed.failed),
                "check": check_info,
                "decoded_cache": str(decoder.cache.folder) if hasattr(decoder, "cache") else None,
            },
            freeze=built.plan.to_dict(),
            params=built.counts,
            classifiers={name: s.result for name, s in scored.items()},
            history={
                k: v
                for k, v in history.items()
                if k in ("stage", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")
            },
            training={"schedule": cfg.train.schedule, "stages": stages},
            prefix_cache=feed.prefix_cache,
            timings_s=clock.seconds(),
            accelerator=built.accel.to_dict(),
            environment=_environment(),
        )
        _finish(run_dir, cfg, record, mlflow_parent)
    return run_dir


@contextlib.contextmanager
def _stopped_says_why(run_dir: Path, run_log: RunLog):
    """Whatever stops a run once its folder exists is logged to its run.log, and the log
    says that the folder holds what was written so far."""
    incomplete = f"%s holds what was written so far (no {runfolder.METRICS_FILE})"
    try:
        yield
    except UserError as e:
        run_log.file_only(logging.ERROR, "run: stopped: %s", e)  # the CLI prints it, without a traceback
        log.error(f"run: {incomplete}", run_dir)
        raise
    except KeyboardInterrupt:
        log.error("run: interrupted; %s is incomplete (no %s)", run_dir, runfolder.METRICS_FILE)
        raise
    except OSError as e:
        if not files.is_disk_full(e):
            log.exception(f"run: failed; {incomplete}", run_dir)
            raise
        run_log.file_only(logging.ERROR, "run: stopped: %s", files.disk_full_message(e))  # the CLI prints it
        log.error(f"run: {incomplete}", run_dir)
        raise
    except Exception as e:
        if TERMINATED.is_set():  # a SIGTERM whose interrupt something swallowed ended the run
            log.error("run: interrupted; %s is incomplete (no %s)", run_dir, runfolder.METRICS_FILE)
            raise KeyboardInterrupt from e
        log.exception(f"run: failed; {incomplete}", run_dir)
        raise


def _finish(run_dir: Path, cfg: Config, record: RunRecord, mlflow_parent: str | None) -> None:
    """metrics.json (last), the result lines, and MLflow where asked."""
    record.save(run_dir)
    for name, result in record.classifiers.items():
        t = result.test
        f1, auc = (f"{v:.4f}" if v is not None else "n/a" for v in (t.f1, t.roc_auc))
        log.info("result: %-8s test accuracy %.4f  F1 %s  ROC-AUC %s  (n=%d)", name, t.accuracy, f1, auc, t.n)
    if cfg.tracking.mlflow.uri:
        phases.track(run_dir, cfg, mlflow_parent)
    log.info("run: done in %.1fs; results in %s", record.timings_s["total"], run_dir)


def _open_run_dir(cfg: Config, run_dir: str | os.PathLike | None, run_log: RunLog) -> Path:
    """Create the run folder (never an existing one) and start its run.log."""
    if run_dir is None:
        run_dir = runfolder.new_run_dir(cfg.output.dir, cfg.run_name())
    else:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True)  # never into an existing folder
    run_log.write_to(run_dir / runfolder.LOG_FILE)
    log.info("run: folder %s", run_dir)
    return run_dir


def _environment() -> dict:
    from tlexp.model import describe_environment

    return describe_environment()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
