"""A whole transfer-learning study, plain Keras vs. `tlexp sweep`, on the same images.

Generates the demo dataset (real JPEGs, 2 classes), then runs the same grid of cells
(backbone x freeze share, random weights) twice on the same train/val/test split:
(b) `tlexp sweep` in a subprocess with cold caches (its wall clock counts everything:
interpreter, TensorFlow import, data check, decoding), and (a) the plain recipe of
Keras' tutorials, one cell after another (tf.data from the files with an in-memory
`.cache()`, freeze a prefix, fit the head, a Random Forest on the penultimate layer).
Last it measures each backbone's forward speed in FLOP/s and turns the FLOPs tlexp
cannot avoid into a lower bound in seconds. Prints one table and writes it to
`<out>/results.md` and `<out>/results.json`. Runs offline.

(b) runs twice on TensorFlow, one sweep after the other, each with its own cold caches:
tlexp in float32 (``train.precision=float32``: ``<out>/tlexp``, ``<out>/cache``) and tlexp
with ``train.precision=auto`` (``<out>/tlexp-auto``, ``<out>/cache-auto``), which on a CPU
with AVX512-BF16 or AMX times the frozen prefix's stages both ways, once per backbone, and
runs the prefix in bfloat16 where that pays (the trained part trains in float32): what each
cell chose, the prefix's speed-up and what deciding cost it are in the table.
Both are set against the plain recipe and the float32 FLOP ideal (the FLOPs' ratio, and
the lower bound in seconds at the float32 rates measured here): a run in bfloat16 can
beat that ideal, since its FLOPs are cheaper. The CPU's model and its bfloat16 flags are
printed with the figures. ``--skip-auto`` leaves the auto sweep out.

``--backends tensorflow,jax`` runs (b) once per Keras backend, one after the other, on
the same generated images and the same split (checked: the script stops if the splits
differ), each sweep with its own cold caches (``<out>/cache`` and ``<out>/cache-jax``),
and adds a table of both side by side: seconds per cell and in all, JAX / TensorFlow,
and the head's and the forest's test accuracy on each. The JAX sweep runs with
``KERAS_BACKEND=jax`` under ``--jax-python`` (an environment with JAX and tlexp; JAX
needs no TensorFlow), with this process' environment (``PYTHONPATH`` included). The
plain recipe (a) and the FLOP rates and bounds use tf.data and tf.function: they stay
TensorFlow's, measured in this process, and compared with the TensorFlow sweep.

    python scripts/bench_study.py --per-class 600 --size 64 --backbones vgg16,resnet50,densenet121 \
        --freeze 0.1,0.3,0.5,0.7 --epochs 2 --out results/bench_study
    python scripts/bench_study.py --per-class 200 --size 64 --epochs 2 --skip-plain \
        --backends tensorflow,jax --jax-python ../venv-jax/bin/python   # TensorFlow and JAX side by side

The JAX sweep runs in float32, as the TensorFlow sweep it is compared with.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import yaml

CONSTRUCTORS = {"vgg16": "VGG16", "resnet50": "ResNet50", "densenet121": "DenseNet121"}
SPLITS = ("train", "val", "test")
BACKENDS = ("tensorflow", "jax")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-class", type=int, default=600, help="generated images per class (2 classes)")
    ap.add_argument("--size", type=int, default=64, help="image_size fed to the models")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--backbones", default="vgg16,resnet50,densenet121", help="comma list")
    ap.add_argument("--freeze", default="0.1,0.3,0.5,0.7", help="comma list of frozen parameter shares")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--out", default="results/bench_study", help="work folder; <out>2, <out>3, ... if taken")
    ap.add_argument("--skip-plain", action="store_true", help="run only tlexp and the FLOP bound (quick check)")
    ap.add_argument("--skip-auto", action="store_true", help="leave out the sweep with train.precision=auto")
    ap.add_argument(
        "--backends",
        default="tensorflow",
        help="comma list of Keras backends to run the tlexp sweep on, in this order: tensorflow "
        "(always; the plain recipe and the FLOP bounds are TensorFlow's) and optionally jax",
    )
    ap.add_argument(
        "--jax-python",
        default=sys.executable,
        help="python of an environment with JAX and tlexp, for the JAX sweep (default: this interpreter)",
    )
    ap.add_argument(
        "--from",
        dest="reuse",
        help="work folder of an earlier run: reuse its tlexp sweep (cells, wall time) and measure the rates again",
    )
    args = ap.parse_args()
    args.backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
    args.freeze = [float(f) for f in args.freeze.split(",") if f.strip()]
    unknown = sorted(set(args.backbones) - set(CONSTRUCTORS))
    if unknown:
        ap.error(f"unknown backbone(s) {unknown}; choose from {sorted(CONSTRUCTORS)}")
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if (
        set(args.backends) - set(BACKENDS)
        or "tensorflow" not in args.backends
        or len(set(args.backends)) < len(args.backends)
    ):
        ap.error(
            f"--backends must list tensorflow and optionally jax, each once (e.g. tensorflow,jax). "
            f"Got {','.join(args.backends)!r} instead."
        )
    return args


# --------------------------------------------------------------------------- (b) tlexp


def folder_suffix(backend: str, precision: str = "float32") -> str:
    """``""`` for TensorFlow in float32 (the folders a TensorFlow-only study always had), else
    ``-<backend>`` and ``-auto`` for train.precision=auto."""
    return ("" if backend == "tensorflow" else f"-{backend}") + ("" if precision == "float32" else f"-{precision}")


def check_jax_python(python: str) -> dict:
    """Fail in seconds, before any sweep, if ``python`` cannot run tlexp on JAX; return its versions."""
    code = (
        "import json, tlexp; from tlexp.model._backend import backend_version, import_backend; "
        "name = import_backend(); import keras; "
        "print(json.dumps({'backend': keras.backend.backend(), 'jax': backend_version('jax'), "
        "'jaxlib': backend_version('jaxlib'), 'keras': keras.__version__, 'tlexp': tlexp.__file__}))"
    )
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(
            f"--jax-python {python} cannot run tlexp on JAX (exit code {done.returncode}); give the python of an "
            f"environment with JAX and tlexp (pip install -e '.[jax]'):\n{done.stderr[-2000:]}"
        )
    info = json.loads(done.stdout.strip().splitlines()[-1])
    import tlexp

    info["python"] = python
    if Path(info["tlexp"]).resolve() != Path(tlexp.__file__).resolve():
        print(
            f"warning: the JAX environment imports tlexp from {info['tlexp']}, this one from {tlexp.__file__}; "
            "set PYTHONPATH to compare the same code",
            flush=True,
        )
    return info


def run_tlexp(
    args, out: Path, data: Path, backend: str = "tensorflow", precision: str = "float32"
) -> tuple[float, list[dict]]:
    """Write the study config, run `tlexp sweep` on it with ``KERAS_BACKEND=backend`` and
    ``train.precision=precision``; return (wall seconds, cells in grid order). Its folders:
    ``<out>/tlexp``, ``<out>/cache`` and ``<out>/tlexp.log`` on TensorFlow in float32, with
    ``-jax`` appended on JAX and ``-auto`` for auto."""
    sfx = folder_suffix(backend, precision)
    cfg = {
        "name": "bench", "seed": args.seed,
        "data": {"root": str(data), "image_size": args.size, "val_fraction": 0.15, "test_fraction": 0.15,
                 "synthetic": {"enabled": False}},
        "model": {"weights": "none"},
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.lr,
                  "precision": precision},
        "classifiers": {},  # replaces the default {logreg: ...}: the plain recipe fits only the forest
        "forest": {"n_estimators": 100},
        "output": {"dir": str(out / f"tlexp{sfx}"), "save_model": False},
        "sweep": {"model.backbone": args.backbones, "model.freeze": args.freeze},
    }  # fmt: skip
    cfg_path = out / f"study{sfx}.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    import tlexp

    if backend != "tensorflow":
        cmd = [args.jax_python, "-m", "tlexp", "sweep", str(cfg_path)]
    elif (Path(tlexp.__file__).parent / "__main__.py").is_file():
        cmd = [sys.executable, "-m", "tlexp", "sweep", str(cfg_path)]
    else:
        cmd = [shutil.which("tlexp") or "tlexp", "sweep", str(cfg_path)]
    # Every cache (data check, decoded images, and prefix activations) starts cold in <out>/cache,
    # so building them is counted in tlexp's time, as decoding is in the plain recipe's. Each
    # backend has its own folder: the second sweep must not find the first one's decoded images
    # or check (the activation caches would be keyed apart anyway, by numerics_fingerprint).
    log_path = out / f"tlexp{sfx}.log"
    env = {**os.environ, "TLEXP_CACHE_DIR": str(out / f"cache{sfx}"), "KERAS_BACKEND": backend}
    print(f"(b) tlexp on {backend}, precision {precision}: {' '.join(cmd)}  (log: {log_path})", flush=True)
    with open(log_path, "w") as log:
        t = time.perf_counter()
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
        wall = time.perf_counter() - t
    if rc != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        sys.exit(f"tlexp sweep on {backend} failed with exit code {rc}; end of {log_path}:\n{tail}")

    from tlexp.results import load_record

    order = {(b, f): i for i, (b, f) in enumerate((b, f) for b in args.backbones for f in args.freeze)}
    cells = []
    for metrics_path in sorted((out / f"tlexp{sfx}").rglob("metrics.json")):
        if ".attempts" in metrics_path.parts:
            continue
        record = load_record(metrics_path.parent)
        if record.environment.backend != backend:
            sys.exit(f"{metrics_path} was computed on {record.environment.backend}, not on {backend}")
        backbone, freeze = record.config["model"]["backbone"], float(record.config["model"]["freeze"])
        forest = record.classifiers.get("forest")
        cells.append({
            "cell": metrics_path.parent.name, "backbone": backbone, "freeze": freeze, "dir": str(metrics_path.parent),
            "tlexp_s": record.timings_s["total"], "tlexp_timings_s": record.timings_s,
            "tlexp_layers_frozen": record.freeze.layers_frozen,
            "tlexp_head_acc": record.head.test.accuracy,
            "tlexp_forest_acc": forest.test.accuracy if forest else None,
            "prefix_cache": record.prefix_cache.model_dump(exclude_none=True),
            "precision": record.accelerator.precision,
            "precision_decision": d.model_dump() if (d := record.accelerator.precision_decision) else None,
        })  # fmt: skip
    cells.sort(key=lambda c: order.get((c["backbone"], c["freeze"]), len(order)))
    if len(cells) != len(order):
        sys.exit(f"expected {len(order)} finished cells under {out / f'tlexp{sfx}'}, found {len(cells)}")
    return wall, cells


def add_backend(cells: list[dict], other: list[dict], backend: str) -> None:
    """Put the cells of another sweep (``backend``: ``jax``, or ``auto`` for train.precision=auto)
    beside the TensorFlow float32 ones, as ``<backend>_*`` keys."""
    by_cell = {(o["backbone"], o["freeze"]): o for o in other}
    for c in cells:
        o = by_cell[(c["backbone"], c["freeze"])]
        c.update({
            f"{backend}_dir": o["dir"], f"{backend}_s": o["tlexp_s"], f"{backend}_timings_s": o["tlexp_timings_s"],
            f"{backend}_layers_frozen": o["tlexp_layers_frozen"], f"{backend}_head_acc": o["tlexp_head_acc"],
            f"{backend}_forest_acc": o["tlexp_forest_acc"], f"{backend}_prefix_cache": o["prefix_cache"],
            f"{backend}_precision_decision": o.get("precision_decision"),
        })  # fmt: skip


def read_split(cells: list[dict]) -> list[tuple[str, str, str]]:
    """The (path, label, split) rows all cells used; checks that they are the same file."""
    splits = [(Path(c["dir"]) / "split.csv").read_text() for c in cells]
    if any(s != splits[0] for s in splits):
        sys.exit("the cells of the tlexp sweep used different splits; the comparison needs one split")
    return [(r["path"], r["label"], r["split"]) for r in csv.DictReader(splits[0].splitlines())]


# --------------------------------------------------------------------------- (a) plain Keras


def plain_model(keras, name: str, size: int):
    """Random-init backbone + the study's head, built as Keras' transfer-learning guide does."""
    backbone = getattr(keras.applications, CONSTRUCTORS[name])(
        include_top=False, weights=None, input_shape=(size, size, 3)
    )
    inputs = keras.Input((size, size, 3))
    x = backbone(inputs, training=False)  # BatchNorm stays in inference mode, frozen or not
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(256, activation="relu")(x)
    x = keras.layers.Dense(64, activation="relu", name="penultimate")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    return backbone, keras.Model(inputs, outputs)


def run_plain_cell(tf, keras, args, data: Path, rows, backbone_name: str, freeze: float) -> dict:
    """One cell of the plain recipe, timed from building the pipeline to the scored forest."""
    from sklearn.ensemble import RandomForestClassifier

    from tlexp.model import plan_freeze, preprocess_fn

    t0 = time.perf_counter()
    classes = sorted({label for _, label, _ in rows})
    preprocess, size = preprocess_fn(backbone_name), args.size

    def load(path, label):
        img = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        return tf.image.resize(img, (size, size)), label

    decoded, labels = {}, {}
    for s in SPLITS:
        part = [(str(data / p), classes.index(lab)) for p, lab, sp in rows if sp == s]
        labels[s] = np.array([y for _, y in part], dtype=np.float32)
        paths = tf.constant([p for p, _ in part])
        # .cache() after decode+resize: every image is decoded once per cell (first epoch).
        decoded[s] = (
            tf.data.Dataset.from_tensor_slices((paths, labels[s]))
            .map(load, num_parallel_calls=tf.data.AUTOTUNE)
            .cache()
        )

    # tf.data's autotuner stalls the teardown of every finished iterator for seconds on
    # this kind of machine (see tlexp.pipeline.TFBatches); tlexp turns it off, so the plain recipe
    # gets the same fix: the comparison measures the caching, not a TensorFlow quirk.
    options = tf.data.Options()
    options.autotune.enabled = False

    def finish(ds):
        return (
            ds.map(lambda x, y: (preprocess(x), y), num_parallel_calls=tf.data.AUTOTUNE)
            .batch(args.batch_size)
            .prefetch(tf.data.AUTOTUNE)
            .with_options(options)
        )

    train_fit = finish(decoded["train"].shuffle(len(labels["train"]), seed=args.seed, reshuffle_each_iteration=True))
    ordered = {s: finish(decoded[s]) for s in SPLITS}  # unshuffled, for evaluation and features

    keras.utils.set_random_seed(args.seed)
    backbone, model = plain_model(keras, backbone_name, size)
    k = plan_freeze(backbone, freeze, "inference").layers_frozen
    for layer in backbone.layers[:k]:
        layer.trainable = False
    model.compile(keras.optimizers.Adam(args.lr), "binary_crossentropy", metrics=["accuracy"])
    model.fit(train_fit, validation_data=ordered["val"], epochs=args.epochs, verbose=0)
    head_acc = model.evaluate(ordered["test"], verbose=0, return_dict=True)["accuracy"]
    features = keras.Model(model.inputs, model.get_layer("penultimate").output)
    feats = {s: features.predict(ordered[s], verbose=0) for s in SPLITS}
    forest = RandomForestClassifier(n_estimators=100, n_jobs=-1, random_state=args.seed)
    forest.fit(feats["train"], labels["train"])
    forest_acc = forest.score(feats["test"], labels["test"])
    return {
        "plain_s": time.perf_counter() - t0,
        "plain_layers_frozen": k,
        "plain_head_acc": float(head_acc),
        "plain_forest_acc": float(forest_acc),
    }


# --------------------------------------------------------------------------- FLOPs


def layer_flops(keras, layer) -> float:
    """Forward FLOPs of one layer for one image: 2 x multiply-adds of Conv2D, DepthwiseConv2D
    and Dense; 0 for everything else (the rate is measured with the same rule, so it cancels)."""
    if isinstance(layer, keras.layers.Conv2D):  # channels_last
        _, oh, ow, cout = layer.output.shape
        kh, kw = layer.kernel_size
        return 2.0 * oh * ow * kh * kw * (layer.input.shape[-1] // layer.groups) * cout
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        _, oh, ow, cout = layer.output.shape
        kh, kw = layer.kernel_size
        return 2.0 * oh * ow * kh * kw * cout
    if isinstance(layer, keras.layers.Dense):
        return 2.0 * float(np.prod(layer.input.shape[1:])) * layer.units
    return 0.0


def measure_backbone(tf, keras, args, name: str) -> dict:
    """Per-layer FLOPs of the backbone, FLOPs of the head, k per freeze share, and FLOP/s of
    a plain forward pass of the whole model (batch_size random images, >= 3 s timed)."""
    from tlexp.model import plan_freeze

    keras.backend.clear_session()
    backbone, model = plain_model(keras, name, args.size)
    per_layer = [layer_flops(keras, layer) for layer in backbone.layers]
    head = sum(layer_flops(keras, layer) for layer in model.layers if layer is not backbone)
    total = sum(per_layer) + head
    ks = {f: plan_freeze(backbone, f, "inference").layers_frozen for f in args.freeze}
    fwd = tf.function(lambda x: model(x, training=False))
    x = tf.random.uniform((args.batch_size, args.size, args.size, 3), 0, 255)
    for _ in range(2):  # warm-up: tracing, thread pools
        fwd(x).numpy()
    batches, t = 0, time.perf_counter()
    while time.perf_counter() - t < 3.0:
        fwd(x).numpy()
        batches += 1
    seconds = time.perf_counter() - t
    rate = total * batches * args.batch_size / seconds
    # The same model, every layer trainable, one training step at a time: what backward
    # passes reach on this machine (3x forward FLOPs per image, by the usual count).
    model.compile(keras.optimizers.Adam(args.lr), "binary_crossentropy")
    y = np.zeros((args.batch_size, 1), np.float32)
    for _ in range(2):
        model.train_on_batch(x, y)
    batches, t = 0, time.perf_counter()
    while time.perf_counter() - t < 3.0:
        model.train_on_batch(x, y)
        batches += 1
    train_rate = 3 * total * batches * args.batch_size / (time.perf_counter() - t)
    suffix_rates = {f: suffix_train_rate(tf, keras, args, backbone, model, k, per_layer, head) for f, k in ks.items()}
    return {
        "per_layer": per_layer,
        "total": total,
        "ks": ks,
        "rate": rate,
        "train_rate": train_rate,
        "suffix_rates": suffix_rates,
    }


def suffix_train_rate(tf, keras, args, backbone, model, k: int, per_layer: list[float], head: float) -> float:
    """FLOP/s of training steps on the trainable part alone (the layers after cut ``k`` and
    the head), fed random activations at the cut: what this machine reaches on the layers a
    cell actually trains. Late layers see small feature maps (2x2 at 64 px in ResNet50's and
    DenseNet121's last stage) and many small ops, and run far below the whole model's rate."""
    from tlexp.model import frontier, segment

    inner = segment(backbone, k, len(backbone.layers))
    inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype) for t in frontier(backbone, k)]
    x = inner(inputs[0] if len(inputs) == 1 else inputs)
    for layer in model.layers[2:]:  # the plain head: Flatten, Dense, Dense, Dense
        x = layer(x)
    suffix = keras.Model(inputs, x)
    suffix.compile(keras.optimizers.Adam(args.lr), "binary_crossentropy")
    xs = [tf.random.uniform((args.batch_size, *t.shape[1:])) for t in inputs]
    y = np.zeros((args.batch_size, 1), np.float32)
    for _ in range(2):  # warm-up: tracing
        suffix.train_on_batch(xs, y)
    batches, t = 0, time.perf_counter()
    while time.perf_counter() - t < 2.0:
        suffix.train_on_batch(xs, y)
        batches += 1
    return 3 * (sum(per_layer[k:]) + head) * batches * args.batch_size / (time.perf_counter() - t)


def flop_budget(args, bb: dict, cells: list[dict], n: dict) -> dict[str, float]:
    """FLOPs tlexp cannot avoid (forward-only passes and training steps apart) and FLOPs
    of the plain recipe, for one backbone's cells.

    tlexp: every frozen layer once per image for the whole sweep (the deepest prefix covers
    the others), then per cell the trainable suffix: training (forward + backward = 3x
    forward) and validation each epoch, and one final pass over all images for predictions
    and forest features. Plain: the frozen prefix forward only while training, the whole
    model for validation, the test evaluation and the final feature pass."""
    n_all = n["train"] + n["val"] + n["test"]
    frozen = {c["freeze"]: sum(bb["per_layer"][: bb["ks"][c["freeze"]]]) for c in cells}
    forward = n_all * max(frozen.values(), default=0.0)
    training = plain_flops = 0.0
    shallower = 0.0  # the prefix FLOPs already cached by a cell that freezes less
    for c in sorted(cells, key=lambda c: c["freeze"]):
        f_frozen, f_total = frozen[c["freeze"]], bb["total"]
        f_train = f_total - f_frozen
        c["frozen_flop_share"] = f_frozen / f_total
        # Each phase's own bound, to see where a cell's time goes beyond its FLOPs: the
        # prefix from the shallower entry, training (+ validation) at the training and
        # forward rates, and the prediction pass.
        c["bound_s"] = {
            "prefix": n_all * max(0.0, f_frozen - shallower) / bb["rate"],
            "train": (args.epochs * 3 * n["train"] * f_train) / bb["train_rate"]
            + args.epochs * n["val"] * f_train / bb["rate"],
            "predict": n_all * f_train / bb["rate"],
            # training steps at the rate this machine reaches on the trainable part itself
            "train_suffix": (args.epochs * 3 * n["train"] * f_train) / bb["suffix_rates"][c["freeze"]]
            + args.epochs * n["val"] * f_train / bb["rate"],
        }
        shallower = max(shallower, f_frozen)
        training += args.epochs * 3 * n["train"] * f_train
        forward += args.epochs * n["val"] * f_train + n_all * f_train
        plain_flops += (
            args.epochs * (n["train"] * (f_frozen + 3 * f_train) + n["val"] * f_total)
            + n["test"] * f_total
            + n_all * f_total
        )
    return {"forward": forward, "training": training, "plain": plain_flops}


# --------------------------------------------------------------------------- report


def describe_prefix_cache(info: dict) -> str:
    """A short rendering of a cell's ``prefix_cache`` entry in metrics.json."""
    if not info["used"]:
        return f"not used ({info['reason']})"
    return f"{info['layer']} from {info['source']}, {info['mb']} MB, {info['seconds']} s"


def fmt(v, spec: str, unit: str = "") -> str:
    """``v`` formatted with its unit, or '-' for a value not measured (--skip-plain)."""
    return "-" if v is None else format(v, spec) + unit


def report(args, cells: list[dict], totals: dict, machine: str, command: str) -> str:
    """The Markdown table and totals."""
    lines = [
        f"machine: {machine}",
        f"command: {command}",
        "",
        "| cell | frozen FLOP share | plain s | tlexp s | speed-up | head test acc plain / tlexp "
        "| forest test acc plain / tlexp | cached prefix |",
        "|---|---:|---:|---:|---:|---|---|---|",
    ]
    for c in cells:
        plain = c.get("plain_s")
        speed = plain / c["tlexp_s"] if plain is not None and c["tlexp_s"] else None
        lines.append(
            f"| {c['cell']} | {c['frozen_flop_share']:.1%} | {fmt(plain, '.1f')} | {c['tlexp_s']:.1f} "
            f"| {fmt(speed, '.2f', 'x')} "
            f"| {fmt(c.get('plain_head_acc'), '.3f')} / {c['tlexp_head_acc']:.3f} "
            f"| {fmt(c.get('plain_forest_acc'), '.3f')} / {fmt(c['tlexp_forest_acc'], '.3f')} "
            f"| {describe_prefix_cache(c['prefix_cache'])} |"
        )
    lines += ["", *phase_table(cells)]
    t = totals
    lines += [
        "",
        "rates (forward pass, whole model): " + ", ".join(f"{b} {r / 1e9:.1f} GFLOP/s" for b, r in t["rates"].items()),
        f"plain total (sum of cells, data loading included): {fmt(t['plain_s'], '.1f', ' s')}",
        f"tlexp wall total (subprocess: start-up, data check, decoding, all cells, report): {t['tlexp_wall_s']:.1f} s",
        f"speed-up plain / tlexp: {fmt(t['speedup'], '.2f', 'x')}"
        + (f" ({t['speedup'] / t['ideal_speedup']:.0%} of the FLOP ideal)" if t["speedup"] else ""),
        "rates (training step, whole model, 3x forward FLOPs): "
        + ", ".join(f"{b} {r / 1e9:.1f} GFLOP/s" for b, r in t["train_rates"].items()),
        f"FLOP lower bound for tlexp (every FLOP at the forward rate): {t['bound_s']:.1f} s; "
        f"tlexp / bound = {t['tlexp_over_bound']:.2f}",
        f"same FLOPs, training steps at the training rate: {t['bound_train_s']:.1f} s; "
        f"tlexp / that = {t['tlexp_over_bound_train']:.2f}",
        f"same FLOPs, training steps at the rate of each cell's trained part: {t['bound_suffix_s']:.1f} s; "
        f"tlexp / that = {t['tlexp_over_bound_suffix']:.2f}",
        f"FLOPs: plain {t['plain_flops'] / 1e12:.2f} TFLOP, tlexp at least {t['tlexp_flops'] / 1e12:.2f} TFLOP; "
        f"ideal speed-up from FLOPs alone = {t['ideal_speedup']:.2f}x",
    ]
    if t.get("auto_wall_s") is not None:
        lines += ["", *precision_table(cells, t)]
    if "jax" in args.backends:
        lines += ["", *backend_table(cells, t)]
    return "\n".join(lines) + "\n"


def describe_choice(decision: dict | None) -> str:
    """What ``train.precision: auto`` chose in a cell, short: bf16 / f32 per part, and why not measured."""
    if not decision:
        return "-"
    short = {"mixed_bfloat16": "bf16", "float32": "f32"}
    parts = " / ".join(f"{p} {short.get(c, c)}" for p, c in decision["choice"].items())
    if decision["source"] == "cached":
        return parts + " (prefix cached in it)"
    if decision["source"] != "skipped":
        figures = decision.get("figures", {}).get("prefix", {})
        how = "timed" if decision["source"] == "measured" else "reused"
        nested = {p: figures.get(f"{p}_from_layer", 1) for p in ("float32", "mixed_bfloat16")}
        if any(v > 1 for v in nested.values()):  # a side computes from a cached shallower cut
            how += ", from " + ", ".join(f"{short[p]} cache at {v}" for p, v in nested.items() if v > 1)
        speedup = figures.get("speedup")
        if speedup:
            return parts + f" (prefix {speedup:.2f}x, {how})"
        return f"{parts}, not timed: {decision['reason'].split('; ')[0].split(': ', 1)[1]}"
    # "frozen prefix: too little work to measure: 40 image-passes ...; trained part: ..." -> its first why
    return f"{parts}, not measured: {decision['reason'].split('; ')[0].split(': ')[1]}"


def precision_table(cells: list[dict], totals: dict) -> list[str]:
    """The plain recipe, tlexp in float32 and tlexp with precision auto side by side: per cell
    and in all, each against the float32 FLOP ideal."""
    t = totals
    lines = [
        "the plain recipe, tlexp in float32 and tlexp with train.precision=auto (two sweeps on TensorFlow, "
        "each with cold caches; s = each cell's total from its run record; deciding = what auto's decision "
        "cost the cell (the stages no earlier cell timed, timed both ways on the cell's own backbone, and building "
        "it again where the choice differed from the backbone's last one), "
        "included in its s; choice per part: prefix = the frozen layers, with bfloat16's speed-up on them, "
        "trained = the layers above them and the head):",
        "",
        "| cell | plain s | float32 s | auto s | auto / float32 | auto: choice (deciding s) "
        "| head test acc float32 / auto | forest test acc float32 / auto |",
        "|---|---:|---:|---:|---:|---|---|---|",
    ]
    for c in cells:
        d = c.get("auto_precision_decision")
        measuring = f" ({d['seconds']:.1f} s)" if d and d["source"] != "skipped" else ""
        lines.append(
            f"| {c['cell']} | {fmt(c.get('plain_s'), '.1f')} | {c['tlexp_s']:.1f} | {c['auto_s']:.1f} "
            f"| {c['auto_s'] / c['tlexp_s']:.2f}x | {describe_choice(d)}{measuring} "
            f"| {c['tlexp_head_acc']:.3f} / {c['auto_head_acc']:.3f} "
            f"| {fmt(c['tlexp_forest_acc'], '.3f')} / {fmt(c['auto_forest_acc'], '.3f')} |"
        )
    f32_sum, auto_sum = sum(c["tlexp_s"] for c in cells), sum(c["auto_s"] for c in cells)
    ideal = t["ideal_speedup"]
    lines += [
        f"| **all cells** | {fmt(t['plain_s'], '.1f')} | **{f32_sum:.1f}** | **{auto_sum:.1f}** "
        f"| **{auto_sum / f32_sum:.2f}x** | | | |",
        "",
        f"float32 FLOP ideal speed-up over the plain recipe: {ideal:.2f}x; FLOP lower bound at the float32 "
        f"forward rate: {t['bound_s']:.1f} s",
        "",
        "| sweep wall (subprocess: start-up, data check, decoding, all cells, report) | s | speed-up over plain "
        "| speed-up / float32 FLOP ideal | s / float32 FLOP bound |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, wall, speed in (
        ("plain Keras recipe (sum of cells)", t["plain_s"], 1.0 if t["plain_s"] else None),
        ("tlexp, train.precision=float32", t["tlexp_wall_s"], t["speedup"]),
        ("tlexp, train.precision=auto", t["auto_wall_s"], t["auto_speedup"]),
    ):
        ratio = f"{speed / ideal:.0%}" if speed is not None and name.startswith("tlexp") else "-"
        bound = f"{wall / t['bound_s']:.2f}" if wall is not None and name.startswith("tlexp") else "-"
        lines.append(f"| {name} | {fmt(wall, '.1f')} | {fmt(speed, '.2f', 'x')} | {ratio} | {bound} |")
    return lines


def backend_table(cells: list[dict], totals: dict) -> list[str]:
    """tlexp on TensorFlow and on JAX side by side, per cell and in all, and where JAX's time goes."""
    jax_env = totals["jax_env"]
    lines = [
        f"tlexp on TensorFlow and on JAX (jax {jax_env['jax']}, jaxlib {jax_env['jaxlib']}): the same images and "
        "split, each sweep with cold caches; s = each cell's total from its run record (metrics.json); the plain "
        "recipe, the FLOP rates and the bounds above are TensorFlow's (tf.data, tf.function), not measured on JAX:",
        "",
        "| cell | TF s | JAX s | JAX / TF | head test acc TF / JAX | forest test acc TF / JAX |",
        "|---|---:|---:|---:|---|---|",
    ]
    for c in cells:
        lines.append(
            f"| {c['cell']} | {c['tlexp_s']:.1f} | {c['jax_s']:.1f} | {c['jax_s'] / c['tlexp_s']:.2f}x "
            f"| {c['tlexp_head_acc']:.3f} / {c['jax_head_acc']:.3f} "
            f"| {fmt(c['tlexp_forest_acc'], '.3f')} / {fmt(c['jax_forest_acc'], '.3f')} |"
        )
    tf_sum, jax_sum = sum(c["tlexp_s"] for c in cells), sum(c["jax_s"] for c in cells)
    tf_wall, jax_wall = totals["tlexp_wall_s"], totals["jax_wall_s"]
    lines += [
        f"| **all cells** | **{tf_sum:.1f}** | **{jax_sum:.1f}** | **{jax_sum / tf_sum:.2f}x** | | |",
        f"| **sweep wall** (subprocess: start-up, data check, decoding, all cells, report) | **{tf_wall:.1f}** "
        f"| **{jax_wall:.1f}** | **{jax_wall / tf_wall:.2f}x** | | |",
        "",
    ]
    lines += phase_table(cells, "jax_timings_s", "on JAX")
    return lines


# Phases of a run's record (timings_s) in the order a run makes them; fixed costs per cell
# (build: model and compile; plots; the classical classifiers) beside the FLOP-bound ones
# (prefix: the activation cache; train; predict: the prediction and feature pass).
PHASES = ("weights", "data", "decode", "build", "prefix", "train", "predict", "fit_forest", "fit_logreg", "plots")


def phase_table(cells: list[dict], key: str = "tlexp_timings_s", where: str = "") -> list[str]:
    """Where each tlexp cell's time goes, from its run record, and the sum over cells.

    ``key``: the cells' timings to show (``jax_timings_s`` for the JAX sweep); the table of
    bounds that follows the TensorFlow one is TensorFlow's, so it comes only with that one."""
    present = [p for p in PHASES if any(p in c[key] for c in cells)]
    lines = [
        f"where tlexp's time goes per cell{' ' + where if where else ''} (s, from each run's timings_s; "
        "other = the rest of the cell: run folder, predictions, record):",
        "",
        "| cell | " + " | ".join(present) + " | other | total |",
        "|---|" + "---:|" * (len(present) + 2),
    ]
    sums = dict.fromkeys([*present, "other", "total"], 0.0)
    for c in cells:
        t = c[key]
        row = {p: t.get(p, 0.0) for p in present}
        row["total"] = t["total"]
        row["other"] = t["total"] - sum(row[p] for p in present)
        for k, v in row.items():
            sums[k] += v
        lines.append(f"| {c['cell']} | " + " | ".join(f"{row[k]:.1f}" for k in [*present, "other", "total"]) + " |")
    lines.append("| **all cells** | " + " | ".join(f"**{sums[k]:.1f}**" for k in [*present, "other", "total"]) + " |")
    if key == "tlexp_timings_s" and all("bound_s" in c for c in cells):
        lines += [
            "",
            "each FLOP-bound phase against its own bound (prefix and prediction at the forward rate, "
            "training steps at the training rate; x = measured / bound):",
            "",
            "| cell | prefix s / bound | train s / bound | train s / bound at the trained part's own rate |"
            " predict s / bound |",
            "|---|---:|---:|---:|---:|",
        ]
        for c in cells:
            t, b = c["tlexp_timings_s"], c["bound_s"]
            phases = {"prefix": "prefix", "train": "train", "train_suffix": "train", "predict": "predict"}
            cols = [
                f"{t.get(p, 0.0):.1f} / {b[k]:.1f} = {t.get(p, 0.0) / b[k]:.1f}x" if b[k] > 0 else "-"
                for k, p in phases.items()
            ]
            lines.append(f"| {c['cell']} | " + " | ".join(cols) + " |")
    return lines


def main() -> int:
    args = parse_args()
    command = " ".join([Path(sys.executable).name, *sys.argv])
    warnings.filterwarnings("ignore", category=UserWarning)  # Keras' notes about tf.data input
    from tlexp.data import ensure_demo_dataset
    from tlexp.runfolder import new_run_dir

    jax_wall = jax_env = auto_wall = None
    if "jax" in args.backends and not args.reuse:  # a JAX environment that cannot run fails now, in seconds
        jax_env = check_jax_python(args.jax_python)
    out_arg = Path(args.out).resolve()
    out = new_run_dir(out_arg.parent, out_arg.name)  # never over an earlier benchmark
    print(f"work folder: {out}", flush=True)
    from tlexp.model import cpu_info

    print(f"CPU: {cpu_info().describe()}", flush=True)
    if args.reuse:  # the sweep(s) of an earlier run, its split and data; the rates are measured again
        earlier = json.loads((Path(args.reuse) / "results.json").read_text())
        tlexp_wall, cells = earlier["totals"]["tlexp_wall_s"], earlier["cells"]
        args.backends = earlier["args"].get("backends", ["tensorflow"])  # what that run measured
        jax_wall, jax_env = earlier["totals"].get("jax_wall_s"), earlier["totals"].get("jax_env")
        auto_wall = earlier["totals"].get("auto_wall_s")  # None for a run made before the auto sweep
        data = Path(args.reuse) / "data"
        args.skip_plain = True
    else:
        data = ensure_demo_dataset(out / "data", args.per_class)
        # (b) first, in its own process, so this process' TensorFlow does not compete with it;
        # one backend after the other, never at the same time.
        for backend in args.backends:
            wall, found = run_tlexp(args, out, data, backend)
            print(f"tlexp on {backend}: {wall:.1f} s for {len(found)} cells", flush=True)
            if backend == "tensorflow":
                tlexp_wall, tf_found = wall, found
            else:
                jax_wall, jax_found = wall, found
        cells = tf_found
        if not args.skip_auto:
            auto_wall, auto_found = run_tlexp(args, out, data, "tensorflow", "auto")
            print(f"tlexp with precision auto: {auto_wall:.1f} s for {len(auto_found)} cells", flush=True)
            if read_split(auto_found) != read_split(cells):
                sys.exit(f"the auto sweep ({out / 'tlexp-auto'}) used another split than the float32 one")
            add_backend(cells, auto_found, "auto")
        if jax_wall is not None:
            if read_split(jax_found) != read_split(cells):
                sys.exit(
                    f"the JAX sweep ({out / 'tlexp-jax'}) used another split than the TensorFlow one "
                    f"({out / 'tlexp'}); the side-by-side comparison needs one split"
                )
            add_backend(cells, jax_found, "jax")
    rows = read_split(cells)
    n = {s: sum(1 for *_, sp in rows if sp == s) for s in SPLITS}
    print(f"tlexp: {tlexp_wall:.1f} s for {len(cells)} cells; split {n}", flush=True)
    if jax_wall is not None:
        print(f"tlexp on JAX: {jax_wall:.1f} s for the same cells, on the same split (checked)", flush=True)
    for c in cells:
        print(f"  {c['cell']}: prefix_cache {json.dumps(c['prefix_cache'])}")

    from tlexp.model import import_tensorflow

    tf = import_tensorflow()
    # Each plain cell is a new model, so Keras retraces its train step per cell, as it should;
    # TensorFlow's retracing warnings about that are noise here.
    tf.get_logger().setLevel("ERROR")
    import keras

    if not args.skip_plain:  # (a) the plain recipe, same cells, same order, same split
        for c in cells:
            keras.backend.clear_session()
            c.update(run_plain_cell(tf, keras, args, data, rows, c["backbone"], c["freeze"]))
            print(f"(a) plain {c['cell']}: {c['plain_s']:.1f} s", flush=True)

    # Rates last, so that neither run above is disturbed; one model per backbone.
    tlexp_flops = plain_flops = bound_s = bound_train_s = bound_suffix_s = 0.0
    rates, train_rates = {}, {}
    for name in args.backbones:
        bb = measure_backbone(tf, keras, args, name)
        mine = [c for c in cells if c["backbone"] == name]
        for c in mine:
            if c["tlexp_layers_frozen"] not in (None, bb["ks"][c["freeze"]]):
                print(
                    f"warning: {c['cell']}: tlexp froze {c['tlexp_layers_frozen']} layers, "
                    f"plan_freeze says {bb['ks'][c['freeze']]}"
                )
        budget = flop_budget(args, bb, mine, n)
        rates[name], train_rates[name] = bb["rate"], bb["train_rate"]
        tlexp_flops += budget["forward"] + budget["training"]
        plain_flops += budget["plain"]
        bound_s += (budget["forward"] + budget["training"]) / bb["rate"]  # the issue's bound: all at forward speed
        bound_train_s += budget["forward"] / bb["rate"] + budget["training"] / bb["train_rate"]
        bound_suffix_s += budget["forward"] / bb["rate"] + sum(
            args.epochs
            * 3
            * n["train"]
            * (bb["total"] - sum(bb["per_layer"][: bb["ks"][c["freeze"]]]))
            / bb["suffix_rates"][c["freeze"]]
            for c in mine
        )

    plain_s = None if args.skip_plain else sum(c["plain_s"] for c in cells)
    totals = {"plain_s": plain_s, "tlexp_wall_s": tlexp_wall,
              "speedup": plain_s / tlexp_wall if plain_s else None,
              "bound_s": bound_s, "tlexp_over_bound": tlexp_wall / bound_s,
              "bound_train_s": bound_train_s, "tlexp_over_bound_train": tlexp_wall / bound_train_s,
              "bound_suffix_s": bound_suffix_s, "tlexp_over_bound_suffix": tlexp_wall / bound_suffix_s,
              "train_rates": train_rates,
              "tlexp_flops": tlexp_flops, "plain_flops": plain_flops, "ideal_speedup": plain_flops / tlexp_flops,
              "rates": rates, "split": n}  # fmt: skip
    from tlexp.model import cpu_info

    cpu = cpu_info()
    flags = ", ".join(cpu.flags) if cpu.flags else "none" if cpu.known else "unknown (no /proc/cpuinfo)"
    machine = (
        f"{os.cpu_count()} CPUs, {cpu.model} (bfloat16 flags: {flags}), "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}"
    )
    if auto_wall is not None:
        totals.update({
            "auto_wall_s": auto_wall, "auto_speedup": plain_s / auto_wall if plain_s else None,
            "auto_over_bound": auto_wall / bound_s, "auto_over_tlexp": auto_wall / tlexp_wall,
        })  # fmt: skip
    if jax_wall is not None:
        totals.update({"jax_wall_s": jax_wall, "jax_over_tf": jax_wall / tlexp_wall, "jax_env": jax_env})
        machine += (
            f"; JAX {jax_env['jax']} (jaxlib {jax_env['jaxlib']}, Keras {jax_env['keras']}) in {jax_env['python']}"
        )
    text = report(args, cells, totals, machine, command)
    print("\n" + text)
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(
        json.dumps(
            {"command": command, "machine": machine, "args": vars(args), "cells": cells, "totals": totals}, indent=2
        )
    )
    print(f"written: {out / 'results.md'}, {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
