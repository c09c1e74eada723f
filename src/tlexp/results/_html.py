"""report.html: the report's sections, charts and run configs in one self-contained page. No TensorFlow.

The charts are embedded as base64 PNGs and the styles inline, so the one file can be
mailed or archived and still show everything. The sections are the ones ``summary.md``
is written from (:class:`tlexp.results._tables.Section`), so the two never disagree.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

from tlexp.results._bysetting import BY_SETTING_HEADING
from tlexp.results._runs import ReportRun
from tlexp.results._summary import RESULTS_HEADING
from tlexp.results._tables import Section

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:1400px;
padding:0 1rem;color:#1f2328;background:#fff}
h1{margin-bottom:.2rem}h2{margin-top:2rem;border-bottom:1px solid #d0d7de;padding-bottom:.25rem}
.meta{color:#59636e;margin-top:0}.intro{color:#3d444d;max-width:80ch}
.scroll{overflow-x:auto}table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:13.5px}
th,td{padding:.25rem .5rem;border-bottom:1px solid #d8dee4}
th{background:#f6f8fa;text-align:left;vertical-align:bottom;min-width:4.5em}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}tbody tr:hover{background:#f6f8fa}
tr.marked td{background:#fff8c5}
figure{margin:1rem 0 2rem}figure img{max-width:100%;height:auto;border:1px solid #d8dee4}
figcaption{color:#59636e;font-size:14px}details{margin:.3rem 0}summary{cursor:pointer}
pre{background:#f6f8fa;padding:.6rem;overflow-x:auto;font-size:13px}
"""

# Counts for the browser test (tests/test_report_html.py); harmless for a reader.
_SCRIPT = """window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  document.body.dataset.imagesTotal = imgs.length;
  document.body.dataset.imagesLoaded = imgs.filter(function (i) { return i.naturalWidth > 0; }).length;
  document.body.dataset.tables = document.getElementsByTagName("table").length;
});"""


def html_page(
    title: str,
    stamp: str,
    counts: str,
    sections: Sequence[Section],
    out: Path,
    figures: Sequence[tuple[str, str]],
    items: Sequence[ReportRun],
) -> str:
    """The whole page: the sections, the charts (``(file name in out, caption)``) and every run's config."""
    e = html.escape
    parts = [f"<h1>{e(title)}</h1>", f'<p class="meta">Generated {e(stamp)}. {e(counts)}</p>']
    # The charts show the means over seeds: they go right after the table of those (or
    # after the results when every setting ran once).
    by_setting = any(s.heading == BY_SETTING_HEADING for s in sections)
    charts_after = BY_SETTING_HEADING if by_setting else RESULTS_HEADING
    for section in sections:
        parts.append(section.html())
        parts += [_figure(out, name, caption) for name, caption in section.figures]
        if figures and section.heading == charts_after:
            parts.append("<h2>Charts</h2>")
            parts += [_figure(out, name, caption) for name, caption in figures]
    configs = [r for r in items if r.config_text]
    if configs:
        parts.append("<h2>Run configs</h2>")
        for r in configs:
            where = f" — {r.dir_from(out)}" if r.dir else ""
            parts.append(
                f"<details><summary>{e(r.name)} ({e(r.config_source)}{e(where)})</summary>"
                f"<pre>{e(r.config_text)}</pre></details>"
            )
    body = "\n".join(parts)
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{e(title)}</title>\n'
        f"<style>{_CSS}</style>\n</head>\n<body>\n{body}\n<script>\n{_SCRIPT}\n</script>\n</body>\n</html>\n"
    )


def _figure(out: Path, name: str, caption: str) -> str:
    """A chart of the report folder embedded as a base64 PNG, with its caption."""
    data = base64.b64encode((out / name).read_bytes()).decode("ascii")
    e = html.escape
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{e(caption)}">'
        f"<figcaption>{e(caption)}</figcaption></figure>"
    )
