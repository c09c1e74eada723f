"""The code-shape rules import-linter does not check, over src/tlexp (issue #24).

usage: python scripts/check_architecture.py [PATH_PREFIX ...]

- no module over 400 lines, no function over 80 lines;
- a name with a leading underscore is used only in its own module: no
  ``from tlexp.x import _name`` anywhere in src/tlexp (dunders like ``__version__`` aside),
  and a private module (``tlexp.model._accel``) only from inside its own package, whose
  ``__init__`` is the API the rest of tlexp uses.

Prints one line per violation (only under the given path prefixes, if any) and exits 1
if there is one. ``tests/test_architecture.py`` runs the same checks.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "tlexp"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def violations(src: Path = SRC) -> list[str]:
    """Every breach of the rules above, as ``path: what`` lines, sorted."""
    found = []
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src.parent.parent).as_posix()
        text = path.read_text(encoding="utf-8")
        lines = text.count("\n")
        if lines > MAX_MODULE_LINES:
            found.append(f"{rel}: {lines} lines (at most {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(f"{rel}:{node.lineno}: {node.name}() is {length} lines (at most {MAX_FUNCTION_LINES})")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tlexp"):
                for alias in node.names:
                    if _private_elsewhere(node.module, alias.name, path, src):
                        found.append(f"{rel}:{node.lineno}: imports the private name {alias.name} from {node.module}")
    return found


def _private_elsewhere(module: str, name: str, importer: Path, src: Path) -> bool:
    """Whether ``from module import name`` in ``importer`` reaches for another module's private
    name. A private *module* (``_run``) may be imported from inside its own package only."""
    if not name.startswith("_") or name.startswith("__"):
        return False
    package = src.parent.joinpath(*module.split("."))
    if (package / f"{name}.py").is_file() or (package / name).is_dir():
        return not importer.resolve().is_relative_to(package.resolve())
    return True


def main() -> int:
    prefixes = sys.argv[1:]
    found = [v for v in violations() if not prefixes or v.startswith(tuple(prefixes))]
    print("\n".join(found) or "no violations")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
