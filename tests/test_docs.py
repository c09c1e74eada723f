"""The docs: generated reference pages up to date, every page in the site's nav, the README
short with links that resolve, the pictures real PNGs, and (slow) the built site opened in
headless Chromium, page by page.

The browser test is skipped when Chromium is not installed, unless TLEXP_REQUIRE_BROWSER=1
(set in CI), in which case a missing browser is a failure.
"""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(ROOT / "scripts"))

import gen_docs  # noqa: E402
from screenshots import Pages, find_browser  # noqa: E402

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def test_generated_reference_pages_are_up_to_date():
    generated = gen_docs.pages()
    stale = gen_docs.stale(generated)
    names = ", ".join(str(p.relative_to(ROOT)) for p in stale)
    assert not stale, f"{names} out of date with the code: run `python scripts/gen_docs.py` and commit the result"


def test_reference_pages_cover_every_key_file_name_and_record_field():
    """What the README's tables once had to list by hand, the generated pages list: every config key,
    every fixed file name of a run folder, a sweep folder and a report, every field of the run record."""
    from tlexp import runfolder, sweeps
    from tlexp.config import describe
    from tlexp.results import RunRecord
    from tlexp.results import _report as report

    config = (DOCS / "reference" / "config.md").read_text(encoding="utf-8")
    for key, *_ in describe():
        assert f"`{key}`" in config, f"docs/reference/config.md lacks the key {key}"
    files = (DOCS / "reference" / "files.md").read_text(encoding="utf-8")
    for module, suffixes in (
        (runfolder, ("_FILE", "_PLOT", "_DIR", "_CSV", "_LOG")),
        (sweeps, ("_FILE", "_DIR")),
        (report, ("_CSV", "_MD", "_PLOT", "_REPORT", "_HEATMAP")),
    ):
        names = [v for k, v in vars(module).items() if k.isupper() and k.endswith(suffixes) and isinstance(v, str)]
        assert len(names) >= 3, f"{module.__name__} has no file names ending {suffixes}: the check would check nothing"
        for name in names:
            assert f"`{name}`" in files, f"docs/reference/files.md lacks {module.__name__}'s {name}"
    record = (DOCS / "reference" / "run-record.md").read_text(encoding="utf-8")
    models, seen = [RunRecord], set()
    while models:
        model = models.pop()
        if model in seen:
            continue
        seen.add(model)
        assert f"## {model.__name__}\n" in record, f"docs/reference/run-record.md lacks {model.__name__}"
        for name, field in model.model_fields.items():
            assert f"| `{name}` |" in record, f"docs/reference/run-record.md lacks {model.__name__}.{name}"
            models += [t for t in _models_in(field.annotation) if t not in seen]


def _models_in(annotation) -> list[type]:
    from typing import get_args

    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _nav_pages(nav) -> list[str]:
    pages = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_every_page_is_in_the_nav_and_every_nav_entry_exists():
    nav = _nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"])
    pages = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
    assert sorted(nav) == pages, f"mkdocs.yml's nav and docs/ differ: {sorted(set(nav) ^ set(pages))}"


def test_readme_is_short_keeps_its_two_commands_and_its_links_resolve():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200, "the README is a two-minute read: move detail to docs/"
    first_block = readme.split("```bash\n", 1)[1].split("```", 1)[0]
    assert 'pip install -e ".[tensorflow]" && tlexp run configs/demo.yaml' in first_block
    assert 'pip install -e ".[dev]" && pytest' in first_block
    for target in LINK.findall(readme):
        if not target.startswith(("http://", "https://", "#")):
            assert (ROOT / target.split("#")[0]).exists(), f"README links to {target}, which does not exist"


def test_pictures_are_real_pngs_and_every_one_is_used():
    from PIL import Image

    pictures = sorted((DOCS / "assets").rglob("*.png"))
    assert pictures, "docs/assets holds no picture: run python scripts/screenshots.py"
    used = set()
    for page in [ROOT / "README.md", *DOCS.rglob("*.md")]:
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if target.endswith(".png"):
                path = (page.parent / target).resolve()
                assert path.is_file(), f"{page.relative_to(ROOT)} shows {target}, which does not exist"
                used.add(path)
    for picture in pictures:
        with Image.open(picture) as image:
            assert image.format == "PNG" and min(image.size) >= 100, picture
    unused = sorted(str(p.relative_to(ROOT)) for p in pictures if p.resolve() not in used)
    assert not unused, f"pictures no page shows (remove them, or show them): {unused}"


# --- the built site in a browser ---------------------------------------------------------

BROWSER = find_browser()


@pytest.mark.slow
def test_the_site_builds_strict_and_every_page_renders_in_chromium(tmp_path):
    """``mkdocs build --strict``, then every page opened in headless Chromium: its h1 is the
    page's own heading, it is no 404 page, and every picture it shows is in the built site."""
    pytest.importorskip("mkdocs", reason="pip install -e '.[docs]'")
    if BROWSER is None:
        if os.environ.get("TLEXP_REQUIRE_BROWSER") == "1":
            pytest.fail("TLEXP_REQUIRE_BROWSER=1 but no Chromium found.", pytrace=False)
        pytest.skip("Chromium not installed; set TLEXP_REQUIRE_BROWSER=1 to make this a failure.")
    site = tmp_path / "site"
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert built.returncode == 0, built.stderr[-3000:]
    pages = sorted(p.relative_to(DOCS) for p in DOCS.rglob("*.md"))
    with Pages(BROWSER, tmp_path / "profile") as browser:  # one browser, page after page: starting it is the cost
        doms = [browser.dom(_built_page(site, page).as_uri()) for page in pages]
    for page, dom in zip(pages, doms, strict=True):
        assert "<body" in dom, f"{page}: no <body> in its DOM"
        heading = next(
            line[2:].strip() for line in (DOCS / page).read_text(encoding="utf-8").splitlines() if line.startswith("# ")
        )
        h1 = re.search(r"<h1[^>]*>(.*?)</h1>", dom, re.S)
        assert h1, f"{page}: no <h1> rendered"
        text = html.unescape(re.sub(r"<[^>]+>", "", h1[1])).replace("¶", "").strip()
        assert text == html.unescape(re.sub(r"`", "", heading)), f"{page}: the h1 reads {text!r}"
        assert "404 - Not found" not in dom, page
        assert 'class="md-content"' in dom or "md-content" in dom, f"{page}: no Material content area"
        for src in re.findall(r'<img[^>]+src="([^"]+)"', dom):
            if not src.startswith(("http", "data:")):
                target = (_built_page(site, page).parent / src.split("#")[0]).resolve()
                assert target.is_file(), f"{page}: the picture {src} is not in the built site"


def _built_page(site: Path, page: Path) -> Path:
    return site / ("index.html" if page == Path("index.md") else page.with_suffix("") / "index.html")
