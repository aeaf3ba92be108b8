"""The design's import rules hold, so an edge install without torch keeps working.

Three checks: a fresh interpreter that imports every module of the torch-free parts has no torch,
ultralytics or mlflow in ``sys.modules`` (the MLflow client is imported lazily, by the registry's
MLflow back-end alone); a static scan of every import statement (including the ones
inside functions) against the table in ``docs/architecture.md``, where a part reaches another part
only through that part's package (``from lineguard.inference import Detector``), never its
modules; and the graph of imports between product modules has no cycle.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PARTS = ("inference", "edge", "training", "labeling", "registry", "monitoring", "benchmarks")
TORCH_FREE = ("inference", "edge", "labeling", "registry", "monitoring")
HEAVY = {"torch", "torchvision", "ultralytics", "albumentations"}
# Imported lazily by the MLflow registry back-end alone: importing a part never loads it.
LAZY = {"mlflow"}
WIRING = {"cli.py", "demo.py", "retrain.py"}  # core modules that drive every part, lazily inside commands
FOLDER = {part: ROOT / part for part in PARTS} | {"inference": ROOT / "lineguard" / "inference"}

# part -> the other parts it may import (through their package). "core" is lineguard's own modules.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "inference": set(),
    "monitoring": set(),
    "labeling": {"inference", "monitoring"},  # Detections of the frames it samples
    "edge": {"inference", "monitoring", "labeling"},  # the review sampler and queue run on the edge box
    "registry": {"inference", "monitoring", "labeling"},  # a promotion refreshes QA's waiting tasks
    "training": {"inference", "registry", "monitoring"},
    "benchmarks": set(PARTS) | {"core"},
}


def _module_name(part: str, path: Path) -> str:
    base = ROOT / "lineguard" if part == "core" else FOLDER[part]
    pieces = list(path.relative_to(base).with_suffix("").parts)
    if pieces[-1] == "__init__":
        pieces = pieces[:-1]
    prefix = ["lineguard"] if part == "core" else ["lineguard", part]
    return ".".join(prefix + pieces)


def _part_files() -> list[tuple[str, Path]]:
    """Every product file with its part; core is ``lineguard/`` minus the parts' folders and links."""
    core = ROOT / "lineguard"
    files = [
        ("core", p)
        for p in sorted(core.rglob("*.py"))
        if p.relative_to(core).parts[0] not in PARTS and not p.parent.is_symlink()
    ]
    for part in PARTS:
        files += [(part, p) for p in sorted(FOLDER[part].rglob("*.py"))]
    return files


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, imported names) of every absolute import in the file, nested ones included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module, [alias.name for alias in node.names]))
    return found


@pytest.mark.parametrize("part", TORCH_FREE)
def test_importing_a_torch_free_part_loads_no_torch(part: str) -> None:
    modules = [_module_name(part, p) for p in sorted(FOLDER[part].glob("*.py"))]
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(HEAVY | LAZY)!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_every_import_follows_the_design_table() -> None:
    problems = []
    for part, path in _part_files():
        rel = path.relative_to(ROOT)
        for line, module, _ in _imports(path):
            top = module.split(".")[0]
            if part in TORCH_FREE and top in HEAVY:
                problems.append(f"{rel}:{line} imports {module} (torch-free part)")
            if part in TORCH_FREE and top in LAZY and rel != Path("registry/mlflow_backend.py"):
                problems.append(f"{rel}:{line} imports {module} (only registry/mlflow_backend.py may)")
            if top != "lineguard" or part == "benchmarks":
                continue
            pieces = module.split(".")
            target = pieces[1] if len(pieces) > 1 and pieces[1] in PARTS else "core"
            if target == part:
                continue
            if part == "core" and path.name not in WIRING and target != "core":
                problems.append(f"{rel}:{line} core imports {module}")
            elif part != "core" and target != "core" and target not in ALLOWED[part]:
                problems.append(f"{rel}:{line} {part} may not import {target} ({module})")
            elif part != "core" and target != "core" and len(pieces) > 2:
                problems.append(f"{rel}:{line} reaches into {module}; import from lineguard.{target}")
    assert problems == []


def _import_graph() -> dict[str, set[str]]:
    """Module -> the product modules it imports; ``from pkg import mod`` counts as importing ``pkg.mod``."""
    files = {_module_name(part, path): path for part, path in _part_files()}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        for _, module, names in _imports(path):
            targets = {f"{module}.{n}" for n in names if f"{module}.{n}" in files}
            if len(targets) < len(names) or not names:
                targets.add(module)
            graph[name] |= targets & files.keys()
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = [stack.pop()]
            while component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({}, []),
        ({"a": {"b"}, "b": set()}, []),
        ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
        ({"a": {"a"}}, [["a"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ],
)
def test_cycle_finder(graph: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert _cycles(graph) == expected


def test_no_import_cycle_between_product_modules() -> None:
    graph = _import_graph()
    assert "lineguard.edge.daemon" in graph and "lineguard.inference.engine" in graph
    assert _cycles(graph) == []
