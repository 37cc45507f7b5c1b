"""The layers import one way: the domain knows nothing of HTTP, storage or transports, and tools
know nothing of the domain (the run loop calls them, not the other way round)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "threadline"

FORBIDDEN = {
    "domain": (
        "threadline.api",
        "threadline.store",
        "threadline.events",
        "threadline.workers",
        "sqlalchemy",
        "fastapi",
        "prometheus_client",
        "threadline.metrics",
    ),
    "tools": (
        "threadline.domain",
        "threadline.api",
        "threadline.store",
        "threadline.events",
        "threadline.workers",
    ),
}


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_go_one_way(layer: str) -> None:
    files = sorted((SRC / layer).rglob("*.py"))
    assert files
    wrong = [
        f"{path.relative_to(SRC)} imports {name}"
        for path in files
        for name in sorted(imported(path))
        if name.startswith(FORBIDDEN[layer])
    ]
    assert wrong == []
