"""The benchmark scripts (make bench, bench-shards, quality) are not run by the suite, and their
own dependencies (the `bench` extra) may be missing here: check at least that every name they
import from this project still exists, so a refactor cannot break them silently."""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).parent.parent / "benchmarks").glob("*.py"))


def project_imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every `from recsys... import name` in the file, nested ones too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "recsys":
            found += [(node.module, alias.name) for alias in node.names]
    return found


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.name)
def test_benchmark_imports_from_the_project_exist(script: Path) -> None:
    imports = project_imports(script)
    assert imports, f"{script.name} imports nothing from recsys"
    for module, name in imports:
        loaded = importlib.import_module(module)
        submodule = hasattr(loaded, "__path__") and importlib.util.find_spec(f"{module}.{name}")
        assert hasattr(loaded, name) or submodule, (
            f"{script.name}: `from {module} import {name}`: no such name"
        )
