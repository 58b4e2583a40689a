"""The package's structural rules, checked on every test run so later work cannot undo them.

- no import cycles between modules (imports inside functions count);
- no import that goes up the layer order: foundation < detection, overlay, sample < registry,
  learning < outputs < ops < cli;
- no function longer than 120 lines.

The import graph is read from the source with :mod:`ast`, never by importing it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"
MAX_FUNCTION_LINES = 120

LAYERS = {
    "pipeline.config": 0,
    "pipeline.schema": 0,
    "pipeline.errors": 0,
    "pipeline.units": 0,
    "pipeline.bands": 0,
    "pipeline.atomic": 0,
    "pipeline.testing": 0,
    "pipeline": 0,
    "pipeline.detection": 1,
    "pipeline.overlay": 1,
    "pipeline.sample": 1,
    "pipeline.registry": 2,
    "pipeline.learning": 2,
    "pipeline.outputs": 3,
    "pipeline.ops": 4,
    "pipeline.cli": 5,
    "pipeline.__main__": 5,
}
"""Layer of each top-level module or subpackage; a module may import only its own layer or
lower ones."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Modules of the package that ``name`` imports, anywhere in its source."""
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")[: len(name.split(".")) - node.level + is_pkg]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in found if m in known and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _layer(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in LAYERS:
            return LAYERS[key]
    raise AssertionError(f"{module} is in no layer; add it to LAYERS in {__file__}")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _is_package_face(module: str, target: str) -> bool:
    """A package importing its own submodules (its ``__init__`` handing names on)."""
    return target.startswith(module + ".")


def test_no_import_cycles():
    """No two modules import each other, directly or around a loop."""
    graph = _graph()
    graph = {m: {t for t in ts if not _is_package_face(m, t)} for m, ts in graph.items()}
    assert _cycles(graph) == []


def test_no_import_goes_up_the_layers():
    """foundation < detection, overlay, sample < registry < outputs < ops < cli."""
    upward = [
        f"{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)})"
        for m, targets in _graph().items()
        for t in sorted(targets)
        if _layer(t) > _layer(m)
    ]
    assert upward == []


def test_every_module_has_a_layer():
    """A new top-level module or subpackage must be placed in the layer order."""
    for module in _modules():
        _layer(module)


def test_cycle_finder_finds_a_loop():
    """The checker itself: a loop of three and a self-contained pair are reported."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"e"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=_module_name)
def test_functions_are_short(path):
    """No function or method is longer than 120 lines."""
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines, line {node.lineno})"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == []
