"""The command line: one parser, a sub-parser per command, ``key=value`` overrides anywhere."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from tlexp.cli import _commands as commands
from tlexp.version import __version__


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line, with ``key=value`` overrides accepted anywhere among the flags.

    argparse takes the overrides only right after CONFIG; those found after a flag
    (``sweep CONFIG --executor ray output.dir=x``) come back unrecognized and are appended
    in their order (rightmost still wins). Anything else unrecognized (an unknown flag, a
    stray word) is the usual error.
    """
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    takes_overrides = hasattr(args, "overrides")
    stray = [a for a in extra if not (takes_overrides and "=" in a and not a.startswith("-"))]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if takes_overrides:
        args.overrides = [*args.overrides, *extra]
    return args


def build_parser() -> argparse.ArgumentParser:
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
    _with_config(sub, "run", "Run one experiment and write its run folder.").set_defaults(func=commands.run)
    _add_sweep(sub)
    _with_config(
        sub,
        "plan",
        "Show what 'run' (or 'sweep') would do: data found, freeze plans, parameter counts; no training, no weights.",
    ).set_defaults(func=commands.plan)
    _add_probe(sub)
    _add_data(sub)
    _add_weights(sub)
    _add_predict(sub)
    _add_report(sub)
    sub.add_parser("config", help="Print every config key with its default, type and description.").set_defaults(
        func=commands.config
    )
    return p


def _with_config(sub, name: str, help: str) -> argparse.ArgumentParser:
    sp = sub.add_parser(name, help=help, description=help)
    sp.add_argument("config", help="YAML config file (holds overrides of the defaults; see 'tlexp config')")
    sp.add_argument(
        "overrides",
        nargs="*",
        metavar="key.sub=value",
        help="override config values, e.g. model.freeze=0.5 train.epochs=1",
    )
    return sp


def _add_sweep(sub) -> None:
    sp = _with_config(
        sub,
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
        "Workers may also be started separately (several hosts, a Slurm array): see docs/how-to/workers.md",
    )
    sp.set_defaults(func=commands.sweep)


def _add_probe(sub) -> None:
    sp = _with_config(
        sub,
        "probe",
        "Probe the frozen backbone at every stage: the forest and the classifiers fitted on its pooled "
        "activations at each stage boundary; writes probe.json, probe.csv and probe.png.",
    )
    sp.add_argument(
        "--out", metavar="DIR", help="the folder to write; it must not exist (default: <output.dir>/<run name>_probe)"
    )
    sp.set_defaults(func=commands.probe)


def _add_data(sub) -> None:
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
    sp.set_defaults(func=commands.data)


def _add_weights(sub) -> None:
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
    sp.set_defaults(func=commands.weights)


def _add_predict(sub) -> None:
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
    sp.set_defaults(func=commands.predict)


def _add_report(sub) -> None:
    sp = sub.add_parser(
        "report",
        help="Rebuild summary tables, plots and report.html from run or sweep folders.",
        description="Rebuild summary tables, plots and report.html from run folders (found "
        "recursively under each DIR; unfinished runs are ignored).",
    )
    sp.add_argument("dirs", nargs="+", metavar="DIR", help="run folders, sweep folders, or folders holding them")
    sp.add_argument("--out", help="where to write the report (default: DIR if one is given, else results/report)")
    sp.set_defaults(func=commands.report)


def _workers(value: str) -> int | str:
    if value == "auto":
        return value
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1 or 'auto'. Got {value!r} instead")
    return int(value)
