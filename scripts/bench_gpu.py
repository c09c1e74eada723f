"""One cell of each backbone with mixed precision and XLA on and off: images per second.

The GPU check of the "Scale out" work: run it on a GPU machine (it runs on a CPU too, for
trying it out with small settings). It generates a demo dataset of real JPEGs, then runs
one ordinary tlexp cell per (backbone, precision, XLA) with random weights (speed does not
depend on their values; no download), and prints training and prediction throughput
from each run's own timings, plus what each run recorded as its accelerator settings.

Training runs the whole model on images (``train.prefix_cache.enabled=false``), so the
figures measure the GPU on the full network: with the cache, tlexp's default, epochs
would train only the layers above the cut, and the first cell of a backbone would leave
a cache entry that the others reuse. ``--prefix-cache`` measures that default instead.
"train img/s (last epoch)" is training images over the last epoch's wall time, which
includes that epoch's validation pass but no tracing or XLA compilation.

    python scripts/bench_gpu.py                                  # 224 px, 3 backbones x 4 settings
    python scripts/bench_gpu.py --size 32 --per-class 32 --backbones vgg16   # a quick CPU try
    python scripts/bench_gpu.py --csv $OUT/bench_gpu.csv         # rows also written as they finish
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbones", default="vgg16,resnet50,densenet121")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--per-class", type=int, default=512, help="generated images per class")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2, help="the first epoch includes tracing/XLA compilation")
    ap.add_argument("--out", default=None, help="folder for the runs, kept (default: a temporary one, removed)")
    ap.add_argument(
        "--prefix-cache",
        action="store_true",
        help="train on cached frozen-prefix activations (tlexp's default) instead of the whole model",
    )
    ap.add_argument(
        "--csv",
        default=None,
        help="also write the rows to this CSV file, each as soon as it is measured "
        "(a run cut short by a time limit keeps what it measured)",
    )
    args = ap.parse_args()

    import logging

    quiet = logging.StreamHandler()  # the runs' own logs go to their run.log; here only warnings
    quiet.setLevel(logging.WARNING)
    logging.getLogger("tlexp").addHandler(quiet)
    logging.getLogger("tlexp").propagate = False
    # TensorFlow's note that functions of *other* models were traced too ("N out of the
    # last M calls ... triggered tf.function retracing") is expected when cells share a
    # process; each model is traced once.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    if args.out:
        return _bench(args, Path(args.out))
    # Without --out the runs are scratch: their folder goes when the script ends, also on an
    # error, Ctrl-C or SIGTERM (a job's time limit), so repeated tries do not fill the temp dir.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    with tempfile.TemporaryDirectory(prefix="tlexp-bench-gpu-") as tmp:
        return _bench(args, Path(tmp))


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds like Ctrl-C, so the temporary folder is removed


def _bench(args: argparse.Namespace, out: Path) -> int:
    from tlexp.config import load_config
    from tlexp.experiment import run_experiment
    from tlexp.results.record import load_record

    settings = [("float32", False), ("float32", True), ("auto", False), ("auto", True)]
    rows = []
    for backbone in args.backbones.split(","):
        for precision, jit in settings:
            cfg = load_config(
                None,
                [
                    f"data.root={out / 'data'}",
                    "data.synthetic.enabled=true",
                    f"data.synthetic.per_class={args.per_class}",
                    f"data.image_size={args.size}",
                    f"data.cache_dir={out / 'cache'}",
                    f"model.backbone={backbone}",
                    "model.weights=none",
                    "model.freeze=0.3",
                    "model.head.pooling=avg",
                    f"train.batch_size={args.batch}",
                    f"train.epochs={args.epochs}",
                    f"train.precision={precision}",
                    f"train.jit_compile={str(jit).lower()}",
                    f"train.prefix_cache.enabled={str(args.prefix_cache).lower()}",
                    "forest.n_estimators=10",
                    "classifiers={}",
                    "output.save_model=false",
                    f"output.dir={out / 'runs'}",
                    f"name={backbone}_{precision}_{'xla' if jit else 'noxla'}",
                ],
            )
            t = time.perf_counter()
            run_dir = run_experiment(cfg)
            m = load_record(run_dir)
            n_train, n_all = m.data.used["train"], sum(m.data.used.values())
            last_epoch = m.history.seconds[-1]  # no tracing or compilation in it
            rows.append(
                {
                    "backbone": backbone,
                    "precision": m.accelerator.precision,
                    "xla": "on" if m.accelerator.jit_compile else "off",
                    "train img/s (last epoch)": n_train / last_epoch,
                    "train img/s (all epochs)": n_train * args.epochs / m.timings_s["train"],
                    "predict img/s": n_all / m.timings_s["predict"],
                    "cell s": time.perf_counter() - t,
                    "device": m.accelerator.gpus or ["CPU"],
                }
            )
            print(_row(rows[-1]), flush=True)
            if args.csv:
                _write_csv(Path(args.csv), rows)
    trained = "cached frozen-prefix activations" if args.prefix_cache else "the whole model on images"
    where = f"runs in {out / 'runs'}" if args.out else "runs not kept (--out keeps them)"
    print(f"\n{args.size}px, batch {args.batch}, {args.per_class * 2} generated images, trained {trained}; {where}")
    return 0


def _write_csv(path: Path, rows: list[dict]) -> None:
    """All rows so far, replacing the file atomically (a kill never leaves half a row)."""
    import csv
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows({**r, "device": "; ".join(r["device"])} for r in rows)
    os.replace(tmp, path)


def _row(r: dict) -> str:
    return (
        f"{r['backbone']:<12} {r['precision']:<15} XLA {r['xla']:<3}  train {r['train img/s (last epoch)']:8.1f} "
        f"img/s (last epoch), {r['train img/s (all epochs)']:8.1f} (all)  predict {r['predict img/s']:8.1f} "
        f"img/s  cell {r['cell s']:6.1f}s  {', '.join(r['device'])}"
    )


if __name__ == "__main__":
    sys.exit(main())
