"""Fixtures of the registry tests: two hand-built detectors that differ in a known way, an eval set,
and a registry on each back-end (the file registry and a real MLflow tracking server)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.mlflow import mlflow_registry, require_mlflow
from support.signal_model import build_signal_onnx, write_eval_set

from lineguard.registry import Registry


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``weak`` (1.0.0) misses faint defects; ``good`` (2.0.0, parent 1.0.0) catches them all."""
    root = tmp_path_factory.mktemp("signal_models")
    build_signal_onnx(root / "weak", version="1.0.0", contrast=0.45)
    build_signal_onnx(
        root / "good",
        version="2.0.0",
        contrast=0.19,
        parent="1.0.0",
        dataset_hash="d" * 64,
        training_run="run-7",
    )
    build_signal_onnx(root / "good3", version="3.0.0", contrast=0.2, parent="2.0.0")
    return {"weak": root / "weak", "good": root / "good", "good3": root / "good3"}


@pytest.fixture(scope="session")
def eval_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_eval_set(tmp_path_factory.mktemp("eval") / "set", units=60, seed=11)


@pytest.fixture(scope="session")
def mlflow_url() -> str:
    """The shared MLflow tracking server (``scripts/mlflow_server.sh``); skipped when absent (CI: fails)."""
    return require_mlflow()


@pytest.fixture(params=["file", "mlflow"])
def registry_backend(request: pytest.FixtureRequest) -> str:
    """Each registry test runs on both back-ends: the rules must not depend on where records live."""
    return str(request.param)


@pytest.fixture
def registry(tmp_path: Path, registry_backend: str, request: pytest.FixtureRequest) -> Registry:
    if registry_backend == "file":
        return Registry(tmp_path / "registry")
    return mlflow_registry(request.getfixturevalue("mlflow_url"), tmp_path / "registry")
