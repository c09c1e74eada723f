"""The report's building blocks: tables and sections rendered as Markdown and HTML, and numbers as text. No TensorFlow.

``summary.md`` and ``report.html`` are written from the same :class:`Section` objects, so the
two never disagree; every number in them goes through the formatting functions here, so
one value always reads the same (a share as "35.9 %", a freeze as "30 %" or "through
block3_pool").
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Table:
    """A table rendered both as Markdown and HTML, so the two never disagree."""

    header: list[str]
    rows: list[list[str]]
    align: str  # one letter per column: "l" or "r"
    marked: set[int] = field(default_factory=set)  # rows to highlight in HTML (failed runs)

    def markdown(self) -> str:
        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") or " " for c in cells) + " |"

        rule = ["---:" if a == "r" else "---" for a in self.align]
        return "\n".join([line(self.header), line(rule)] + [line(r) for r in self.rows])

    def html(self) -> str:
        def row(cells: Sequence[str], tag: str, marked: bool = False) -> str:
            return (
                ('<tr class="marked">' if marked else "<tr>")
                + "".join(
                    f'<{tag} class="{"num" if a == "r" else "txt"}">{_no_break(html.escape(c))}</{tag}>'
                    for c, a in zip(cells, self.align, strict=True)
                )
                + "</tr>"
            )

        body = "\n".join(row(r, "td", i in self.marked) for i, r in enumerate(self.rows))
        return (
            f'<div class="scroll"><table>\n<thead>{row(self.header, "th")}</thead>\n'
            f"<tbody>\n{body}\n</tbody></table></div>"
        )


@dataclass(frozen=True)
class Section:
    """One section of the report: a heading, an intro, maybe a table and charts.

    The intro is paragraphs separated by blank lines; a line starting with "- " is a list
    item (as in Markdown), which the HTML page renders as a list. ``figures`` are the
    section's own charts, ``(file name in the report folder, caption)``: Markdown links
    them after the table; the HTML page embeds them there (``tlexp.results._html``).
    """

    heading: str
    intro: str = ""
    table: Table | None = None
    figures: tuple[tuple[str, str], ...] = ()

    def markdown(self) -> str:
        lines = [f"## {self.heading}", "", *([self.intro, ""] if self.intro else [])]
        lines += [self.table.markdown(), ""] if self.table else []
        for name, caption in self.figures:
            lines += [f"![{name}]({name})", "", f"*{caption}*", ""]
        return "\n".join(lines)

    def html(self) -> str:
        parts = [f"<h2>{html.escape(self.heading)}</h2>"]
        parts += [_paragraph(p) for p in self.intro.split("\n\n") if p]
        return "\n".join(parts + ([self.table.html()] if self.table else []))


def _paragraph(text: str) -> str:
    """A paragraph of a section's intro: its lines starting with "- " become a list (as in Markdown)."""
    lines = text.split("\n")
    prose = " ".join(line for line in lines if not line.startswith("- "))
    items = [line[2:] for line in lines if line.startswith("- ")]
    out = f'<p class="intro">{_no_break(html.escape(prose))}</p>' if prose else ""
    if items:
        out += '<ul class="intro">' + "".join(f"<li>{_no_break(html.escape(i))}</li>" for i in items) + "</ul>"
    return out


# A table too wide for the page wraps its cells at spaces; these spaces hold a number
# to its unit or sign: "35.9 %", "± 0.0042", "[-0.01, +0.03]" wrap only before "±" / "[".
_NO_BREAK = ((" %", "&nbsp;%"), ("± ", "±&nbsp;"), (", +", ",&nbsp;+"), (", -", ",&nbsp;-"))


def _no_break(text: str) -> str:
    """``text`` (HTML already) with the spaces that hold a number to its unit or sign made non-breaking."""
    for plain, kept in _NO_BREAK:
        text = text.replace(plain, kept)
    return text


# --------------------------------------------------------------------------- formatting


def fmt_cell(x: Any, digits: int = 4) -> str:
    """A table cell: "" for none, a float with ``digits`` decimals, anything else as text."""
    if x is None or x == "":
        return ""
    if isinstance(x, float) and digits:
        return f"{x:.{digits}f}"
    return str(x)


def fmt_pct(share: Any, whole: bool = False) -> str:
    """A share as a percentage: one decimal, or none with ``whole`` if it is a whole percent."""
    s = as_share(share)
    if s is None:
        return ""
    pct = 100 * s
    return f"{pct:.0f} %" if whole and abs(pct - round(pct)) < 1e-9 else f"{pct:.1f} %"


def fmt_freeze(freeze: Any) -> str:
    """A requested freeze: a share as a percentage, a layer name as 'through <layer>'."""
    if freeze is None:
        return ""
    return fmt_pct(freeze, whole=True) if as_share(freeze) is not None else f"through {freeze}"


def fmt_mean_std(mean: float | None, std: float | None, digits: int) -> str:
    """'0.9312 ± 0.0042', or the mean alone without a std (one seed); "" without a mean."""
    if mean is None:
        return ""
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def fmt_p(p: float, alpha: float) -> str:
    """A p-value as the report prints it, never on the wrong side of ``alpha``.

    Two significant digits below 0.095 (0.031, 0.0024), two decimals above (0.41, 1.00),
    "<0.001" below 0.001. Within 10 % of ``alpha`` three significant digits (0.0495,
    0.0504), and more wherever fewer would print ``alpha`` itself or a value on its other
    side (0.0495 at two digits is "0.05", which reads as "not below 0.05"); after six,
    "<alpha" or ">alpha".

    Args:
        p: The p-value, in [0, 1].
        alpha: The significance level the report reads p against, e.g. 0.05.
    """
    if p < 0.001:
        return "<0.001"
    near = abs(p - alpha) < 0.1 * alpha
    for digits in range(3 if near else 2, 7):
        text = f"{p:.{digits}f}" if p >= 0.095 else f"{p:.{digits}g}"
        shown = float(text)
        if (shown < alpha) == (p < alpha) and (shown != alpha or p == alpha):
            return text
    return f"<{alpha:g}" if p < alpha else f">{alpha:g}"


def as_share(x: Any) -> float | None:
    """A number as a float share; None for anything else (a freeze given as a layer name, a missing value)."""
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None
