"""Import rules of the engine and inference layers (DESIGN.md, "Where it grows next"):
models never import the engine, engine/inference import medseg's own modules at module level,
and there is no import cycle among them."""

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


def test_models_never_import_the_engine():
    bad = [(p.name, n) for p in _files("models") for n, _ in _imports(p) if n.startswith("medseg.engine")]
    assert not bad, bad


def test_engine_and_inference_import_medseg_at_module_level():
    bad = [(_module_name(p), n) for p in _files("engine", "inference") for n, inner in _imports(p) if inner]
    assert not bad, bad


def test_no_import_cycle_in_engine_and_inference():
    modules = {_module_name(p): p for p in _files("engine", "inference")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported, _ in _imports(path):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            assert state.get(nxt) != 1, "import cycle: " + " -> ".join(path + [node, nxt])
            if nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_importing_models_loads_no_engine_module():
    code = "import sys, medseg.models; print([m for m in sys.modules if m.startswith('medseg.engine')])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
