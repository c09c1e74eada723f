"""One cell of each backbone per precision and XLA setting: training against predict, images per second.

The GPU check of the "Scale out" work: run it on a GPU machine (it runs on a CPU too, for
trying it out with small settings), on either Keras backend (``KERAS_BACKEND=jax`` needs no
TensorFlow). It generates a demo dataset of real JPEGs, then runs one ordinary tlexp cell
per (backbone, precision, XLA) with random weights (speed does not depend on their values;
no download), and prints per cell:

- training images/s: training images over the last epoch's wall time, from the run's own
  record (``history.seconds``; no tracing or XLA compilation in it, but that epoch's
  validation pass is);
- predict images/s: Keras' own ``model.predict`` on the same model with the same batch
  size and XLA setting, fed in-memory random float32 batches of the run's input shape
  (as many images per call as one training epoch has, repeated for at least
  ``--predict-seconds``), timed after a first warm-up call, so compilation is excluded;
- the ratio training / predict, against the target of 0.80, and its FLOP bound (below).

"The same model" is the run's own ``model.keras`` (the cell sets ``output.save_model=true``)
loaded with ``keras.saving.load_model``: the exact network the run trained,
without rebuilding it through tlexp's private functions, and what a user deploys (its
layers keep the run's dtype policy, mixed precision included); it is compiled with the
XLA setting the run resolved.

What the ratio can be at best. A training step costs about 3x a forward pass for the
trained part (forward, then a backward pass of about twice its FLOPs) plus one forward pass
of the frozen part, and the epoch also runs the validation images forward. With F the
whole model's FLOPs per image, Ff of the frozen part and Ft = F - Ff, and v = validation
images per training image (0.21 with tlexp's default split), the epoch costs
Ff + 3 Ft + v F per training image against F for predict: ``bound = F / (Ff + 3 Ft + v F)``,
the ratio when both run at the same FLOP rate. Freeze 0.3 (of the parameters) leaves
about a fifth to a quarter of the FLOPs trainable (VGG16 21 %, ResNet50 27 %, DenseNet121
23 %), so the bound is about 0.6: below the target by compute alone. The "bound" column
is counted from the Conv2D/Dense FLOPs of the loaded model, not measured. A ratio above
it means predict ran below training's FLOP rate (fixed costs per call or per batch, which
dominate when an epoch has only a few batches; a slow kernel path).

The 80 % target is about the input pipeline and the train step keeping the device busy,
and can be met where only the head, or little more, is trained: a high ``--freeze``
share, or ``--prefix-cache``, where the epoch trains on the cached activations at the cut
(bound ``F / (Ft (3 + v))``; the one-time pass that builds the cache is in the run's
``prefix`` time, not in the epoch).

Settings per backend: TensorFlow runs float32 and ``auto`` precision (mixed on GPUs that
support it), each with XLA off and on. JAX always compiles the train step with XLA
(``jit_compile=false`` would run it eagerly, uselessly slowly), so on JAX only XLA on, in
both precisions. On a CPU ``auto`` is float32: those cells repeat the float32 ones.

Training runs the whole model on images (``train.prefix_cache.enabled=false``), so the
figures measure the device on the full network: with the cache, tlexp's default, epochs
would train only the layers above the cut, and the first cell of a backbone would leave
a cache entry that the others reuse. ``--prefix-cache`` measures that default instead.

    python scripts/bench_gpu.py                                  # 224 px, 3 backbones x each setting
    python scripts/bench_gpu.py --freeze 0.9                     # training what you train
    KERAS_BACKEND=jax python scripts/bench_gpu.py                # the same on JAX
    python scripts/bench_gpu.py --size 32 --per-class 32 --backbones vgg16   # a quick CPU try
    python scripts/bench_gpu.py --csv $OUT/bench_gpu.csv         # rows also written as they finish
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

TARGET = 0.80  # training images/s at least this share of predict's


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbones", default="vgg16,resnet50,densenet121")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--per-class", type=int, default=512, help="generated images per class")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2, help="the first epoch includes tracing/XLA compilation")
    ap.add_argument("--freeze", type=float, default=0.3, help="model.freeze: the frozen share of backbone parameters")
    ap.add_argument(
        "--predict-seconds", type=float, default=2.0, help="time model.predict calls for at least this long per cell"
    )
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
    if not 0.0 <= args.freeze < 1.0:
        ap.error(f"The '--freeze' parameter must be a float in the range [0.0, 1.0). Got {args.freeze} instead.")

    import logging

    quiet = logging.StreamHandler()  # the runs' own logs go to their run.log; here only warnings
    quiet.setLevel(logging.WARNING)
    logging.getLogger("tlexp").addHandler(quiet)
    logging.getLogger("tlexp").propagate = False
    # TensorFlow's note that functions of *other* models were traced too ("N out of the
    # last M calls ... triggered tf.function retracing") is expected when cells share a
    # process; each model is traced once. (Only a logger's level: harmless without TensorFlow.)
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


def _settings(backend: str) -> list[tuple[str, bool]]:
    """(precision, XLA) cells: on JAX Keras always jit-compiles; XLA off would be eager mode."""
    if backend == "jax":
        return [("float32", True), ("auto", True)]
    return [("float32", False), ("float32", True), ("auto", False), ("auto", True)]


def _bench(args: argparse.Namespace, out: Path) -> int:
    from tlexp.config import load_config
    from tlexp.experiment import run_experiment
    from tlexp.model import backend_name, backend_version, import_backend
    from tlexp.results import load_record

    backend = import_backend()  # a clear error if it is not installed, before any data work
    rows = []
    for backbone in args.backbones.split(","):
        for precision, jit in _settings(backend):
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
                    f"model.freeze={args.freeze}",
                    "model.head.pooling=avg",
                    f"train.batch_size={args.batch}",
                    f"train.epochs={args.epochs}",
                    f"train.precision={precision}",
                    f"train.jit_compile={str(jit).lower()}",
                    f"train.prefix_cache.enabled={str(args.prefix_cache).lower()}",
                    "forest.n_estimators=10",
                    "classifiers={}",
                    "output.save_model=true",  # model.keras: the model predict is timed on
                    f"output.dir={out / 'runs'}",
                    f"name={backbone}_{precision}_{'xla' if jit else 'noxla'}",
                ],
            )
            t = time.perf_counter()
            run_dir = run_experiment(cfg)
            m = load_record(run_dir)
            n_train, n_all = m.data.used["train"], sum(m.data.used.values())
            last_epoch = m.history.seconds[-1]  # no tracing or compilation in it
            train_rate = n_train / last_epoch
            predict = _predict_rate(run_dir, m, args)
            cached = bool(m.prefix_cache.used)
            rows.append(
                {
                    "backend": backend,
                    "backbone": backbone,
                    "precision": m.accelerator.precision,
                    "xla": "on" if m.accelerator.jit_compile else "off",
                    "freeze": args.freeze,
                    "trained on": "cached prefix" if cached else "images",
                    "train img/s (last epoch)": train_rate,
                    "predict img/s (model.predict)": predict["rate"],
                    "train / predict": train_rate / predict["rate"],
                    f"target >= {TARGET:.2f}": "yes" if train_rate / predict["rate"] >= TARGET else "no",
                    "bound (FLOPs)": _flop_bound(predict["model"], m, cached),
                    "train img/s (all epochs)": n_train * args.epochs / m.timings_s["train"],
                    "tlexp predict pass img/s": n_all / m.timings_s["predict"],
                    "prefix s": m.timings_s.get("prefix", 0.0),
                    "cell s": time.perf_counter() - t,
                    "device": m.accelerator.gpus or ["CPU"],
                }
            )
            del predict
            _release()
            print(_row(rows[-1]), flush=True)
            if args.csv:
                _write_csv(Path(args.csv), rows)
    import keras

    trained = "cached frozen-prefix activations" if args.prefix_cache else "the whole model on images"
    where = f"runs in {out / 'runs'}" if args.out else "runs not kept (--out keeps them)"
    lib = f"{backend} {backend_version(backend)}"
    if backend_name() == "jax":
        lib += f" (jaxlib {backend_version('jaxlib')})"
    print(
        f"\n{lib}, Keras {keras.__version__}; {args.size}px, batch {args.batch}, "
        f"{args.per_class * 2} generated images, freeze {args.freeze}, trained {trained};\n"
        f"ratio = training img/s (last epoch) / model.predict img/s, target >= {TARGET:.2f}; "
        f"bound = the ratio at equal FLOP rates; {where}"
    )
    return 0


def _predict_rate(run_dir: Path, m, args: argparse.Namespace) -> dict:
    """Images/s of ``model.predict`` on the run's saved model, at the run's batch size and XLA setting.

    Fed by a ``keras.utils.PyDataset`` of in-memory random float32 batches, shape
    (batch, size, size, 3): each batch goes from host memory to the device, as in training,
    and no call copies a whole array first. Each call predicts as many images as one
    training epoch has; the first call (tracing, compilation) is not timed.
    """
    import keras
    import numpy as np

    from tlexp import runfolder

    model = keras.saving.load_model(run_dir / runfolder.MODEL_FILE)
    model.compile(jit_compile=bool(m.accelerator.jit_compile))  # what the run's train step used
    rng = np.random.default_rng(0)
    batches = [rng.uniform(-1.0, 1.0, (args.batch, args.size, args.size, 3)).astype("float32") for _ in range(4)]

    class Batches(keras.utils.PyDataset):
        def __init__(self, steps: int):
            super().__init__()
            self.steps = steps

        def __len__(self) -> int:
            return self.steps

        def __getitem__(self, i: int):
            return batches[i % len(batches)]

    steps = max(2, math.ceil(m.data.used["train"] / args.batch))
    model.predict(Batches(2), verbose=0)  # warm-up: tracing and compilation
    images, t = 0, time.perf_counter()
    while True:
        model.predict(Batches(steps), verbose=0)
        images += steps * args.batch
        if time.perf_counter() - t >= args.predict_seconds:
            break
    return {"rate": images / (time.perf_counter() - t), "model": model}


def _flop_bound(model, m, cached: bool) -> float:
    """The best training / predict ratio FLOPs allow (see the module docstring).

    ``Ff`` sums the FLOPs of the backbone's first ``layers_frozen`` layers (the run's
    freeze plan); the cached path trains the layers after that same cut.
    """
    import keras

    from bench_study import layer_flops  # Conv2D, DepthwiseConv2D and Dense: 2 x multiply-adds

    backbone = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    per_layer = [layer_flops(keras, layer) for layer in backbone.layers]
    head = sum(layer_flops(keras, layer) for layer in model.layers if layer is not backbone)
    total = sum(per_layer) + head
    frozen = sum(per_layer[: m.freeze.layers_frozen])
    trained = total - frozen
    v = m.data.used["val"] / m.data.used["train"]
    epoch = trained * (3 + v) if cached else frozen + 3 * trained + v * total
    return total / epoch


def _release() -> None:
    """Free the cell's models (device memory) before the next cell."""
    import gc

    import keras

    keras.backend.clear_session()
    gc.collect()


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
    ratio = r["train / predict"]
    mark = "\u2713" if ratio >= TARGET else "\u2717"
    return (
        f"{r['backbone']:<12} {r['precision']:<15} XLA {r['xla']:<3}  train {r['train img/s (last epoch)']:8.1f} "
        f"img/s (last epoch)  predict {r['predict img/s (model.predict)']:8.1f} img/s  "
        f"ratio {ratio:5.2f} {mark} (target >= {TARGET:.2f}, bound {r['bound (FLOPs)']:.2f})  "
        f"[all epochs {r['train img/s (all epochs)']:.1f}, tlexp pass {r['tlexp predict pass img/s']:.1f} img/s, "
        f"cell {r['cell s']:.1f}s, {', '.join(r['device'])}]"
    )


if __name__ == "__main__":
    sys.exit(main())
