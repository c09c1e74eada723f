"""Does a bfloat16 frozen prefix move test accuracy more than the seed does?

One cell (a backbone, a freeze share) run per seed twice on the same images: everything in
float32, and with the frozen prefix in ``mixed_bfloat16`` and the trained part in float32
(what ``train.precision: auto`` picks where bfloat16 wins). Printed per seed: the head's and
the forest's test accuracy both ways, the discordant test images (float32 right and bfloat16
wrong / the reverse) and McNemar's exact test on them; then the discordant pairs pooled
over the seeds. Each seed is its own split and initialisation, so the seeds show how far
float32 runs alone spread.

The bfloat16 side is forced through the precision probe (as if timing had chosen bfloat16),
so the result does not depend on this CPU's timing.

    python scripts/precision_seeds.py DATA_ROOT --backbone vgg16 --freeze 0.5 --seeds 5
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path

SIDES = ("float32", "bfloat16 prefix")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", help="an image folder (e.g. the one scripts/bench_study.py generated)")
    ap.add_argument("--backbone", default="vgg16")
    ap.add_argument("--freeze", type=float, default=0.5)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--out", default=None, help="results folder (a temporary one by default)")
    args = ap.parse_args()
    from scipy.stats import binomtest

    out = Path(args.out or tempfile.mkdtemp(prefix="precision_seeds_"))
    pooled = {"head": [0, 0], "forest": [0, 0]}
    print(f"{args.backbone}, {args.freeze:.0%} frozen, {args.size} px, {args.epochs} epochs; results in {out}")
    for seed in range(args.seeds):
        right = {side: _run(args, seed, side, out) for side in SIDES}
        parts = [f"seed {seed}"]
        for i, name in enumerate(pooled):
            a = [right[SIDES[0]][p][i] for p in sorted(right[SIDES[0]])]
            b = [right[SIDES[1]][p][i] for p in sorted(right[SIDES[0]])]
            pairs = list(zip(a, b, strict=True))
            lost, won = sum(x and not y for x, y in pairs), sum(y and not x for x, y in pairs)
            pooled[name][0] += lost
            pooled[name][1] += won
            p = binomtest(lost, lost + won).pvalue if lost + won else 1.0
            parts.append(
                f"{name} {sum(a) / len(a):.3f} -> {sum(b) / len(b):.3f} (discordant {lost}/{won}, McNemar p={p:.3f})"
            )
        print("; ".join(parts), flush=True)
    for name, (lost, won) in pooled.items():
        p = binomtest(lost, lost + won).pvalue if lost + won else 1.0
        print(f"pooled {name}: discordant {lost}/{won}, exact binomial p={p:.3f}")
    return 0


def _run(args, seed: int, side: str, out: Path) -> dict[str, tuple[bool, bool]]:
    """One run; test image -> (head right, forest right)."""
    from tlexp.api import run
    from tlexp.config import load_config
    from tlexp.model import _precisionprobe as probe
    from tlexp.model._precision import BF16, F32, PrecisionDecision

    def bfloat16_prefix(self, backbone, cut, images, batch_size, cached):
        return PrecisionDecision(
            {"prefix": BF16, "trained": F32}, {"prefix": "forced", "trained": "float32"}, "cached", "forced"
        )

    decide = probe.PrecisionProbe._decide
    if side != SIDES[0]:
        probe.PrecisionProbe._decide = bfloat16_prefix
    try:
        overrides = [
            f"data.root={args.root}",
            f"data.image_size={args.size}",
            "data.val_fraction=0.15",  # scripts/bench_study.py's split, batch size and forest
            "data.test_fraction=0.15",
            "train.batch_size=32",
            "forest.n_estimators=100",
            f"seed={seed}",
            f"model.backbone={args.backbone}",
            f"model.freeze={args.freeze}",
            "model.weights=none",
            f"train.epochs={args.epochs}",
            f"train.learning_rate={args.lr}",
            f"train.precision={'float32' if side == SIDES[0] else 'auto'}",
            "classifiers={}",
            "output.save_model=false",
            f"output.dir={out / side.replace(' ', '_')}",
            f"name={args.backbone}_f{args.freeze:g}_s{seed}",
        ]
        run_dir = run(load_config(None, overrides))
    finally:
        probe.PrecisionProbe._decide = decide
    with open(Path(run_dir, "predictions.csv"), newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test"]
    return {r["path"]: (r["head"] == r["label"], r["forest"] == r["label"]) for r in rows}


if __name__ == "__main__":
    sys.exit(main())
