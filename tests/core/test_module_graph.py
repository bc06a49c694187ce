"""Core's modules import each other without a cycle, type-only imports included.

The engine state sits at the bottom, the functions over it (matching, accounts, the
handlers, snapshot, invariants) above it and the engine on top; a cycle would mean one
of them reached back up, as engine, snapshot and invariants once did.
"""

from __future__ import annotations

import ast
from pathlib import Path

import mercato.core

CORE = Path(mercato.core.__file__).parent


def core_imports(path: Path) -> set[str]:
    """The mercato.core modules that a source file imports, anywhere in it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "mercato.core":
                found.update(f"mercato.core.{alias.name}" for alias in node.names)
            elif node.module.startswith("mercato.core."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("mercato.core."))
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {f"mercato.core.{p.stem}": p for p in CORE.glob("*.py") if p.stem != "__init__"}
    return {name: core_imports(path) & modules.keys() for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of ``graph`` as a path that returns to its start, or []."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" after
    path: list[str] = []

    def visit(module: str) -> list[str]:
        state[module] = "open"
        path.append(module)
        for imported in sorted(graph[module]):
            if state.get(imported) == "open":
                return [*path[path.index(imported) :], imported]
            if imported not in state and (cycle := visit(imported)):
                return cycle
        path.pop()
        state[module] = "done"
        return []

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return []


def test_find_cycle_reports_a_cycle_and_only_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_core_modules_form_no_import_cycle() -> None:
    graph = import_graph()
    assert "mercato.core.engine" in graph and "mercato.core.matching" in graph
    assert find_cycle(graph) == []
