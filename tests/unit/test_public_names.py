"""What one module of `anywhere` uses from another is public: no module outside the lab
imports a `_private` name from another module (or reaches one through an imported module)."""

from __future__ import annotations

import ast
from pathlib import Path

import anywhere

PACKAGE = Path(anywhere.__file__).parent


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _uses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    modules: set[str] = set()  # local names bound to modules of the package
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("anywhere"):
            for alias in node.names:
                if _private(alias.name):
                    found.append(f"{path.name}:{node.lineno}: {node.module}.{alias.name}")
                modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            modules.update(a.asname or a.name for a in node.names if a.name.startswith("anywhere"))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and _private(node.attr)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
        ):
            found.append(f"{path.name}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_no_module_uses_a_private_name_of_another() -> None:
    found = [
        use
        for path in sorted(PACKAGE.rglob("*.py"))
        if "lab" not in path.relative_to(PACKAGE).parts
        for use in _uses(path)
    ]
    assert found == []
