"""Input pipeline vs. model: images per second on this machine.

Writes Kaggle-sized JPEGs (500x375, like dogs-vs-cats) to a temp folder, then measures
(a) how fast tlexp's tf.data pipeline feeds them, decoding on the fly and from a warm
decoded-image cache (and how fast the cache is built), and
(b) how fast the backbone consumes them (forward pass of a training-sized batch, and a
training step with the given freeze share), and prints both. Weights are random (the
speed does not depend on their values), so it runs offline.

    python scripts/bench_pipeline.py --backbone vgg16 --size 224 --images 512
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
    from tlexp.model.backbones import REGISTRY  # no TensorFlow: the generated catalog

    ap.add_argument("--backbone", default="vgg16", choices=list(REGISTRY))
    ap.add_argument("--size", type=int, default=224, help="image_size fed to the model")
    ap.add_argument("--images", type=int, default=512, help="JPEGs to generate and stream")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--freeze", type=float, default=0.3)
    ap.add_argument("--steps", type=int, default=3, help="timed training steps")
    args = ap.parse_args()
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)  # Keras' notes about tf.data input

    from PIL import Image

    from tlexp.model.backend import import_tensorflow

    tf = import_tensorflow()
    from tlexp.config import load_config
    from tlexp.data.dataset import discover
    from tlexp.data.decode import Decoder
    from tlexp.data.imagecache import CachedDecoder, ensure_image_cache
    from tlexp.feeds import make_dataset
    from tlexp.model.backbones import build_backbone, preprocess_fn
    from tlexp.model.backend import describe_environment
    from tlexp.model.freeze import apply_freeze, plan_freeze
    from tlexp.model.head import build_model
    from tlexp.model.training import compile_model

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rng = np.random.default_rng(0)
        for i in range(args.images):
            cls = ("cat", "dog")[i % 2]
            arr = rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / f"{cls}.{i}.jpg", quality=90)
        ds = discover(root)

        def rate(decoder) -> float:
            stream = make_dataset(
                decoder,
                np.arange(len(ds.paths)),
                ds.labels,
                batch_size=args.batch,
                preprocess=preprocess_fn(args.backbone),
                shuffle=True,
                seed=0,
                label_dtype="float32",
            )
            for _ in stream.take(1):  # warm-up: thread pools, tracing
                pass
            t = time.perf_counter()
            n = sum(int(x.shape[0]) for x, _, _ in stream)
            return n / (time.perf_counter() - t)

        pipe_rate = rate(Decoder(ds.root, ds.paths, args.size))
        files = [(p, hashlib.sha256((root / p).read_bytes()).hexdigest()) for p in ds.paths]
        t = time.perf_counter()
        cache = ensure_image_cache(ds.root, files, args.size, root / ".cache")
        build_rate = len(files) / (time.perf_counter() - t)
        cached_rate = rate(CachedDecoder(cache, ds.paths))

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
        model = build_model(backbone, cfg, 2).model
        compile_model(model, cfg, 2)
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

    env = describe_environment()
    print(f"device: {env['device']}; TensorFlow {env['tensorflow']}")
    print(f"{args.backbone} @ {args.size}px, batch {args.batch}, freeze {args.freeze}")
    print(f"{'stage':<40} {'images/s':>10}")
    print(f"{'pipeline: decode + resize + preprocess':<40} {pipe_rate:>10.1f}")
    print(f"{'cache build: decode + resize, once':<40} {build_rate:>10.1f}")
    print(f"{'pipeline: warm decoded-image cache':<40} {cached_rate:>10.1f}")
    print(f"{'model: forward pass (inference)':<40} {fwd_rate:>10.1f}")
    print(f"{'model: training step':<40} {train_rate:>10.1f}")
    for name, r in (("on-the-fly decoding", pipe_rate), ("the warm cache", cached_rate)):
        limit = "the pipeline" if r < train_rate else "the model"
        print(f"with {name}, training is limited by {limit} (pipeline/training = {r / train_rate:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
