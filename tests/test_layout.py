"""The test tree keeps its own rules (issue 14, item 6).

- Builders live in helper modules under ``tests/``: no module imports a test module.
- Every test folder is a package, so two ``test_x.py`` in different folders cannot collide.
- Sample areas come from the ``sample_area`` fixture of ``tests/conftest.py``: only it and
  the generator's own tests (``tests/sample/``) call ``generate_sample``.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
GENERATOR_CALLERS = {
    "conftest.py",
    "sample/test_sample.py",
    "sample/test_options.py",  # the hard and RGB-only options themselves, on 300 px scenes
    "sample/test_decoys.py",  # the decoys option, on 300 px scenes
}


def _python_files() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts)


def _imported_modules(path: Path) -> set[str]:
    """Every module an ``import`` or ``from ... import`` names, also inside functions."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _is_test_module(name: str) -> bool:
    return name.startswith("tests.") and name.rsplit(".", 1)[-1].startswith("test_")


def test_no_module_imports_a_test_module():
    """A builder two test modules need goes into a helper module (tests/detections.py, ...)."""
    found = {
        str(path.relative_to(TESTS)): sorted(filter(_is_test_module, _imported_modules(path)))
        for path in _python_files()
    }
    assert {k: v for k, v in found.items() if v} == {}


def test_every_test_folder_is_a_package():
    """``tests/__init__.py`` and one in each subfolder: modules are ``tests.<folder>.test_x``."""
    folders = {path.parent for path in TESTS.rglob("test_*.py")}
    assert folders > {TESTS}, "the tests are in subfolders"
    assert [str(f) for f in sorted(folders) if not (f / "__init__.py").is_file()] == []


def test_sample_areas_come_from_the_fixture():
    """Generating a sample takes seconds: one fixture does it once per (size, seed)."""
    callers = set()
    for path in _python_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        calls = (node.func for node in ast.walk(tree) if isinstance(node, ast.Call))
        if any(getattr(f, "id", getattr(f, "attr", None)) == "generate_sample" for f in calls):
            callers.add(path.relative_to(TESTS).as_posix())
    assert callers == GENERATOR_CALLERS
