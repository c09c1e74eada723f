"""The code keeps its shape: sizes and private names (scripts/check_architecture.py), the
import layers (import-linter's contracts in pyproject.toml, which CI runs as lint-imports)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from check_architecture import MAX_FUNCTION_LINES, MAX_MODULE_LINES, violations  # noqa: E402


def test_modules_and_functions_are_short_and_private_names_stay_home():
    assert violations() == []


def test_the_checker_finds_what_it_looks_for(tmp_path):
    """On a tree that breaks each rule once, each is reported (so an empty list above means something)."""
    pkg = tmp_path / "src" / "tlexp"
    (pkg / "a").mkdir(parents=True)
    (pkg / "a" / "_inner.py").write_text("X = 1\n")
    (pkg / "long.py").write_text("\n" * (MAX_MODULE_LINES + 1))
    body = "".join(f"    x = {i}\n" for i in range(MAX_FUNCTION_LINES))
    (pkg / "f.py").write_text(f"def f():\n{body}\n\nfrom tlexp.b import _hidden\nfrom tlexp.a import _inner\n")
    found = violations(pkg)
    assert found == [
        f"src/tlexp/f.py:1: f() is {MAX_FUNCTION_LINES + 1} lines (at most {MAX_FUNCTION_LINES})",
        "src/tlexp/f.py:84: imports the private name _hidden from tlexp.b",
        "src/tlexp/f.py:85: imports the private name _inner from tlexp.a",
        f"src/tlexp/long.py: {MAX_MODULE_LINES + 1} lines (at most {MAX_MODULE_LINES})",
    ]
    (pkg / "a" / "ok.py").write_text("from tlexp.a import _inner\n")  # its own package: allowed
    assert not [v for v in violations(pkg) if "a/ok.py" in v]


def test_import_linter_is_configured_with_the_layers():
    """The contracts CI checks exist (lint-imports itself runs in CI, before the tests)."""
    text = (ROOT / "pyproject.toml").read_text()
    assert 'type = "layers"' in text and '"tlexp.cli"' in text and '"tlexp.pipeline"' in text
    assert importlib.util.find_spec("importlinter") is not None
