"""The layers import one way: the domain knows nothing of HTTP, storage, transports, models, tools or
retrieval (it sees them only through ``domain/ports``); tools know nothing of the domain beyond its
ports and values (the run loop calls them, not the other way round); and no modules import each
other in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "threadline"

ADAPTERS = (
    "threadline.api",
    "threadline.store",
    "threadline.events",
    "threadline.workers",
    "threadline.providers",
    "threadline.tools",
    "threadline.retrieval",
)

FORBIDDEN = {
    "domain": (*ADAPTERS, "threadline.metrics", "sqlalchemy", "fastapi", "prometheus_client"),
    "tools": (
        "threadline.domain",
        "threadline.api",
        "threadline.store",
        "threadline.events",
        "threadline.workers",
    ),
    "api": ("threadline.tools",),
    "events": ("threadline.tools",),
}
"""Modules each layer must not import, counting imports made only for type checking."""

FORBIDDEN_AT_RUN_TIME = {"domain": ("numpy",)}
"""Modules a layer may name in types (under ``if TYPE_CHECKING:``) but never import: the domain's
vectors are numpy arrays, the arithmetic on them is the retrieval engine's."""

ALLOWED = {"tools": ("threadline.domain.ports", "threadline.domain.steps", "threadline.domain.entities")}
"""Exceptions to ``FORBIDDEN``: the domain's ports and values, which tools implement and produce."""


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def type_checking(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")


def statements(
    path: Path, *, run_time: bool = False, module_level: bool = False
) -> list[tuple[str, tuple[str, ...]]]:
    """``path``'s imports as (module, names): ``import a.b`` is ``("a.b", ())``, ``from a import b, c``
    is ``("a", ("b", "c"))``. ``run_time`` leaves out ``if TYPE_CHECKING:`` blocks; ``module_level``
    leaves out imports inside functions, which run only when called."""
    found: list[tuple[str, tuple[str, ...]]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.extend((alias.name, ()) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, tuple(alias.name for alias in node.names)))
        elif run_time and isinstance(node, ast.stmt) and type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        elif module_level and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            return
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def imports(path: Path, *, run_time: bool = False) -> set[str]:
    """The modules ``path`` imports (``from a import b`` as both ``a`` and ``a.b``)."""
    names: set[str] = set()
    for module, members in statements(path, run_time=run_time):
        names.add(module)
        names.update(f"{module}.{member}" for member in members)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_go_one_way(layer: str) -> None:
    files = sorted((SRC / layer).rglob("*.py"))
    assert files
    wrong = [
        f"{path.relative_to(SRC)} imports {name}"
        for path in files
        for name in sorted(imports(path))
        if within(name, FORBIDDEN[layer]) and not within(name, ALLOWED.get(layer, ()))
    ]
    wrong += [
        f"{path.relative_to(SRC)} imports {name} at run time"
        for path in files
        for name in sorted(imports(path, run_time=True))
        if within(name, FORBIDDEN_AT_RUN_TIME.get(layer, ()))
    ]
    assert wrong == []


def module_name(path: Path) -> str:
    parts = ("threadline", *path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Each module's imports of other threadline modules at import time: ``from a import b`` goes to
    ``a.b`` when that is a module, else to ``a``. Imports inside functions are left out (they run when
    called, after every module has loaded); ``if TYPE_CHECKING:`` imports are counted, since a circle
    of types is a circle of design all the same. A package's ``__init__`` runs before its modules
    but is not counted as imported by them: its re-exports cannot see a half-loaded module."""
    modules = {module_name(path): path for path in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for module, members in statements(path, module_level=True):
            submodules = {f"{module}.{member}" for member in members} & modules.keys()
            targets |= submodules
            if len(submodules) < len(members) or not members:
                targets.add(module)
        graph[name] = {target for target in targets if target in modules and target != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = [stack.pop()]
            while component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_modules_import_each_other_in_a_circle() -> None:
    graph = import_graph()
    assert "threadline.domain.ports.storage" in graph["threadline.domain.lifecycle"]
    assert cycles(graph) == []
