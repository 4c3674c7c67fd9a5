"""Import rules of the engine and inference layers beyond the import-graph test
(tests/architecture: no cycles, no climbing): they import medseg's own modules at module
level, and loading the models never loads the engine."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import medseg

PACKAGE = Path(medseg.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported medseg name, inside a function?) for every import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    inner = {
        id(node)
        for fn in ast.walk(tree)
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
        for node in ast.walk(fn)
        if isinstance(node, (ast.Import, ast.ImportFrom))
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found += [(n, id(node) in inner) for n in names if n.split(".")[0] == "medseg"]
    return found


def _files(*subpackages: str) -> list[Path]:
    return sorted(p for sub in subpackages for p in (PACKAGE / sub).rglob("*.py"))


def test_engine_and_inference_import_medseg_at_module_level():
    bad = [(_module_name(p), n) for p in _files("engine", "inference") for n, inner in _imports(p) if inner]
    assert not bad, bad


def test_importing_models_loads_no_engine_module():
    code = "import sys, medseg.models; print([m for m in sys.modules if m.startswith('medseg.engine')])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
