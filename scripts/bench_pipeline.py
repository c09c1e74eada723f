"""Input pipeline vs. model: images per second on this machine.

Writes Kaggle-sized JPEGs (500x375, like dogs-vs-cats) to a temp folder, then measures
(a) how fast tlexp's input pipeline feeds them, decoding on the fly and from a warm
decoded-image cache (and how fast the cache is built): ``--loader tf.data`` (the
TensorFlow backend's), ``keras`` (the other backends': keras.utils.PyDataset with
thread workers, read as ``fit`` reads it), or ``both`` on the same images, and
(b) how fast the backbone consumes them (forward pass of a training-sized batch, and a
training step with the given freeze share), and prints both. Weights are random (the
speed does not depend on their values), so it runs offline.

    python scripts/bench_pipeline.py --backbone vgg16 --size 224 --images 512
    python scripts/bench_pipeline.py --loader both --images 256 --no-model
    KERAS_BACKEND=jax python scripts/bench_pipeline.py --loader keras
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    from tlexp.model import REGISTRY

    ap.add_argument("--backbone", default="vgg16", choices=list(REGISTRY))
    ap.add_argument("--size", type=int, default=224, help="image_size fed to the model")
    ap.add_argument("--images", type=int, default=512, help="JPEGs to generate and stream")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--freeze", type=float, default=0.3)
    ap.add_argument("--steps", type=int, default=3, help="timed training steps")
    ap.add_argument(
        "--loader",
        choices=["default", "tf.data", "keras", "both"],
        default="default",
        help="input pipeline to time (default: the backend's own: tf.data on TensorFlow, keras elsewhere)",
    )
    ap.add_argument("--no-model", action="store_true", help="time the input pipeline only")
    args = ap.parse_args()
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)  # Keras' notes about tf.data input

    from PIL import Image

    from tlexp.model import import_backend

    backend = import_backend()
    loaders = {
        "default": ["tf.data" if backend == "tensorflow" else "keras"],
        "both": ["tf.data", "keras"],
    }.get(args.loader, [args.loader])
    if "tf.data" in loaders and backend != "tensorflow":
        sys.exit("--loader tf.data needs the TensorFlow backend (KERAS_BACKEND unset)")
    from tlexp.config import load_config
    from tlexp.data import CachedDecoder, Decoder, discover, ensure_image_cache
    from tlexp.experiment._build import build_whole
    from tlexp.model import (
        apply_freeze,
        build_backbone,
        compile_model,
        describe_environment,
        plan_freeze,
        preprocess_fn,
    )
    from tlexp.pipeline import Batches, BatchPlan, ImageSource, TFBatches

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rng = np.random.default_rng(0)
        for i in range(args.images):
            cls = ("cat", "dog")[i % 2]
            arr = rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / f"{cls}.{i}.jpg", quality=90)
        ds = discover(root)

        def rate(decoder, loader: str) -> float:
            loader_class = TFBatches if loader == "tf.data" else Batches
            source = ImageSource(decoder, preprocess_fn(args.backbone), ds.labels)
            stream = loader_class(source, np.arange(len(ds.paths)), BatchPlan(args.batch, 0, True, "float32"))
            if loader == "tf.data":
                stream = stream.dataset
                for _ in stream.take(1):  # warm-up: thread pools, tracing
                    pass
                batches = stream
            else:  # as fit() reads it: Keras' PyDataset adapter and its worker threads
                from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

                adapter = PyDatasetAdapter(stream.for_fit().data, shuffle=False)
                adapter.on_epoch_begin()
                batches = ((x, y, None) for x, y in adapter.get_numpy_iterator())
            t = time.perf_counter()
            n = sum(int(x.shape[0]) for x, _, _ in batches)
            took = time.perf_counter() - t
            if loader != "tf.data":
                adapter.on_epoch_end()
            return n / took

        pipe_rate = {loader: rate(Decoder(ds.root, ds.paths, args.size), loader) for loader in loaders}
        files = [(p, hashlib.sha256((root / p).read_bytes()).hexdigest()) for p in ds.paths]
        t = time.perf_counter()
        cache = ensure_image_cache(ds.root, files, args.size, root / ".cache")
        build_rate = len(files) / (time.perf_counter() - t)
        cached_rate = {loader: rate(CachedDecoder(cache, ds.paths), loader) for loader in loaders}
        env = describe_environment()
        print(f"device: {env['device']}; Keras backend {env['backend']} {env['backend_version']}")
        print(f"{len(ds.paths)} JPEGs of 500x375 -> {args.size}px, batch {args.batch}")
        print(f"{'stage':<40} {'images/s':>10}")
        for loader in loaders:
            print(f"{f'pipeline ({loader}): decode + preprocess':<40} {pipe_rate[loader]:>10.1f}")
        print(f"{'cache build: decode + resize, once':<40} {build_rate:>10.1f}")
        for loader in loaders:
            print(f"{f'pipeline ({loader}): warm image cache':<40} {cached_rate[loader]:>10.1f}")
        if args.no_model or backend != "tensorflow":  # the model figures below use TensorFlow
            return 0

        cfg = load_config(
            None,
            [
                f"data.root={root}",
                f"data.image_size={args.size}",
                f"model.backbone={args.backbone}",
                f"model.freeze={args.freeze}",
            ],
        )
        backbone = build_backbone(args.backbone, args.size)
        apply_freeze(backbone, plan_freeze(backbone, args.freeze, "inference"))
        model = build_whole(cfg, backbone, 2).trainer  # what fit trains: up to the logits
        import tensorflow as tf

        compile_model(model, 2, learning_rate=cfg.train.learning_rate)
        x = tf.random.uniform((args.batch, args.size, args.size, 3), 0, 255)
        y = tf.cast(tf.random.uniform((args.batch,), 0, 2, dtype=tf.int32), tf.float32)
        fwd = tf.function(lambda v: model(v, training=False))
        fwd(x)
        t = time.perf_counter()
        for _ in range(args.steps):
            fwd(x).numpy()
        fwd_rate = args.steps * args.batch / (time.perf_counter() - t)
        train_ds = tf.data.Dataset.from_tensors((x, y)).repeat(args.steps + 1)
        model.fit(train_ds.take(1), verbose=0)  # compile the train step
        t = time.perf_counter()
        model.fit(train_ds.take(args.steps), verbose=0)
        train_rate = args.steps * args.batch / (time.perf_counter() - t)

    print(f"{args.backbone} @ {args.size}px, freeze {args.freeze}")
    print(f"{'model: forward pass (inference)':<40} {fwd_rate:>10.1f}")
    print(f"{'model: training step':<40} {train_rate:>10.1f}")
    for name, r in (("on-the-fly decoding", pipe_rate[loaders[0]]), ("the warm cache", cached_rate[loaders[0]])):
        limit = "the pipeline" if r < train_rate else "the model"
        print(f"with {name}, training is limited by {limit} (pipeline/training = {r / train_rate:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
