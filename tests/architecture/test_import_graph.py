"""The import graph of medseg: no cycles, and no import that climbs the layer table.

Every module under ``medseg/`` is parsed with ``ast`` (nothing is imported), and every import
statement anywhere in it counts: module level, inside functions, inside ``try``. Imports under
``if TYPE_CHECKING:`` do not run, so they are left out of the cycle check but still must respect
the layers. ``importlib.import_module("medseg....")`` with a literal name counts as an import.

The layer table below is also printed in ``docs/design.md`` (a test keeps the two equal).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "medseg"

# Lowest first. A module may import its own layer and the layers below, never a higher one.
# The key is the first component under medseg (a subpackage or a top-level module).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "atomic", "constants", "budget"),
    ("data", "metrics", "registry"),
    ("models", "losses", "config"),
    ("inference", "postprocess"),
    ("engine",),
    ("plan", "benchmark", "export", "export_formats"),
    ("cli", "cli_parser", "cli_output", "cli_workflow", "api", "__init__"),
)
# Same-layer pairs that must stay independent of each other (both directions).
FORBIDDEN_PAIRS: tuple[tuple[str, str], ...] = (("models", "losses"),)

LAYER_OF = {name: rank for rank, names in enumerate(LAYERS) for name in names}


@dataclass(frozen=True)
class Edge:
    source: str  # importing module, dotted
    target: str  # imported medseg module, dotted
    line: int
    in_function: bool
    type_only: bool


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(source: str, is_package: bool, level: int, module: str | None) -> str:
    """The absolute dotted name of ``from <level dots><module> import ...`` inside ``source``."""
    if level == 0:
        return module or ""
    base = source.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _closest_module(name: str, modules: Collection[str]) -> str | None:
    """``name`` itself when it is a medseg module, else its longest prefix that is one."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                ids.update(id(n) for n in ast.walk(child))
    return ids


def _function_nodes(tree: ast.AST) -> set[int]:
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            ids.update(id(n) for n in ast.walk(node) if n is not node)
    return ids


def _imported_names(node: ast.AST, source: str, is_package: bool) -> list[str]:
    """Dotted names an import node brings in (``from a import b`` -> ``a.b``, which falls back
    to ``a`` when ``b`` is not a module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        base = _resolve(source, is_package, node.level, node.module)
        return [f"{base}.{alias.name}" for alias in node.names]
    if (
        isinstance(node, ast.Call)
        and ast.unparse(node.func) in ("importlib.import_module", "import_module")
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        return [node.args[0].value]
    return []


def module_edges(source: str, is_package: bool, text: str, modules: Collection[str]) -> list[Edge]:
    """The medseg-internal imports of one module's source text."""
    tree = ast.parse(text)
    type_only, in_func = _type_checking_nodes(tree), _function_nodes(tree)
    edges = []
    for node in ast.walk(tree):
        for name in _imported_names(node, source, is_package):
            target = _closest_module(name, modules)
            if target is None or target == source or not target.startswith("medseg"):
                continue
            edges.append(Edge(source, target, node.lineno, id(node) in in_func, id(node) in type_only))
    return edges


def import_edges() -> list[Edge]:
    modules = all_modules()
    edges: list[Edge] = []
    for source, path in modules.items():
        text = path.read_text(encoding="utf-8")
        edges += module_edges(source, path.name == "__init__.py", text, modules)
    return edges


def find_cycles(edges: list[Edge]) -> list[tuple[list[str], list[str]]]:
    """Every strongly connected component with more than one module (Tarjan), each given as
    with one concrete cycle through it: (cycle, all modules of the component)."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        if not e.type_only:
            graph.setdefault(e.source, set()).add(e.target)
            graph.setdefault(e.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [(_cycle_in(comp, graph), sorted(comp)) for comp in components]


def _cycle_in(comp: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first search)."""
    start = min(comp)
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & comp):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle in component {sorted(comp)}")


def layer_key(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_violations(edges: list[Edge]) -> list[str]:
    problems = []
    for e in edges:
        src, dst = layer_key(e.source), layer_key(e.target)
        if src == dst:
            continue
        where = f"{e.source} (line {e.line}) imports {e.target}"
        if LAYER_OF[dst] > LAYER_OF[src]:
            problems.append(f"{where}: layer '{dst}' is above '{src}'")
        elif {src, dst} in [set(p) for p in FORBIDDEN_PAIRS]:
            problems.append(f"{where}: '{src}' and '{dst}' must not import each other")
    return sorted(set(problems))


def test_every_module_has_a_layer():
    missing = sorted({layer_key(m) for m in all_modules()} - set(LAYER_OF))
    assert not missing, f"add these medseg modules/subpackages to LAYERS (and docs/design.md): {missing}"


def test_the_parser_sees_every_kind_of_import():
    modules = {
        "medseg",
        "medseg.errors",
        "medseg.data",
        "medseg.data.readers",
        "medseg.engine",
        "medseg.engine.a",
    }
    text = """
import numpy
import medseg.errors
from . import readers
from .readers import read_image
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from medseg.engine import a
def f():
    from medseg.engine.a import thing
    return importlib.import_module("medseg.errors")
"""
    got = {
        (e.target, e.line, e.in_function, e.type_only)
        for e in module_edges("medseg.data", True, text, modules)
    }
    assert got == {
        ("medseg.errors", 3, False, False),
        ("medseg.data.readers", 4, False, False),
        ("medseg.data.readers", 5, False, False),
        ("medseg.engine.a", 8, False, True),
        ("medseg.engine.a", 10, True, False),
        ("medseg.errors", 11, True, False),
    }
    # relative imports from a plain module resolve against its package
    edges = module_edges("medseg.data.x", False, "from ..errors import E\nfrom .readers import r", modules)
    assert [e.target for e in edges] == ["medseg.errors", "medseg.data.readers"]
    assert len(import_edges()) > 50  # and on the real tree it finds the graph, not nothing


def test_the_cycle_finder_and_layer_check_catch_what_they_should():
    made_up = [
        Edge("medseg.engine.a", "medseg.engine.b", 1, False, False),
        Edge("medseg.engine.b", "medseg.engine.c", 1, True, False),
        Edge("medseg.engine.c", "medseg.engine.a", 1, False, False),
        Edge("medseg.engine.c", "medseg.engine.d", 1, False, False),
        Edge("medseg.data.x", "medseg.data.y", 1, False, False),
        Edge("medseg.data.y", "medseg.data.x", 1, False, True),  # TYPE_CHECKING only: no cycle
    ]
    loop = ["medseg.engine.a", "medseg.engine.b", "medseg.engine.c"]
    assert find_cycles(made_up) == [([*loop, "medseg.engine.a"], loop)]
    climbing = [
        Edge("medseg.metrics.report", "medseg.engine.trainer", 7, True, False),
        Edge("medseg.models.unet", "medseg.losses.region", 3, False, False),
        Edge("medseg.engine.trainer", "medseg.metrics.report", 9, False, False),
    ]
    assert layer_violations(climbing) == [
        "medseg.metrics.report (line 7) imports medseg.engine.trainer: layer 'engine' is above 'metrics'",
        "medseg.models.unet (line 3) imports medseg.losses.region: 'models' and 'losses' must not import each other",
    ]


def test_no_import_cycles():
    cycles = find_cycles(import_edges())
    lines = [f"{' -> '.join(loop)}   (modules in this knot: {', '.join(knot)})" for loop, knot in cycles]
    assert not cycles, "import cycles:\n" + "\n".join(lines)


def test_imports_never_climb_the_layers():
    problems = layer_violations(import_edges())
    assert not problems, "imports against the layer table:\n" + "\n".join(problems)


def test_design_doc_shows_the_same_layer_table():
    text = (REPO / "docs" / "design.md").read_text(encoding="utf-8")
    block = text.split("<!-- layers:begin -->")[1].split("<!-- layers:end -->")[0]
    rows = [
        re.findall(r"`([\w_]+)`", line.split("|")[2])
        for line in block.splitlines()
        if re.match(r"\|\s*\d", line)
    ]
    assert tuple(tuple(r) for r in rows) == LAYERS
