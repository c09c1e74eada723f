"""The ``tlexp`` command: thin subcommands over the library API.

User mistakes (``UserError``) print one clear message and exit with code 2, no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator, Sequence

from tlexp.errors import UserError
from tlexp.logs import setup_terminal
from tlexp.version import __version__

log = logging.getLogger("tlexp")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_terminal(logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO)
    terminated = threading.Event()
    try:
        with _sigterm_interrupts(terminated):
            return args.func(args)
    except UserError as e:
        print(f"tlexp: error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        from tlexp.files import disk_full_message, is_disk_full

        if not is_disk_full(e):
            raise
        print(f"tlexp: error: {disk_full_message(e)}", file=sys.stderr)  # the disk, not a bug: no traceback
        return 2
    except KeyboardInterrupt:
        if terminated.is_set():
            print("tlexp: terminated (SIGTERM)", file=sys.stderr)
            return 128 + signal.SIGTERM
        print("tlexp: interrupted", file=sys.stderr)
        return 130


@contextlib.contextmanager
def _sigterm_interrupts(received: threading.Event) -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C while a command runs, and set ``received``.

    Slurm at a job's time limit, Kubernetes, ``timeout`` and ``kill`` send SIGTERM, which
    by default ends Python on the spot: the run and sweep would not record the
    interruption (run.log, status.json) and a local Ray runtime would not be shut down.
    The event, not the exception's type, tells the two apart: Ray's waits turn any
    exception of a signal handler into a plain KeyboardInterrupt.
    """
    if threading.current_thread() is not threading.main_thread():  # handlers live in the main thread
        yield
        return

    def terminate(signum, frame):
        received.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line, with ``key=value`` overrides accepted anywhere among the flags.

    argparse takes the overrides only right after CONFIG; those found after a flag
    (``sweep CONFIG --executor ray output.dir=x``) come back unrecognized and are appended
    in their order (rightmost still wins). Anything else unrecognized (an unknown flag, a
    stray word) is the usual error.
    """
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    takes_overrides = hasattr(args, "overrides")
    stray = [a for a in extra if not (takes_overrides and "=" in a and not a.startswith("-"))]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if takes_overrides:
        args.overrides = [*args.overrides, *extra]
    return args


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tlexp",
        description="Transfer-learning experiments: freeze part of a pretrained backbone, fine-tune a "
        "dense head, compare it with a Random Forest on the same features.",
    )
    p.add_argument("--version", action="version", version=f"tlexp {__version__}")
    noise = p.add_mutually_exclusive_group()
    noise.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="debug logging, TensorFlow's start-up messages and tracebacks of failed sweep cells",
    )
    noise.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only, no progress bars")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(name: str, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.add_argument("config", help="YAML config file (holds overrides of the defaults; see 'tlexp config')")
        sp.add_argument(
            "overrides",
            nargs="*",
            metavar="key.sub=value",
            help="override config values, e.g. model.freeze=0.5 train.epochs=1",
        )
        return sp

    with_config("run", "Run one experiment and write its run folder.").set_defaults(func=_cmd_run)
    sp = with_config(
        "sweep",
        "Run every cell of the config's sweep: grid (resumes an unfinished sweep), "
        "then write summary tables, plots and report.html.",
    )
    sp.add_argument(
        "--new", action="store_true", help="start a new sweep folder (name2, ...) instead of resuming the existing one"
    )
    sp.add_argument(
        "--executor",
        choices=["local", "ray"],
        default="local",
        help="local: cells one after another in this process (default); ray: each cell a Ray task "
        "with the CPUs/GPUs of resources.* (pip install 'tlexp[ray]')",
    )
    sp.add_argument("--address", help="Ray cluster to join (e.g. auto, ray://head:10001); default: a local Ray runtime")
    sp.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N",
        help="start N worker processes on this machine that share the sweep, each pinned to one GPU "
        "(CUDA_VISIBLE_DEVICES; nothing to pin without GPUs), or 'auto': one per visible GPU (1 without GPUs). "
        "Workers may also be started separately (several hosts, a Slurm array): see the README",
    )
    sp.set_defaults(func=_cmd_sweep)
    with_config(
        "plan",
        "Show what 'run' (or 'sweep') would do: data found, freeze plans, parameter counts; no training, no weights.",
    ).set_defaults(func=_cmd_plan)
    sp = sub.add_parser(
        "data",
        help="'data check ROOT': classify every file of a dataset (good, converted, "
        "rejected with a reason), find duplicates; never modifies the files.",
        description="'tlexp data check ROOT' walks the dataset once and classifies every file: good, "
        "converted (CMYK, grayscale, palette, RGBA, 16-bit, EXIF-rotated, wrong extension) or "
        "rejected with a reason (empty, truncated, not an image, unsupported, too small, unreadable). "
        "It writes manifest.csv, rejected.csv and duplicates.csv into a new folder under --out. "
        "Every run does the same check first; results are cached, so unchanged files are not "
        "decoded again.",
    )
    sp.add_argument("action", choices=["check"])
    sp.add_argument("root", metavar="ROOT", help="the dataset folder")
    sp.add_argument("--layout", default="auto", choices=["auto", "folders", "flat"])
    sp.add_argument("--out", default="results", help="parent folder of the check's report folder (default: results)")
    sp.add_argument("--cache-dir", help="tlexp's cache folder (default: $TLEXP_CACHE_DIR or ~/.cache/tlexp)")
    sp.set_defaults(func=_cmd_data)
    sp = sub.add_parser(
        "weights",
        help="List the ImageNet weights files Keras expects, where, and whether they "
        "are there and intact; 'weights import FILE' puts a downloaded one in place.",
        description="Without arguments: for each backbone, the no-top ImageNet weights file Keras "
        "expects, where Keras looks for it ($KERAS_HOME), whether it is there and whether its hash "
        "(MD5, or SHA-256) matches the one Keras publishes (exit code 1 if any is missing or corrupt). "
        "'weights import FILE': verify a downloaded file and copy it where Keras will find it.",
    )
    sp.add_argument("action", nargs="?", choices=["import"], help="import FILE into the Keras cache")
    sp.add_argument("file", nargs="?", metavar="FILE", help="the downloaded weights file (with 'import')")
    sp.set_defaults(func=_cmd_weights)
    sp = sub.add_parser(
        "predict",
        help="Classify images with a finished run's saved model or classifier.",
        description="Classify images (files or folders) with a finished run, using the run's own "
        "preprocessing. Writes CSV: path, prediction, one probability per class, error.",
    )
    sp.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written with output.save_model=true")
    sp.add_argument("images", nargs="+", metavar="IMAGES", help="image files or folders")
    sp.add_argument("--classifier", default="head", help="head (default), forest, or another classifier of the run")
    sp.add_argument("--out", metavar="FILE.csv", help="write here instead of standard output")
    sp.add_argument(
        "--submission",
        action="store_true",
        help="write the Kaggle dogs-vs-cats submission format instead: id,label with label = P(positive)",
    )
    sp.add_argument("--positive", default="dog", help="class whose probability --submission writes (default: dog)")
    sp.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    sp.set_defaults(func=_cmd_predict)
    sp = sub.add_parser(
        "report",
        help="Rebuild summary tables, plots and report.html from run or sweep folders.",
        description="Rebuild summary tables, plots and report.html from run folders (found "
        "recursively under each DIR; unfinished runs are ignored).",
    )
    sp.add_argument("dirs", nargs="+", metavar="DIR", help="run folders, sweep folders, or folders holding them")
    sp.add_argument("--out", help="where to write the report (default: DIR if one is given, else results/report)")
    sp.set_defaults(func=_cmd_report)
    sp = sub.add_parser("config", help="Print every config key with its default, type and description.")
    sp.set_defaults(func=_cmd_config)
    return p


def _cmd_run(args: argparse.Namespace) -> int:
    from tlexp.config import load_config
    from tlexp.experiment import run_experiment

    cfg = load_config(args.config, args.overrides)
    run_dir = run_experiment(cfg)
    print(run_dir)
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tlexp.config import load_config
    from tlexp.sweep import run_sweep

    cfg = load_config(args.config, args.overrides)
    if args.address and args.executor != "ray":
        raise UserError("--address is the Ray cluster to join; it needs --executor ray.")
    result = run_sweep(
        cfg,
        new=args.new,
        default_name=Path(args.config).stem,
        executor=args.executor,
        address=args.address,
        workers=args.workers,
    )
    print(result.dir)
    return result.exit_code


def _workers(value: str) -> int | str:
    if value == "auto":
        return value
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1 or 'auto'. Got {value!r} instead")
    return int(value)


def _cmd_plan(args: argparse.Namespace) -> int:
    import yaml

    from tlexp.config import load_config

    cfg = load_config(args.config, args.overrides)
    if cfg.sweep:
        from tlexp.sweep import plan_sweep

        print(format_sweep_plan(plan_sweep(cfg)))
        return 0
    from tlexp.experiment import plan_experiment

    plan = plan_experiment(cfg)
    print(format_plan(plan, yaml.safe_dump(plan["config"], sort_keys=False)))
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tlexp import runfolder
    from tlexp.data import check_dataset, format_summary, write_check
    from tlexp.files import cache_root
    from tlexp.logs import show_progress

    result = check_dataset(
        args.root,
        args.layout,
        cache_dir=Path(args.cache_dir) if args.cache_dir else cache_root(),
        progress=show_progress(),
    )
    out = runfolder.new_run_dir(args.out, f"check-{result.root.name}")
    write_check(result, out)
    if not args.quiet:  # --quiet: only the report folder, what a script reads
        print(format_summary(result))
    print(out)
    return 0


def _cmd_weights(args: argparse.Namespace) -> int:
    from tlexp.model import format_weights_status, import_weights, weights_status

    if args.action == "import":
        if not args.file:
            raise UserError("'tlexp weights import' needs the downloaded file: tlexp weights import FILE")
        backbone, dest = import_weights(args.file)
        log.info("weights: %s weights verified and in place", backbone)
        print(dest)
        return 0
    if args.file:
        raise UserError(f"Unexpected argument {args.file!r}. Did you mean 'tlexp weights import {args.file}'?")
    rows = weights_status()
    print(format_weights_status(rows))
    # "unchecked": present, and Keras publishes no hash to check it against (MobileNet, MobileNetV2).
    return 0 if all(r["checksum"] in ("ok", "unchecked") for r in rows) else 1


def _cmd_predict(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tlexp.predict import find_images, predict_images, write_predictions, write_submission

    if args.out and Path(args.out).exists() and not args.overwrite:
        raise UserError(
            f"'{args.out}' exists; tlexp does not overwrite it silently. Pass --overwrite or another --out."
        )
    images = find_images(args.images)
    log.info("predict: %d image(s) with the %s of %s", len(images), args.classifier, args.run_dir)
    class_names, rows = predict_images(args.run_dir, images, args.classifier)
    if args.submission:
        write_submission(args.out, class_names, rows, args.positive)
    else:
        write_predictions(args.out, class_names, rows)
    if args.out:
        print(args.out)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tlexp.results import build_report, find_runs

    dirs = [Path(d) for d in args.dirs]
    missing = [str(d) for d in dirs if not d.is_dir()]
    if missing:
        raise UserError(f"Not a folder: {', '.join(missing)}. Give run folders, sweep folders, or their parents.")
    finished, unfinished = find_runs(dirs)
    if not finished:
        raise UserError(f"No finished run (a folder with config.yaml and metrics.json) under {', '.join(args.dirs)}.")
    out = Path(args.out) if args.out else (dirs[0] if len(dirs) == 1 else Path("results") / "report")
    out.mkdir(parents=True, exist_ok=True)
    if unfinished:
        log.info("report: left out %d unfinished run(s): %s", len(unfinished), ", ".join(str(u) for u in unfinished))
    paths = build_report(finished, out)
    log.info("report: %d run(s) -> %s", len(finished), out)
    for p in paths.values():
        print(p)
    return 0


def format_plan(plan: dict, config_yaml: str) -> str:
    """Human-readable text of :func:`tlexp.experiment.plan_experiment`'s result."""
    d, f, m = plan["data"], plan["freeze"], plan["model"]
    lines = [
        "# resolved config",
        config_yaml.rstrip(),
        "",
        "# data",
        f"root: {d['root']}",
        f"layout: {d['layout']}",
        f"classes: {', '.join(d['class_names'])}",
    ]
    width = max(len(c) for c in d["class_names"])
    lines.append(f"{'split':<6} " + " ".join(f"{c:>{max(width, 6)}}" for c in d["class_names"]) + f" {'total':>7}")
    for split, per_class in d["counts"].items():
        lines.append(
            f"{split:<6} "
            + " ".join(f"{n:>{max(width, 6)}}" for n in per_class.values())
            + f" {sum(per_class.values()):>7}"
        )
    lines += [
        "",
        "# freeze plan",
        f"backbone: {plan['config']['model']['backbone']} ({f['layers_total']} layers, "
        f"{f['total_params']:,} parameters)",
        f"requested: {f['requested']}",
        f"frozen: {f['layers_frozen']} layers, through {f['last_frozen_layer']}",
        f"frozen share of backbone parameters: {100 * f['frozen_share']:.2f} % ({f['frozen_params']:,})",
        f"batchnorm in the trainable part: {f['batchnorm']}",
        f"backbone trainable: {f['backbone_trainable']:,}   non-trainable: {f['backbone_non_trainable']:,}",
        f"whole model trainable: {m['trainable']:,}   non-trainable: {m['non_trainable']:,}   total: {m['total']:,}",
    ]
    return "\n".join(lines)


def format_sweep_plan(plan: dict) -> str:
    """One line per cell of :func:`tlexp.sweep.plan_sweep`'s result: its freeze plan and counts."""
    d = plan["data"]
    counts = {s: sum(c.values()) for s, c in d["counts"].items()}
    lines = [
        f"# data: {d['root']} ({d['layout']} layout; classes {', '.join(d['class_names'])}; "
        f"train {counts['train']} / val {counts['val']} / test {counts['test']}, same split in every cell)",
        f"# {len(plan['cells'])} cells",
    ]
    header = ("cell", "frozen through", "achieved", "backbone trainable", "non-trainable", "model total")
    rows = []
    for c in plan["cells"]:
        f, m = c["plan"]["freeze"], c["plan"]["model"]
        rows.append(
            (
                c["name"],
                str(f["last_frozen_layer"]),
                f"{100 * f['frozen_share']:.1f} %",
                f"{f['backbone_trainable']:,}",
                f"{f['backbone_non_trainable']:,}",
                f"{m['total']:,}",
            )
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        cells = enumerate(zip(r, widths, strict=True))
        lines.append("  ".join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in cells))
    return "\n".join(lines)


def _cmd_config(args: argparse.Namespace) -> int:
    from tlexp.config import describe

    rows = describe()
    kw = max(len(r[0]) for r in rows)
    dw = min(max(len(r[1]) for r in rows), 24)
    print("# Every config key: default, type, description. A config file holds only what it changes;")
    print("# override any key on the command line with key.sub=value.")
    for key, default, typ, desc in rows:
        print(f"{key:<{kw}}  {default:<{dw}}  {typ}\n{'':<{kw}}  {desc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
