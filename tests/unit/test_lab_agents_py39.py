"""The lab agents run on a lab host's own python3: Debian bullseye's is 3.9. What 3.9 cannot
parse or run, found without a bullseye host: 3.10+ syntax, `X | Y` as a runtime type in
isinstance/issubclass, and names stdlib modules gained after 3.9."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

AGENTS = sorted((Path(__file__).parents[2] / "anywhere/lab/agents").glob("*.py"))
# stdlib names used by code like ours that 3.9 lacks (module -> names).
NEWER = {
    "datetime": {"UTC"},
    "itertools": {"pairwise"},
    "typing": {"Self", "TypeAlias"},
    "contextlib": {"chdir"},
    "enum": {"StrEnum"},
}
# Keyword arguments that arrived in 3.10: zip(strict=), dataclass(slots=, kw_only=).
NEW_KEYWORDS = {"zip": {"strict"}, "dataclass": {"slots", "kw_only"}}


def _problems(source: str) -> list[str]:
    tree = ast.parse(source, feature_version=(3, 9))
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("isinstance", "issubclass")
            and len(node.args) == 2
            and isinstance(node.args[1], ast.BinOp)
        ):
            found.append(f"line {node.lineno}: {node.func.id} with X | Y")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and any(k.arg in NEW_KEYWORDS.get(node.func.id, ()) for k in node.keywords)
        ):
            found.append(f"line {node.lineno}: {node.func.id}() with a keyword 3.9 lacks")
        if isinstance(node, ast.ImportFrom) and node.module in NEWER:
            found += [
                f"line {node.lineno}: {node.module}.{a.name}"
                for a in node.names
                if a.name in NEWER[node.module]
            ]
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.attr in NEWER.get(node.value.id, ())
        ):
            found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    return found


@pytest.mark.parametrize("path", AGENTS, ids=lambda p: p.name)
def test_agent_runs_on_python_3_9(path: Path) -> None:
    assert _problems(path.read_text()) == []


@pytest.mark.parametrize(
    "snippet",
    [
        "from datetime import UTC, datetime\n",
        "isinstance(1, int | float)\n",
        "import datetime\ndatetime.UTC\n",
        "dict(zip(a, b, strict=True))\n",
    ],
)
def test_the_check_sees_what_3_9_lacks(snippet: str) -> None:
    assert _problems(snippet)


def test_the_check_refuses_3_10_syntax() -> None:
    with pytest.raises(SyntaxError):
        _problems("match x:\n    case 1:\n        pass\n")
