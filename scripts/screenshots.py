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

The headless Chromium command line is defined here once (:func:`chromium_command`); the
tests open pages with it too: one page per run (:func:`chromium`), or many pages in one
browser (:class:`Pages`).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BROWSERS = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str | None:
    """The first Chromium on this machine, or None."""
    return next((found for c in BROWSERS if (found := shutil.which(c))), None)


def chromium_command(browser: str, profile: Path, *args: str) -> list[str]:
    """Headless Chromium with the profile folder ``profile`` (a fresh one: Chromium makes it)
    and nothing that reaches the network, then ``args``."""
    return [
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


def chromium(browser: str, profile: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run :func:`chromium_command` to its end (a ``--dump-dom``, a ``--screenshot``)."""
    return subprocess.run(chromium_command(browser, profile, *args), capture_output=True, text=True, timeout=timeout)


# Run as `python -c THIS FD_IN FD_OUT COMMAND...`: puts the pipe ends where Chromium's
# --remote-debugging-pipe wants them (fd 3: what it reads, fd 4: what it writes), then execs COMMAND.
_ON_FDS_3_AND_4 = (
    "import os, sys; fd_in, fd_out = map(int, sys.argv[1:3]); os.dup2(fd_in, 3); os.dup2(fd_out, 4); "
    "os.close(fd_in); os.close(fd_out); os.execv(sys.argv[3], sys.argv[3:])"
)


class Pages:
    """One headless Chromium (:func:`chromium_command`) that opens page after page, each in a
    tab of its own, driven over the DevTools protocol on a pipe: starting Chromium costs
    several times what loading a page does, so many pages are read far sooner this way than
    with one ``--dump-dom`` run each.

    Use it as a context manager (``with Pages(browser, profile) as pages: pages.dom(url)``);
    Chromium's own output goes to ``profile`` + ``.log``.
    """

    def __init__(self, browser: str, profile: Path, timeout: float = 60):
        self.timeout = timeout
        self.log = profile.with_name(profile.name + ".log")
        self._next_id = 0
        self._unread = b""
        self._inbox: list[dict[str, Any]] = []
        theirs_in, self._to = os.pipe()
        self._from, theirs_out = os.pipe()
        # Above fd 4, so that moving one to fd 3 cannot overwrite the other.
        passed = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 5) for fd in (theirs_in, theirs_out)]
        command = chromium_command(browser, profile, "--remote-debugging-pipe", "about:blank")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _ON_FDS_3_AND_4, *map(str, passed), *command],
                pass_fds=passed,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        for fd in (theirs_in, theirs_out, *passed):
            os.close(fd)

    def __enter__(self) -> Pages:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def dom(self, url: str, budget_ms: int = 1000) -> str:
        """The DOM of ``url`` (``<html>`` and all in it) once loaded and ``budget_ms`` of
        virtual time later (its scripts' timers run), in a new tab, closed afterwards."""
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        try:
            self.send("Page.enable", session=session)
            self.send("Page.setLifecycleEventsEnabled", session=session, enabled=True)
            navigated = self.send("Page.navigate", session=session, url=url)
            if navigated.get("errorText"):
                raise RuntimeError(f"{url}: {navigated['errorText']}")
            loaded = navigated["loaderId"]
            self._wait(url, lambda m: m.get("method") == "Page.lifecycleEvent" and m["params"]["loaderId"] == loaded)
            policy = {"policy": "pauseIfNetworkFetchesPending", "budget": budget_ms}
            self.send("Emulation.setVirtualTimePolicy", session=session, **policy)
            expired = "Emulation.virtualTimeBudgetExpired"
            self._wait(url, lambda m: m.get("method") == expired and m.get("sessionId") == session)
            expression = "document.documentElement.outerHTML"
            found = self.send("Runtime.evaluate", session=session, expression=expression, returnByValue=True)
            if "exceptionDetails" in found:
                raise RuntimeError(f"{url}: {expression}: {found['result'].get('description')}")
            return found["result"]["value"]
        finally:
            if self.proc.poll() is None:
                self.send("Target.closeTarget", targetId=target)
            self._inbox = [m for m in self._inbox if m.get("sessionId") != session]

    def send(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one command (to the tab of ``session``, or to the browser) and return its result."""
        self._next_id += 1
        sent = self._next_id
        message = {"id": sent, "method": method, "params": params, **({"sessionId": session} if session else {})}
        os.write(self._to, json.dumps(message).encode() + b"\0")
        reply = self._wait(method, lambda m: m.get("id") == sent)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def close(self) -> None:
        """End Chromium (asked first, killed after 10 s) and close the pipe."""
        if self._to < 0:
            return
        if self.proc.poll() is None:
            try:
                os.write(self._to, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for fd in (self._to, self._from):
            os.close(fd)
        self._to = self._from = -1

    def _wait(self, what: str, match) -> dict[str, Any]:
        """The first message that ``match`` accepts, read from the pipe as needed."""
        deadline = time.monotonic() + self.timeout
        while True:
            for i, message in enumerate(self._inbox):
                if match(message):
                    return self._inbox.pop(i)
            left = deadline - time.monotonic()
            chunk = os.read(self._from, 1 << 20) if left > 0 and select.select([self._from], [], [], left)[0] else None
            if not chunk:
                said = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{what}: Chromium {'ended' if chunk == b'' else 'did not answer'}:\n{said}")
            *messages, self._unread = (self._unread + chunk).split(b"\0")
            self._inbox += [m for m in map(json.loads, messages) if _waited_for(m)]


def _waited_for(message: dict[str, Any]) -> bool:
    """A reply, or one of the events :meth:`Pages.dom` waits for: a page's load, the end of its
    virtual time. The rest of what a tab reports is dropped as it comes."""
    if "id" in message:
        return True
    if message.get("method") == "Page.lifecycleEvent":
        return message["params"]["name"] == "load"
    return message.get("method") == "Emulation.virtualTimeBudgetExpired"


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
