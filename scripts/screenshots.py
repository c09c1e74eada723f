"""The docs' pictures, from real output: a sweep's charts and a screenshot of its report.html.

usage: python scripts/screenshots.py [--config configs/demo_sweep.yaml | --from SWEEP_DIR]
                                     [--name demo] [--out docs/assets] [--charts NAME.png ...]

Without ``--from`` it runs ``tlexp sweep CONFIG`` into a temporary folder (the demo sweep:
4 cells on the generated demo data, offline, about a minute on 2 cores); with ``--from`` it
reuses a finished sweep folder (e.g. ``results/fmnist_strategies``). It then copies the
report's charts (every ``*.png`` at the top of the sweep folder, or those ``--charts`` names)
into ``OUT/NAME/`` and takes
a screenshot of ``report.html`` with headless Chromium (``OUT/NAME/report.png``, its top
``--height`` pixels at ``--width``). Nothing here is drawn by hand: rerun the script after a
change to the report and commit the images it writes.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BROWSERS = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str | None:
    """The first Chromium on this machine, or None."""
    return next((found for c in BROWSERS if (found := shutil.which(c))), None)


def chromium(browser: str, profile: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run headless Chromium with a fresh profile and nothing that reaches the network."""
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def run_sweep(config: Path, work: Path) -> Path:
    """``tlexp sweep CONFIG`` into ``work``; the sweep folder it wrote."""
    cmd = [sys.executable, "-m", "tlexp", "sweep", str(config), f"output.dir={work}"]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)
    (sweep_dir,) = [p for p in work.iterdir() if (p / "report.html").is_file()]
    return sweep_dir


def screenshot(report: Path, shot: Path, width: int, height: int) -> None:
    browser = find_browser()
    if browser is None:
        sys.exit(f"No Chromium found (tried {', '.join(BROWSERS)}): apt-get install chromium")
    with tempfile.TemporaryDirectory() as profile:
        result = chromium(
            browser,
            Path(profile),
            f"--screenshot={shot}",
            f"--window-size={width},{height}",
            "--virtual-time-budget=5000",
            report.resolve().as_uri(),
        )
    if not shot.is_file():
        sys.exit(f"Chromium wrote no screenshot:\n{result.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = ap.add_mutually_exclusive_group()
    source.add_argument("--config", type=Path, default=ROOT / "configs" / "demo_sweep.yaml", help="sweep to run")
    source.add_argument("--from", dest="sweep_dir", type=Path, help="a finished sweep folder to reuse instead")
    ap.add_argument("--name", default="demo", help="the pictures go to OUT/NAME/ (default: demo)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "assets")
    ap.add_argument("--width", type=int, default=1200)
    ap.add_argument("--height", type=int, default=1500)
    ap.add_argument("--charts", nargs="+", metavar="NAME.png", help="copy only these charts (default: all)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="tlexp-shots-") as work:
        sweep_dir = args.sweep_dir or run_sweep(args.config, Path(work))
        report = sweep_dir / "report.html"
        if not report.is_file():
            sys.exit(f"{sweep_dir} holds no report.html: not a finished sweep folder")
        out = args.out / args.name
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        for chart in sorted(sweep_dir.glob("*.png")):
            if args.charts and chart.name not in args.charts:
                continue
            shutil.copy2(chart, out / chart.name)
            print(f"copied {chart.name}")
        screenshot(report, out / "report.png", args.width, args.height)
        print(f"wrote {out / 'report.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
