"""The package's import graph: no cycles (in-function imports included), no matplotlib backend
chosen at import in library code, every module importable on its own."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import flowmoe

ROOT = Path(flowmoe.__file__).parent


def module_names() -> list[str]:
    return sorted(["flowmoe"] + [m.name for m in pkgutil.walk_packages([str(ROOT)], prefix="flowmoe.")])


def _path(name: str) -> Path:
    rel = Path(*name.split(".")[1:])
    pkg = ROOT / rel / "__init__.py"
    return pkg if pkg.is_file() else (ROOT / rel).with_suffix(".py")


def imports_of(name: str, known: set[str]) -> set[str]:
    """flowmoe modules imported anywhere in module ``name`` (top level or inside functions)."""
    path = _path(name)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def import_graph() -> dict[str, set[str]]:
    names = module_names()
    known = set(names)
    graph = {n: imports_of(n, known) for n in names}
    # A package's __init__ re-exporting its submodules is not a cycle with them.
    for n in names:
        graph[n] = {t for t in graph[n] if not n.startswith(t + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for t in sorted(graph.get(n, ())):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state:
                cyc = visit(t)
                if cyc:
                    return cyc
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            cyc = visit(n)
            if cyc:
                return cyc
    return None


def test_the_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, " → ".join(cycle)


def test_library_modules_do_not_pick_a_matplotlib_backend():
    for name in module_names():
        text = _path(name).read_text(encoding="utf-8")
        assert "matplotlib.use(" not in text, name


@pytest.mark.parametrize("name", module_names())
def test_every_module_imports(name):
    importlib.import_module(name)
