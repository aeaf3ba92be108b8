"""A real MLflow tracking server for the registry's MLflow back-end tests.

``scripts/mlflow_server.sh start`` (``make test`` runs it) starts one in its own venv with a fresh
PostgreSQL backend store and prints ``LINEGUARD_TEST_MLFLOW_URL``. ``require_mlflow`` hands that URL
to the tests, or skips them with the command to start one (in CI, ``CI=true``, that is a failure;
under ``make test`` any skip fails the run). Tests share the server: each registry it backs gets a
registered-model prefix of its own (``mlflow_registry``), so no test sees another's models.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import NoReturn

import httpx
import pytest

from lineguard.registry import Registry
from lineguard.registry.mlflow_backend import MlflowBackend

__all__ = ["mlflow_registry", "require_mlflow"]

_START_HINT = 'start one with: eval "$(scripts/mlflow_server.sh start)"'


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"an MLflow tracking server is required in CI: {reason}", pytrace=False)
    pytest.skip(f"MLflow not available: {reason}; {_START_HINT}")


def require_mlflow() -> str:
    """The shared server's URL from the environment, or skip (fail in CI) saying how to start it."""
    url = os.environ.get("LINEGUARD_TEST_MLFLOW_URL", "").rstrip("/")
    if not url:
        _unavailable("LINEGUARD_TEST_MLFLOW_URL is not set")
    try:
        httpx.get(f"{url}/health", timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        _unavailable(f"{url} does not answer ({type(exc).__name__})")
    return url


def mlflow_registry(url: str, root: Path, prefix: str | None = None) -> Registry:
    """A registry on the shared server under a fresh registered-model prefix, artifacts in ``root``."""
    prefix = prefix if prefix is not None else f"t{uuid.uuid4().hex[:12]}-"
    return Registry(root, MlflowBackend(url, root, prefix))
