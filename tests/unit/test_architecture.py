"""The house's shape, checked: small modules, no import circles, packages that say what
is inside them. Layer rules themselves are import-linter's contracts (pyproject.toml)."""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "revenipe"
MAX_MODULE_LINES = 600


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "migrations" not in p.parts)


def _packages() -> list[Path]:
    return sorted(p.parent for p in SRC.rglob("__init__.py") if "migrations" not in p.parts)


def test_no_module_is_over_600_lines() -> None:
    long = {
        str(p.relative_to(SRC)): n
        for p in _modules()
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}, f"split these modules (a newcomer reads them last): {long}"


def _cycles(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.find_modules_directly_imported_by(node) & modules):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(modules):
        if module not in index:
            visit(module)
    return found


def test_the_circle_finder_finds_circles() -> None:
    graph = grimp.ImportGraph()
    for name in ("a", "b", "c", "d"):
        graph.add_module(name)
    graph.add_import(importer="a", imported="b")
    graph.add_import(importer="b", imported="c")
    graph.add_import(importer="c", imported="a")
    graph.add_import(importer="c", imported="d")
    assert _cycles(graph, {"a", "b", "c", "d"}) == [["a", "b", "c"]]


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("revenipe")


@pytest.mark.parametrize("area", ["revenipe.services", "revenipe.storage", "revenipe.engine"])
def test_no_import_circle(graph: grimp.ImportGraph, area: str) -> None:
    # A package's __init__ importing its own modules (to name them for callers) is not a
    # circle between modules; every other edge counts, imports inside functions included.
    modules = {m for m in graph.modules if m == area or m.startswith(area + ".")}
    pruned = grimp.ImportGraph()
    for m in modules:
        pruned.add_module(m)
    for m in modules:
        for imported in graph.find_modules_directly_imported_by(m) & modules:
            if not imported.startswith(m + "."):
                pruned.add_import(importer=m, imported=imported)
    assert _cycles(pruned, modules) == []


def _children(package: Path) -> list[str]:
    names = [
        p.stem
        for p in package.glob("*.py")
        if p.name != "__init__.py" and not p.name.startswith("_")
    ]
    names += [
        p.name
        for p in package.iterdir()
        if p.is_dir() and (p / "__init__.py").exists() and p.name != "migrations"
    ]
    return sorted(names)


@pytest.mark.parametrize(
    "package", _packages(), ids=lambda p: str(p.relative_to(SRC.parent)) or "revenipe"
)
def test_package_docstring_names_its_modules(package: Path) -> None:
    docstring = ast.get_docstring(ast.parse((package / "__init__.py").read_text())) or ""
    if package == SRC:
        return  # the top package is the public API; its docstring says what that is
    missing = [name for name in _children(package) if f"`{name}" not in docstring]
    assert missing == [], (
        f"{package.relative_to(SRC.parent)}/__init__.py's docstring should name, in "
        f"backquotes, what each of these modules is for: {missing}"
    )
