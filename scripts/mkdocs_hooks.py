"""MkDocs hooks (mkdocs.yml: hooks): the API page's docstrings use Sphinx roles
(``:func:`load_config```), which mkdocstrings renders as code after a stray ``:func:``;
keep the code, drop the role."""

from __future__ import annotations

import re

ROLE = re.compile(r":(?:func|class|mod|meth|data|attr|exc|obj):(?=<code>)")


def on_page_content(html: str, **kwargs) -> str:
    return ROLE.sub("", html)
