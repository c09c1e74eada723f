"""The data check's cost, perceptual hash included, on a Kaggle-like dataset.

Writes Kaggle-like JPEGs to a temporary folder under /tmp (flat layout, ``cat.N.jpg`` and
``dog.N.jpg``, about 500x375 with varied aspect ratios, smooth photo-like content), plants
near-duplicates (resized to 40-90 % and recompressed at JPEG quality 40-85, a tenth of
them under the other label) and byte-identical copies, then times

* a cold check (empty cache: every file read, hashed, decoded, perceptually hashed),
* a warm check (the cache: every file only stat'ed),
* the near-duplicate grouping (band index over the perceptual hashes) and the
  group-aware split,

printing wall time and memory for each: the peak of ``RssAnon`` (anonymous memory,
sampled from ``/proc/self/status`` every 10 ms during the phase) and ``ru_maxrss`` of
``resource.getrusage`` (the process's peak resident set so far; the images are
generated in worker processes, so it is the check's). It also prints how many
near-duplicate groups the check found against how many were planted. The folder is
removed at the end (also on an error or Ctrl-C).

    python scripts/bench_check.py --files 2500
    python scripts/bench_check.py --files 25000      # generating takes a few minutes on 2 cores
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=2500, help="JPEG files in all, copies included (default 2500)")
    ap.add_argument("--near", type=float, default=0.02, help="share of files that are near-duplicate copies")
    ap.add_argument("--exact", type=float, default=0.005, help="share of files that are byte-identical copies")
    ap.add_argument("--workers", type=int, default=None, help="check threads (default: all cores)")
    ap.add_argument("--tmp", default="/tmp", help="parent of the temporary dataset folder")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from tlexp.data import NEAR_DUPLICATE_THRESHOLD, check_dataset, split_groups, usable_dataset

    tmp = Path(tempfile.mkdtemp(prefix="tlexp-bench-check-", dir=args.tmp))
    try:
        root, cache = tmp / "train", tmp / "cache"
        t0 = time.perf_counter()
        planted = generate(root, args.files, args.near, args.exact, args.seed)
        gen_s = time.perf_counter() - t0
        size_mb = sum(p.stat().st_size for p in root.iterdir()) / 1e6
        print(
            f"dataset: {args.files:,} JPEGs ({size_mb:,.0f} MB) in {root}, generated in {gen_s:.0f}s; planted "
            f"{len(planted['near']):,} near-duplicate pairs ({planted['cross']:,} under the other label) and "
            f"{planted['exact']:,} byte-identical copies"
        )
        print(f"{'phase':<22}{'wall s':>9}{'ms/file':>9}{'peak RssAnon MB':>17}{'ru_maxrss MB':>14}")

        with measure("check (cold)", args.files):
            cold = check_dataset(root, cache_dir=cache, workers=args.workers)
        with measure("check (warm)", args.files):
            warm = check_dataset(root, cache_dir=cache, workers=args.workers)
        assert warm.reused == len(warm.files) == args.files, "the warm check re-read files"
        with measure("near-duplicate groups", args.files):
            near = warm.near_duplicates()
        with measure("group-aware split", args.files):
            from tlexp.data import assign_splits

            ds = usable_dataset(warm)
            ds = assign_splits(ds, 0.1, 0.1, 0, None, split_groups(warm, ds.paths, NEAR_DUPLICATE_THRESHOLD))

        found = {frozenset(f.path for f in g) for g in near}
        wanted = {frozenset(pair) for pair in planted["near"]}
        hit = sum(any(w <= g for g in found) for w in wanted)
        extra = sum(not any(w <= g for w in wanted) for g in found)
        print(
            f"near-duplicates (pixel difference at most {NEAR_DUPLICATE_THRESHOLD}): found {len(found):,} "
            f"group(s) ({sum(map(len, found)):,} files); planted {len(wanted):,} pairs, {hit:,} found in a group "
            f"({hit / max(1, len(wanted)):.1%}), {len(wanted) - hit:,} missed, {extra:,} group(s) holding no "
            f"planted pair"
        )
        print(f"perceptual hash alone: {hash_cost_us():.0f} us per file (of the 32 px image the check decodes anyway)")
        print(
            f"identical files: {len(cold.duplicates()):,} group(s) found, {planted['exact']:,} planted; "
            f"{len(cold.usable()):,} usable of {len(cold.files):,}; split {ds.counts()}"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


# --- measuring ---------------------------------------------------------------------------


def _rss_anon_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


@contextmanager
def measure(phase: str, n_files: int):
    """Print the wall time, the peak RssAnon during the phase and ru_maxrss after it."""
    peak = [_rss_anon_kb()]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            peak[0] = max(peak[0], _rss_anon_kb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    try:
        yield
    finally:
        wall = time.perf_counter() - t0
        done.set()
        sampler.join()
        peak[0] = max(peak[0], _rss_anon_kb())
        maxrss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        print(f"{phase:<22}{wall:>9.2f}{1000 * wall / n_files:>9.2f}{peak[0] / 1024:>17.0f}{maxrss_mb:>14.0f}")


def hash_cost_us(n: int = 2000) -> float:
    """Microseconds per :func:`tlexp.data._inspect.perceptual_hash` of a 32 x 32 RGB image."""
    from tlexp.data import perceptual_hash

    images = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    t0 = time.perf_counter()
    for img in images:
        perceptual_hash(img)
    return 1e6 * (time.perf_counter() - t0) / n


# --- a Kaggle-like dataset ---------------------------------------------------------------


def generate(root: Path, n_files: int, near_share: float, exact_share: float, seed: int) -> dict:
    """Write ``n_files`` JPEGs into ``root``; returns the planted copies.

    Originals first (``cat.i.jpg``/``dog.i.jpg`` alternating), then near-duplicate copies
    of distinct originals, then byte-identical copies, numbered on after the originals.
    """
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    n_near, n_exact = round(n_files * near_share), round(n_files * exact_share)
    n_orig = n_files - n_near - n_exact
    names = [f"{('cat', 'dog')[i % 2]}.{i // 2}.jpg" for i in range(n_orig)]
    sources = rng.choice(n_orig, size=n_near + n_exact, replace=False)
    jobs, near, cross = [], [], 0
    for k, src in enumerate(sources[:n_near]):
        cls = names[src].split(".")[0]
        if k % 10 == 9:  # the same photo filed under the other class
            cls, cross = {"cat": "dog", "dog": "cat"}[cls], cross + 1
        dst = f"{cls}.{n_orig // 2 + 1 + k}.jpg"
        near.append((names[src], dst))
        jobs.append((str(root / dst), int(src), seed, float(rng.uniform(0.4, 0.9)), int(rng.integers(40, 86))))
    workers = os.cpu_count() or 1
    with ProcessPoolExecutor(workers) as pool:
        chunks = [range(i, n_orig, workers * 8) for i in range(workers * 8)]
        list(pool.map(_write_originals, [(str(root), names, list(c), seed) for c in chunks]))
        list(pool.map(_write_copy, jobs, chunksize=16))
    for k, src in enumerate(sources[n_near:]):
        dst = root / f"{names[src].split('.')[0]}.{n_orig // 2 + 1 + n_near + k}.jpg"
        dst.write_bytes((root / names[src]).read_bytes())
    return {"near": near, "cross": cross, "exact": n_exact}


def _photo(index: int, seed: int):
    """A smooth, photo-like image of Kaggle's sizes: colour regions, a few blobs, sensor noise."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng([seed, index])
    long = int(rng.choice([500, 500, 500, 499, 450, 400, 350]))
    short = int(long * rng.uniform(0.6, 1.0))
    w, h = (long, short) if rng.random() < 0.75 else (short, long)
    coarse = rng.integers(0, 256, (int(rng.integers(3, 8)), int(rng.integers(3, 8)), 3), dtype=np.uint8)
    img = Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 6))):
        x, y, r = int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(15, 140))
        draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    noise = rng.integers(-10, 11, (h, w, 1), dtype=np.int16)
    return Image.fromarray(np.clip(np.asarray(img, dtype=np.int16) + noise, 0, 255).astype(np.uint8))


def _write_originals(job: tuple) -> None:
    root, names, indices, seed = job
    for i in indices:
        _photo(i, seed).save(Path(root) / names[i], quality=90)


def _write_copy(job: tuple) -> None:
    """A resized, recompressed copy of original ``src`` (made again from its seed, then encoded
    once at quality 90 as the original was, so the copy is of the original's pixels)."""
    import io

    from PIL import Image

    path, src, seed, scale, quality = job
    buf = io.BytesIO()
    _photo(src, seed).save(buf, "JPEG", quality=90)
    with Image.open(buf) as img:
        size = (max(32, round(img.width * scale)), max(32, round(img.height * scale)))
        img.resize(size, Image.Resampling.LANCZOS).save(path, quality=quality)


if __name__ == "__main__":
    raise SystemExit(main())
