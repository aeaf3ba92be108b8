"""The design's import rules hold, so an edge install without torch keeps working.

Two checks: a fresh interpreter that imports every module of the torch-free parts has no torch
or ultralytics in ``sys.modules``; and a static scan of every import statement (including the
ones inside functions) against the table in ARCHITECTURE.md. A part reaches another part only
through that part's package (``from lineguard.edge import Detector``), never its modules.
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
FOLDER = {part: ROOT / part for part in PARTS} | {"inference": ROOT / "lineguard" / "inference"}
HEAVY = {"torch", "torchvision", "ultralytics", "albumentations"}
WIRING = {"cli.py", "demo.py", "retrain.py"}  # core modules that drive every part, lazily inside commands

# part -> the other parts it may import (through their package). "core" is lineguard's own modules.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "inference": set(),
    "edge": {"inference", "monitoring", "labeling"},  # the review sampler and queue run on the edge box
    "training": {"inference", "registry", "monitoring"},
    "labeling": {"inference", "monitoring"},  # Detections of the frames it samples
    "registry": {"inference", "monitoring"},
    "monitoring": set(),
    "benchmarks": set(PARTS) | {"core"},
}


def _modules(part: str) -> list[str]:
    folder = FOLDER[part]
    return [
        f"lineguard.{part}" + ("" if p.stem == "__init__" else f".{p.stem}")
        for p in sorted(folder.glob("*.py"))
    ]


def _part_files() -> list[tuple[str, Path]]:
    files = [("core", p) for p in sorted((ROOT / "lineguard").glob("*.py"))]
    for part in PARTS:
        files += [(part, p) for p in sorted(FOLDER[part].rglob("*.py"))]
    return files


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


@pytest.mark.parametrize("part", TORCH_FREE)
def test_importing_a_torch_free_part_loads_no_torch(part: str) -> None:
    code = (
        "import importlib, json, sys\n"
        f"for name in {_modules(part)!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(HEAVY)!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_every_import_follows_the_design_table() -> None:
    problems = []
    for part, path in _part_files():
        rel = path.relative_to(ROOT)
        for line, module in _imports(path):
            top = module.split(".")[0]
            if part in TORCH_FREE and top in HEAVY:
                problems.append(f"{rel}:{line} imports {module} (torch-free part)")
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
