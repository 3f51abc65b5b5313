"""The source tree keeps its shape: small modules, and dependencies that point one way.

``aws/`` -> ``providers/`` -> engines (``jobs/``, ``serving/``) -> interfaces (``store/``,
``objects/``, ``compute/``). Engines never import the protocol layer, the providers or the console;
the model server (which runs inside model-server processes) imports nothing server-side.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "opensage"
MAX_LINES = 500  # split a module before it passes this


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "migrations" not in p.parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("opensage")}


def _package(path: Path) -> str:
    rel = path.relative_to(SRC).parts
    return rel[0] if len(rel) > 1 else rel[0].removesuffix(".py")


def test_no_module_passes_the_size_limit() -> None:
    big = {str(p.relative_to(SRC)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert big == {}, f"split these modules (more than {MAX_LINES} lines): {big}"


# package -> packages it must never import
FORBIDDEN = {
    "jobs": {"aws", "providers", "console", "app", "server", "cli"},
    "tuning": {"aws", "providers", "console", "app", "server", "cli"},  # an engine over jobs/, as jobs/ is
    "serving": {"aws", "providers", "console", "jobs", "app", "server", "cli"},  # jobs use serving, not back
    "store": {"aws", "providers", "console", "jobs", "serving", "images", "app", "server", "cli"},
    "objects": {"aws", "providers", "console", "jobs", "serving", "images", "app", "server", "cli"},
    "compute": {"aws", "providers", "console", "jobs", "serving", "app", "server", "cli"},
    "images": {"aws", "providers", "console", "jobs", "serving", "store", "app", "server", "cli"},
    "providers": {"console", "app", "server", "cli"},
    "aws": {"console", "app", "server", "cli"},
}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_dependencies_point_one_way(package: str) -> None:
    wrong = {}
    for path in _modules():
        if _package(path) != package:
            continue
        bad = {m for m in _imports(path) if m.split(".")[1:2] and m.split(".")[1] in FORBIDDEN[package]}
        if bad:
            wrong[str(path.relative_to(SRC))] = sorted(bad)
    assert wrong == {}, f"{package}/ must not import {sorted(FORBIDDEN[package])}: {wrong}"


def test_the_model_server_imports_nothing_server_side() -> None:
    path = SRC / "serving" / "modelserver.py"
    server_side = {"aws", "providers", "console", "jobs", "store", "app", "server", "compute"}
    assert {m for m in _imports(path) if m.split(".")[1:2] and m.split(".")[1] in server_side} == set()


def test_test_modules_have_unique_names() -> None:
    """pytest imports test modules by base name (the test folders are no packages): two alike break collection."""
    tests = Path(__file__).resolve().parents[1]
    names = [p.name for p in tests.rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []
