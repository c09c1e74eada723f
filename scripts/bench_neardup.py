"""Calibrate near-duplicate grouping on real images: recall of planted copies, and false groups.

usage: python scripts/bench_neardup.py --real DIR [DIR ...] [--limit N] [--copies K]
           [--thresholds 0.06,0.08,0.1,0.12,0.15]

Each DIR is a folder of real images (searched recursively), e.g. the Fashion-MNIST pair of
``../shared/data/make_fmnist_pair.py`` or a folder of photos. Up to ``--limit`` of them are
the originals. For each kind of copy the issue names, ``--copies`` originals chosen at
random get one planted copy (drawn with replacement where there are fewer originals):

- ``resize``: scaled by a factor drawn from [0.5, 0.8] or [1.25, 2] (PNG);
- ``jpeg``: the same size re-encoded as JPEG, quality drawn from 40 to 95;
- ``crop``: 95 % of the width and of the height kept, at a random offset (PNG);
- ``brightness``: every pixel times 0.85 or 1.15 (Pillow's ``ImageEnhance.Brightness``, PNG);
- ``all``: all four in a row (crop, resize, brightness, JPEG).

Then tlexp's own data check runs once over originals and copies together (so the
figures are those of ``tlexp run``), and for each threshold the script prints:

- recall per kind of copy: the share of copies in the same group as their original;
- false groups: groups holding two or more different originals, and the share of
  originals in one (an upper bound: a dataset may hold real copies of its own);
- the largest group, and the wall time of grouping.

docs/guide/data.md quotes the figures of the commands it lists.
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

KINDS = ("resize", "jpeg", "crop", "brightness", "all")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--real", nargs="+", required=True, metavar="DIR", help="folders of real images")
    ap.add_argument("--limit", type=int, default=2000, help="originals per folder (default 2000)")
    ap.add_argument("--copies", type=int, default=200, help="planted copies per kind and folder (default 200)")
    ap.add_argument("--thresholds", default="0.06,0.08,0.1,0.12,0.15", help="comma-separated thresholds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tmp", default="/tmp", help="parent of the temporary dataset folder")
    args = ap.parse_args()

    from tlexp.data import NEAR_DUPLICATE_THRESHOLD, check_dataset, is_image_name

    thresholds = sorted({float(t) for t in args.thresholds.split(",")} | {NEAR_DUPLICATE_THRESHOLD})
    rng = np.random.default_rng(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="tlexp-bench-neardup-", dir=args.tmp))
    try:
        root = tmp / "data"
        truth: dict[str, tuple[str, str]] = {}  # copy path -> (original path, kind)
        originals: list[str] = []
        for d in args.real:
            name = Path(d).resolve().name
            found = sorted(p for p in Path(d).rglob("*") if p.is_file() and is_image_name(p.name))
            if not found:
                sys.exit(f"no image files under {d}")
            picked = [found[i] for i in sorted(rng.choice(len(found), min(args.limit, len(found)), replace=False))]
            (root / name).mkdir(parents=True)
            rels = []
            for k, src in enumerate(picked):
                rel = f"{name}/{k:05d}{src.suffix.lower()}"
                shutil.copyfile(src, root / rel)
                rels.append(rel)
            originals += rels
            for kind in KINDS:
                # More copies than originals: several copies of some (each its own random copy).
                for k in rng.choice(len(rels), args.copies, replace=args.copies > len(rels)).tolist():
                    data, ext = plant(root / rels[k], kind, rng)
                    rel = f"{name}/{k:05d}__{kind}_{len(truth)}{ext}"
                    (root / rel).write_bytes(data)
                    truth[rel] = (rels[k], kind)
            print(f"{name}: {len(rels):,} originals from {d}, {len(KINDS) * args.copies:,} copies")
        t0 = time.perf_counter()
        check = check_dataset(root, cache_dir=tmp / "cache")
        rejected = Counter(truth[f.path][1] for f in check.rejected() if f.path in truth)
        print(
            f"data check: {len(check.files):,} files in {time.perf_counter() - t0:.1f}s; copies rejected "
            f"(not counted): {dict(rejected) or 'none'}"
        )
        kinds = "".join(f"{k:>11}" for k in KINDS)
        print(f"{'threshold':>9}  {'set':<14}{kinds}  false groups  largest  group s")
        for t in thresholds:
            t0 = time.perf_counter()
            component = check.near_components(t)
            seconds = time.perf_counter() - t0
            report(t, component, truth, originals, seconds, t == NEAR_DUPLICATE_THRESHOLD)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def plant(path: Path, kind: str, rng: np.random.Generator) -> tuple[bytes, str]:
    """One copy of the image at ``path``: its bytes and file extension."""
    from PIL import Image, ImageEnhance

    with Image.open(path) as src:
        img = src.convert("RGB")
    steps = ("crop", "resize", "brightness", "jpeg") if kind == "all" else (kind,)
    for step in steps:
        w, h = img.size
        if step == "resize":
            s = rng.uniform(0.5, 0.8) if rng.random() < 0.5 else rng.uniform(1.25, 2.0)
            img = img.resize((max(8, round(w * s)), max(8, round(h * s))), Image.Resampling.BICUBIC)
        elif step == "crop":
            cw, ch = round(w * 0.95), round(h * 0.95)
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            img = img.crop((x, y, x + cw, y + ch))
        elif step == "brightness":
            img = ImageEnhance.Brightness(img).enhance(float(rng.choice([0.85, 1.15])))
    buf = io.BytesIO()
    if "jpeg" in steps:
        img.save(buf, "JPEG", quality=int(rng.integers(40, 96)))
        return buf.getvalue(), ".jpg"
    img.save(buf, "PNG")
    return buf.getvalue(), ".png"


def report(t: float, component, truth, originals, seconds: float, default: bool) -> None:
    """One line per image set: recall per kind, false groups, largest group."""
    sets = sorted({p.split("/")[0] for p in originals})
    members = defaultdict(list)
    for path, match in component.items():
        members[match.representative].append(path)
    for s in sets:
        recall = []
        for kind in KINDS:
            # A copy the check rejects (e.g. smaller than its min_side) is in no run at all: not counted.
            pairs = [(c, o) for c, (o, k) in truth.items() if k == kind and c.startswith(f"{s}/") and c in component]
            hit = sum(component[c].representative == component[o].representative for c, o in pairs)
            recall.append(f"{hit / len(pairs):>11.3f}" if pairs else f"{'-':>11}")
        orig = {p for p in originals if p.startswith(f"{s}/")}
        per_group = Counter(component[p].representative for p in orig)
        false = [g for g, k in per_group.items() if k > 1]
        in_false = sum(per_group[g] for g in false)
        largest = max((len(v) for g, v in members.items() if g.startswith(f"{s}/")), default=1)
        mark = " (default)" if default else ""
        print(
            f"{t:>9.3f}  {s:<14}"
            + "".join(recall)
            + f"  {len(false):>4} ({in_false / len(orig):6.2%})  {largest:>7}  {seconds:6.2f}{mark}"
        )


if __name__ == "__main__":
    sys.exit(main())
