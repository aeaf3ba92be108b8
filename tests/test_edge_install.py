"""The edge installs and runs from a clean venv holding exactly what ``Dockerfile.edge`` installs.

No container engine runs on CI machines, so this is the image test: the same ``pip install
'.[edge]'`` into a fresh venv, then the daemon's self-check on a real ONNX model, and proof that
neither torch nor ultralytics came along.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]

pytestmark = pytest.mark.slow


def _image_extra() -> str:
    dockerfile = (ROOT / "Dockerfile.edge").read_text()
    default = re.search(r"^ARG VARIANT=(\w+)$", dockerfile, re.M)
    assert default is not None, "Dockerfile.edge lost its VARIANT build argument"
    assert 'pip install --no-cache-dir ".[${VARIANT}]"' in dockerfile
    return default.group(1)


@pytest.fixture(scope="module")
def edge_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("edge-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    src = tmp_path_factory.mktemp("edge-src") / "lineguard"
    shutil.copytree(
        ROOT,
        src,
        symlinks=True,
        ignore=shutil.ignore_patterns(".venv*", ".git", "build", "var", "runs", "__pycache__", "*.egg-info"),
    )
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--no-cache-dir", f"{src}[{_image_extra()}]"],
        check=True,
        capture_output=True,
        text=True,
    )
    return venv


def test_edge_venv_has_no_torch_and_passes_the_self_check(
    edge_venv: Path, tiny_model: Path, tmp_path: Path
) -> None:
    python = edge_venv / "bin" / "python"
    probe = "import importlib.util as u; print([m for m in ('torch', 'ultralytics') if u.find_spec(m)])"
    assert (
        subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
        == "[]"
    )
    config = tmp_path / "station.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "station": {"data_dir": str(tmp_path / "var")},
                "model": {"path": str(tiny_model / "model.onnx")},
                "mqtt": {"enabled": False},
            }
        )
    )
    check = subprocess.run(
        [edge_venv / "bin" / "lineguard", "edge", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "Traceback" not in check.stderr
