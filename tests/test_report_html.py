"""report.html in a real headless Chromium: it renders, its embedded charts decode, its tables exist.

Skipped when Chromium is not installed, unless TLEXP_REQUIRE_BROWSER=1 (set in CI),
in which case a missing browser is a failure: the test must not silently stop running.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_report import make_run  # tests/ is on sys.path (pytest's default rootdir insertion)
from tlexp.results import build_report

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from screenshots import BROWSERS, chromium, find_browser  # the command the docs' pictures are taken with

BROWSER = find_browser()
TIMEOUT_S = 60

if BROWSER is None:
    if os.environ.get("TLEXP_REQUIRE_BROWSER") == "1":
        pytest.fail(f"TLEXP_REQUIRE_BROWSER=1 but no Chromium found (tried {', '.join(BROWSERS)}).", pytrace=False)
    pytest.skip(
        f"Chromium not installed (tried {', '.join(BROWSERS)}); set TLEXP_REQUIRE_BROWSER=1 to make this a failure.",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """A report over two seeds of two settings, one classifier pair with predictions, one failed run."""
    root = tmp_path_factory.mktemp("html")
    labels = ["cat", "dog"] * 10
    dirs = []
    for freeze, share in ((0.3, 0.36), (0.7, 0.68)):
        for seed in (0, 1):
            forest = [y if i != seed else "dog" for i, y in enumerate(labels)]
            dirs.append(
                make_run(
                    root / "runs",
                    f"vgg16_f{int(freeze * 100)}_s{seed}",
                    freeze=freeze,
                    share=share,
                    seed=seed,
                    head=(0.9, 0.9, 0.9 + 0.01 * seed),
                    predictions={"label": labels, "head": labels, "forest": forest},
                )
            )
    failed = [{"name": "resnet50_f30_s0", "error": "OOM <b>not bold</b>", "overrides": {"model.backbone": "resnet50"}}]
    written = build_report(dirs, root / "report", failed=failed, title="HTML check")
    return root, written


def test_html_is_self_contained(built):
    _, written = built
    text = written["report.html"].read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", text)  # nothing fetched from the network
    assert text.count('src="data:image/png;base64,') == 3  # accuracy and time vs frozen, accuracy vs minutes
    assert len(re.findall(r'<img [^>]*alt="[^"]+"', text)) == 3
    assert "OOM &lt;b&gt;not bold&lt;/b&gt;" in text and "<b>not bold" not in text
    assert text.count("<details>") == 5  # four run configs and the failed run's overrides


def test_answer_first_then_tables_and_charts(built):
    _, written = built
    text = written["report.html"].read_text()
    headings = re.findall(r"<h2>([^<]*)</h2>", text)
    assert headings[:4] == ["The answer", "Results", "Mean ± std over seeds", "Charts"]
    answer = text.split("<h2>The answer</h2>", 1)[1].split("<h2>", 1)[0]
    assert answer.count("<ul") == 4 and "<li>head: vgg16, " in answer  # the Markdown lists, as HTML lists
    # Two settings of two seeds each: the caption says so, and what the bars are.
    assert "mean of 2 seeds per point; bars: lowest to highest seed.</figcaption>" in text


@pytest.fixture(scope="module")
def rendered(built, tmp_path_factory) -> tuple[Path, str, str]:
    """report.html opened once in headless Chromium (starting it is the costly part): a
    screenshot of its top and the DOM once loaded, both of the same page load.

    Returns:
        The screenshot's path, the DOM, and what Chromium said on stderr.
    """
    _, written = built
    folder = tmp_path_factory.mktemp("chromium")
    shot = folder / "shot.png"
    result = chromium(
        BROWSER,
        folder / "profile",
        f"--screenshot={shot}",
        "--window-size=1280,2000",
        "--virtual-time-budget=5000",
        "--dump-dom",
        written["report.html"].as_uri(),
        timeout=TIMEOUT_S,
    )
    return shot, result.stdout, result.stderr


@pytest.mark.slow
def test_screenshot_renders(rendered):
    shot, _, stderr = rendered
    assert shot.is_file(), f"no screenshot; chromium said:\n{stderr[-2000:]}"
    with Image.open(shot) as im:
        assert im.size == (1280, 2000)
        pixels = np.asarray(im.convert("RGB")).astype(np.uint32)
    colours = np.unique(pixels[..., 0] << 16 | pixels[..., 1] << 8 | pixels[..., 2])  # one number per RGB colour
    assert len(colours) > 50  # text, tables and charts, not a blank page


@pytest.mark.slow
def test_dom_after_load(rendered):
    _, dom, stderr = rendered
    assert "<body" in dom, f"no DOM dumped; chromium said:\n{stderr[-2000:]}"
    body = re.search(r"<body([^>]*)>", dom).group(1)
    attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body))
    assert attrs.get("images-total") == "3", attrs
    assert attrs.get("images-loaded") == "3", attrs  # every embedded PNG decoded
    # Results, mean ± std over seeds, head vs forest, failed runs.
    assert int(attrs["tables"]) >= 4
    for name in ("vgg16_f30_s0", "vgg16_f30_s1", "vgg16_f70_s0", "vgg16_f70_s1", "resnet50_f30_s0"):
        assert name in dom
