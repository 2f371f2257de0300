"""The package's import graph, read from its source: no cycle, no importlib, and the
terminal never imports its optional web console (only the composition root and the
command line do)."""

from __future__ import annotations

import ast
from pathlib import Path

import caisse_ap

PACKAGE = Path(caisse_ap.__file__).parent
# The composition root, the command line and the test harness (a terminal with its
# console, for a POS project's tests) wire the console in; nothing else may.
WIRING = {"caisse_ap.terminal.app", "caisse_ap.terminal.cli", "caisse_ap.testing"}
WEB = "caisse_ap.terminal.web"


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imported(module: str, is_package: bool, node: ast.Import | ast.ImportFrom,
              known: dict[str, Path]) -> set[str]:
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level > 1:
        base = base[:len(base) - (node.level - 1)]
    elif node.level == 0:
        base = []
    target = ".".join(base + ([node.module] if node.module else []))
    names = set()
    for alias in node.names:
        candidate = f"{target}.{alias.name}" if target else alias.name
        names.add(candidate if candidate in known else target)
    return names


def _imports_of(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of the package `module` imports, wherever in it (functions too), but
    for `if TYPE_CHECKING:` blocks (types only)."""
    imported: set[str] = set()
    is_package = path.name == "__init__.py"

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:  # noqa: N802 - ast's name
            if isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
                for child in node.orelse:
                    self.visit(child)
                return
            self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:  # noqa: N802
            imported.update(_imported(module, is_package, node, known))

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:  # noqa: N802
            imported.update(_imported(module, is_package, node, known))

    Visitor().visit(ast.parse(path.read_text(encoding="utf-8")))
    return {name for name in imported if name in known and name != module}


def import_graph() -> dict[str, set[str]]:
    """Each module of the package and the modules of the package it imports."""
    known = modules()
    return {module: _imports_of(module, path, known) for module, path in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in graph[module]:
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_the_graph_sees_the_imports_it_must():
    graph = import_graph()
    assert {"caisse_ap.terminal.web", "caisse_ap.terminal.server",
            "caisse_ap.terminal.journal"} <= graph["caisse_ap.terminal.app"]
    assert "caisse_ap.terminal.options" in graph["caisse_ap.terminal.serial"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_package_has_no_import_cycle():
    assert cycles(import_graph()) == []


def test_the_terminal_imports_nothing_from_the_web_console():
    graph = import_graph()
    offenders = {module: sorted(name for name in imported if name.startswith(WEB))
                 for module, imported in graph.items()
                 if not module.startswith(WEB) and module not in WIRING}
    assert {module: names for module, names in offenders.items() if names} == {}


def test_no_module_imports_through_importlib():
    for module, path in modules().items():
        assert "importlib" not in path.read_text(encoding="utf-8"), module
