"""One study cell at full scale: wall time and memory of every phase, at several dataset sizes.

Generates Kaggle-like JPEGs once (``cat.N.jpg`` / ``dog.N.jpg``, about 500x375 with the
real files' spread of sizes and aspect ratios: ``bench_check.generate``), then for each
size N runs, in a fresh process (so each size's peaks are its own):

* the data check, cold (every file read, hashed, decoded) and warm (stat only);
* one ``tlexp run`` cell on the first N files (balanced classes), one epoch, the
  activation cache at ``train.prefix_cache.enabled`` (default auto: its decision and
  figures are printed), fresh caches: the phases are the run's own (``decode`` builds the
  decoded-image cache, ``prefix`` the activation cache, ``train`` is one epoch streamed from
  it, ``predict`` the prediction and feature-export pass over every split, ``classify``
  the Random Forest and the other classical classifiers).

For every phase it prints the wall time and the peak of anonymous memory (``RssAnon`` of
``/proc/self/status``, sampled every 10 ms: a memory map's pages sit in the page cache and
count in RSS, not here), and at the end each figure's growth from the smallest to the
largest N: time should grow about linearly, anonymous memory stay flat.

    python scripts/bench_scale.py --images 2500 10000 25000 --size 224 --backbone mobilenetv3small
    python scripts/bench_scale.py --images 500 1000 --size 64 --backbone vgg16     # a quick look

The folder (generated images, caches, run folders) is removed at the end unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, nargs="+", default=[2500, 10000, 25000], help="dataset sizes N")
    ap.add_argument("--size", type=int, default=224, help="data.image_size")
    ap.add_argument("--backbone", default="mobilenetv3small")
    ap.add_argument("--freeze", type=float, default=0.3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--cache", default="auto", help="train.prefix_cache.enabled: auto, true or false")
    ap.add_argument("--trees", type=int, default=50, help="forest.n_estimators")
    ap.add_argument("--tmp", default="/tmp", help="parent of the benchmark's folder (needs room for the caches)")
    ap.add_argument("--keep", action="store_true", help="keep the folder")
    ap.add_argument(
        "--data", help="folder of generated JPEGs to reuse (made there if it holds fewer than the largest N)"
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)  # internal: measure one size in this process
    args = ap.parse_args()
    if args.child:
        return child(args)

    from bench_check import generate

    work = Path(tempfile.mkdtemp(prefix="tlexp-bench-scale-", dir=args.tmp))
    try:
        t0 = time.perf_counter()
        biggest = max(args.images)
        images = Path(args.data) if args.data else work / "all"
        if not images.is_dir() or sum(1 for _ in images.iterdir()) < biggest:
            shutil.rmtree(images, ignore_errors=True)
            generate(images, biggest, 0.0, 0.0, seed=0)
            how = f"generated in {time.perf_counter() - t0:.0f}s"
        else:
            how = "reused"
        size_gb = sum(p.stat().st_size for p in images.iterdir()) / 1e9
        print(f"dataset: {biggest:,} Kaggle-like JPEGs ({size_gb:.2f} GB) {how} in {images}; work folder {work}")
        print(
            f"cell: {args.backbone} at {args.size} px, freeze {args.freeze}, batch {args.batch}, 1 epoch, "
            f"train.prefix_cache.enabled={args.cache}, forest {args.trees} trees; {os.cpu_count()} CPU cores"
        )
        results = {}
        for n in sorted(args.images):
            root = work / f"n{n}"
            root.mkdir()
            for i in range(n):  # the first n/2 of each class, as hard links (no copy)
                name = f"{('cat', 'dog')[i % 2]}.{i // 2}.jpg"
                os.link(images / name, root / name)
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(root), *_forward(args)],
                capture_output=True,
                text=True,
            )
            if out.returncode != 0:
                print(out.stdout[-3000:], out.stderr[-6000:], sep="\n")
                return out.returncode
            results[n] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"N={n:,} done in {results[n]['total_s']:.0f}s", flush=True)
        report(results)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def _forward(args) -> list[str]:
    return [
        f"--size={args.size}",
        f"--backbone={args.backbone}",
        f"--freeze={args.freeze}",
        f"--batch={args.batch}",
        f"--cache={args.cache}",
        f"--trees={args.trees}",
    ]


def report(results: dict[int, dict]) -> None:
    sizes = sorted(results)
    phases = [p for p in results[sizes[-1]]["phases"] if all(p in results[n]["phases"] for n in sizes)]
    head = "".join(f"{f'N={n:,} s':>13}{'anon MB':>9}" for n in sizes)
    print(f"\n{'phase':<16}{head}{'time x':>8}{'anon x':>8}")
    for p in [*phases, "whole cell"]:
        cells = []
        for n in sizes:
            f = (
                results[n]["phases"][p]
                if p != "whole cell"
                else {"s": results[n]["total_s"], "anon_mb": results[n]["peak_anon_mb"]}
            )
            cells.append(f)
        row = "".join(f"{c['s']:>13.1f}{c['anon_mb']:>9.0f}" for c in cells)
        t_ratio = cells[-1]["s"] / max(cells[0]["s"], 1e-9)
        m_ratio = cells[-1]["anon_mb"] / max(cells[0]["anon_mb"], 1e-9)
        print(f"{p:<16}{row}{t_ratio:>8.2f}{m_ratio:>8.2f}")
    print(f"(N grows {sizes[-1] / sizes[0]:.1f}x; 'time x', 'anon x': largest N against smallest)")
    for n in sizes:
        r = results[n]
        print(
            f"N={n:,}: peak RssAnon {r['peak_anon_mb']:.0f} MB, ru_maxrss {r['maxrss_mb']:.0f} MB; "
            f"prefix cache: {r['prefix_cache']}"
        )


# --------------------------------------------------------------------------- one size, in its own process


def child(args) -> int:
    import logging

    root = Path(args.child)
    n = sum(1 for _ in root.iterdir())
    cache = root.parent / f"cache-{root.name}"
    sampler = Sampler()
    sampler.start()

    from tlexp.data import check_dataset

    with sampler.phase("check (cold)"):
        check_dataset(root, cache_dir=cache)
    with sampler.phase("check (warm)"):
        warm = check_dataset(root, cache_dir=cache)
    assert warm.reused == n, "the warm check re-read files"

    from tlexp import logs
    from tlexp.config import load_config
    from tlexp.experiment import run_experiment
    from tlexp.results import load_record

    # The run's own phases, measured where they happen (weights, data, build, decode, prefix, ...).
    original = logs.PhaseClock.__call__

    @contextmanager
    def timed(clock, phase):
        with sampler.phase(phase), original(clock, phase):
            yield

    logs.PhaseClock.__call__ = timed
    logging.getLogger("tlexp").setLevel(logging.WARNING)
    cfg = load_config(
        None,
        [
            f"data.root={root}",
            f"data.cache_dir={cache}",
            f"data.image_size={args.size}",
            "data.val_fraction=0.15",
            "data.test_fraction=0.15",
            f"model.backbone={args.backbone}",
            "model.weights=none",
            f"model.freeze={args.freeze}",
            "train.epochs=1",
            f"train.batch_size={args.batch}",
            f"train.prefix_cache.enabled={args.cache}",
            f"forest.n_estimators={args.trees}",
            f"output.dir={root.parent / f'runs-{root.name}'}",
            "output.save_model=false",
        ],
    )
    t0 = time.perf_counter()
    run_dir = run_experiment(cfg)
    total = time.perf_counter() - t0 + sum(sampler.phases[p]["s"] for p in ("check (cold)", "check (warm)"))
    sampler.stop()
    rec = load_record(run_dir)
    pc = rec.prefix_cache
    cache_text = (
        f"{pc.layer}, {pc.mb:,.0f} MB on disk ({pc.dtype}); {pc.decision or 'forced'}"
        if pc.used
        else f"not used: {pc.reason}"
    )
    print(
        json.dumps(
            {
                "phases": sampler.phases,
                "total_s": total,
                "peak_anon_mb": sampler.peak_kb / 1024,
                "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "prefix_cache": cache_text,
            }
        )
    )
    return 0


class Sampler:
    """Peak ``RssAnon`` per phase (and overall), sampled every 10 ms in a thread."""

    def __init__(self) -> None:
        from bench_check import _rss_anon_kb  # the same reading of /proc/self/status

        self._rss_anon_kb = _rss_anon_kb
        self.phases: dict[str, dict[str, float]] = {}
        self.peak_kb = 0
        self._current: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self._sample()

    def _sample(self) -> None:
        kb = self._rss_anon_kb()
        self.peak_kb = max(self.peak_kb, kb)
        if self._current is not None:
            f = self.phases[self._current]
            f["anon_mb"] = max(f["anon_mb"], kb / 1024)

    @contextmanager
    def phase(self, name: str):
        outer = self._current
        self.phases.setdefault(name, {"s": 0.0, "anon_mb": 0.0})
        self._current = name
        self._sample()
        t = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name]["s"] += time.perf_counter() - t
            self._sample()
            self._current = outer


if __name__ == "__main__":
    sys.exit(main())
