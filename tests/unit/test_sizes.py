"""Rooms stay small: no class in ``src/threadline`` with more than 20 public methods (a class that
needs more is doing several jobs; the old 54-method ``SqlStore`` became one store per aggregate), and
no module over 500 lines (migrations aside)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "threadline"
MOST_PUBLIC_METHODS = 20
MOST_LINES = 500


def public_methods() -> dict[str, int]:
    """``path:Class`` -> how many public methods the class defines (its own, not inherited)."""
    counts: dict[str, int] = {}
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                methods = [
                    f
                    for f in node.body
                    if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef) and not f.name.startswith("_")
                ]
                counts[f"{path.relative_to(SRC)}:{node.name}"] = len(methods)
    return counts


def over_limit() -> dict[str, int]:
    return {name: n for name, n in public_methods().items() if n > MOST_PUBLIC_METHODS}


def test_the_counter_sees_the_stores() -> None:
    counts = public_methods()
    assert 10 < counts["store/runs.py:SqlRunStore"] <= MOST_PUBLIC_METHODS
    assert 5 < counts["domain/runs.py:RunService"] <= MOST_PUBLIC_METHODS


def test_no_class_has_more_than_20_public_methods() -> None:
    assert over_limit() == {}


def test_no_module_has_more_than_500_lines() -> None:
    long = {
        str(path.relative_to(SRC)): n
        for path in sorted(SRC.rglob("*.py"))
        if "migrations" not in path.parts
        and (n := len(path.read_text(encoding="utf-8").splitlines())) > MOST_LINES
    }
    assert long == {}
