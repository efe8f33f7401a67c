"""No import cycles in the pid1 package: every module imports, and the graph
of its imports of pid1.* (module-level and inside functions, read from the
AST; imports under `if TYPE_CHECKING:` left out, they never run) has no
circle. A circle means two modules that cannot be understood, tested or
loaded lazily one without the other; this test names it.

The negative control builds a package with a circle in a temporary directory."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def module_names(package_dir: Path, package: str) -> dict[str, Path]:
    """Every module of the package (the package itself as `package`), by name."""
    found = {package: package_dir / "__init__.py"}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            found[".".join((package, *parts))] = path
    return found


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported(tree: ast.AST, module: str, is_package: bool) -> list[tuple[str, str]]:
    """What an AST imports at run time (any depth, TYPE_CHECKING blocks
    skipped), as (name, else): `import a.b` is ("a.b", "a.b"); `from a import
    b` is ("a.b", "a"): the module a.b when there is one, else a."""
    found: list[tuple[str, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - node.level + 1]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            found.extend((f"{source}.{alias.name}", source) for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph(package_dir: Path, package: str) -> dict[str, set[str]]:
    """module -> the modules of the package it imports."""
    modules = module_names(package_dir, package)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        targets = {
            first if first in modules else other for first, other in imported(tree, name, path.name == "__init__.py")
        }
        graph[name] = {target for target in targets if target in modules and target != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected component of more than one module
    (Tarjan), each as a path that comes back to its start."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def strongconnect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                strongconnect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            strongconnect(node)
    return [circle_in(component, graph) for component in components]


def circle_in(component: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A path from the component's first module back to itself, inside the component."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        node = frontier.pop(0)
        for nxt in sorted(graph[node] & component):
            if nxt == start:
                return [*paths[node], start]
            if nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                frontier.append(nxt)
    raise AssertionError(f"no circle in {component}")  # a strongly connected component always has one


def test_every_pid1_module_imports() -> None:
    import pid1

    names = [info.name for info in pkgutil.walk_packages(pid1.__path__, "pid1.")]
    assert "pid1.phases.dockerd" in names and "pid1.wiring" in names
    for name in names:
        importlib.import_module(name)


def test_the_pid1_package_has_no_import_cycle() -> None:
    graph = import_graph(REPO / "pid1", "pid1")
    assert graph["pid1.supervisor"] >= {"pid1.shutdown", "pid1.phases"}  # the graph is read at all
    found = cycles(graph)
    assert not found, "import cycles: " + "; ".join(" -> ".join(circle) for circle in found)


def test_a_cycle_is_found_and_named(tmp_path: Path) -> None:
    """Negative control: a circle through a function-level import is found;
    one closed only under TYPE_CHECKING is not."""
    package = tmp_path / "circular"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from circular import b\n")
    (package / "b.py").write_text("def later():\n    from circular.sub import c\n    return c\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "c.py").write_text("import circular.a\n")
    (package / "typed.py").write_text(
        "from typing import TYPE_CHECKING\nimport circular.a\nif TYPE_CHECKING:\n    from circular import hinted\n"
    )
    (package / "hinted.py").write_text("from . import typed\n")
    graph = import_graph(package, "circular")
    assert graph["circular.hinted"] == {"circular.typed"}  # relative import resolved
    assert cycles(graph) == [["circular.a", "circular.b", "circular.sub.c", "circular.a"]]
    sys.path.insert(0, str(tmp_path))
    try:  # and it is a real circle: the package imports (lazily closed), the graph is what Python sees
        assert importlib.import_module("circular.b").later().__name__ == "circular.sub.c"
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n == "circular" or n.startswith("circular.")]:
            del sys.modules[name]


@pytest.mark.parametrize("source", ["from pid1 import shutdown", "import pid1.shutdown as s"])
def test_both_import_forms_are_edges(source: str) -> None:
    assert imported(ast.parse(source), "pid1.x", False)[0][0] == "pid1.shutdown"


MAX_MODULE_LINES = 400


def test_no_module_of_pid1_is_over_400_lines() -> None:
    """A module over this has grown a second subject: split it by subject."""
    long = {
        name: lines
        for name, path in module_names(REPO / "pid1", "pid1").items()
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"over {MAX_MODULE_LINES} lines: {long}"
