"""What each subcommand does with its parsed arguments: one library API call, and what it prints."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from tlexp.errors import UserError

log = logging.getLogger("tlexp")


def run(args: argparse.Namespace) -> int:
    from tlexp import api

    print(api.run(api.load_config(args.config, args.overrides)))
    return 0


def sweep(args: argparse.Namespace) -> int:
    from tlexp import api

    cfg = api.load_config(args.config, args.overrides)
    if args.address and args.executor != "ray":
        raise UserError("--address is the Ray cluster to join; it needs --executor ray.")
    result = api.sweep(
        cfg,
        new=args.new,
        name=Path(args.config).stem,
        executor=args.executor,
        address=args.address,
        workers=args.workers,
    )
    print(result.dir)
    return result.exit_code


def probe(args: argparse.Namespace) -> int:
    from tlexp import api

    print(api.probe(args.config, out_dir=args.out, overrides=args.overrides))
    return 0


def plan(args: argparse.Namespace) -> int:
    import yaml

    from tlexp import api
    from tlexp.cli._text import format_plan, format_sweep_plan

    cfg = api.load_config(args.config, args.overrides)
    found = api.plan(cfg)
    if cfg.grids():
        print(format_sweep_plan(found))
    else:
        print(format_plan(found, yaml.safe_dump(found["config"], sort_keys=False)))
    return 0


def data(args: argparse.Namespace) -> int:
    from tlexp import api
    from tlexp.data import format_summary

    result, folder = api.check_data(args.root, args.layout, out=args.out, cache_dir=args.cache_dir)
    if not args.quiet:  # --quiet: only the report folder, what a script reads
        print(format_summary(result))
    print(folder)
    return 0


def weights(args: argparse.Namespace) -> int:
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


def predict(args: argparse.Namespace) -> int:
    from tlexp import api
    from tlexp.classify import write_predictions, write_submission

    if args.out and Path(args.out).exists() and not args.overwrite:
        raise UserError(
            f"'{args.out}' exists; tlexp does not overwrite it silently. Pass --overwrite or another --out."
        )
    class_names, rows = api.predict(args.run_dir, args.images, args.classifier)
    if args.submission:
        write_submission(args.out, class_names, rows, args.positive)
    else:
        write_predictions(args.out, class_names, rows)
    if args.out:
        print(args.out)
    return 0


def report(args: argparse.Namespace) -> int:
    from tlexp import api

    for p in api.report(args.dirs, args.out).values():
        print(p)
    return 0


def config(args: argparse.Namespace) -> int:
    from tlexp.config import describe

    rows = describe()
    kw = max(len(r[0]) for r in rows)
    dw = min(max(len(r[1]) for r in rows), 24)
    print("# Every config key: default, type, description. A config file holds only what it changes;")
    print("# override any key on the command line with key.sub=value.")
    for key, default, typ, desc in rows:
        print(f"{key:<{kw}}  {default:<{dw}}  {typ}\n{'':<{kw}}  {desc}")
    return 0
