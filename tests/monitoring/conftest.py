"""Fixtures of the monitoring tests: the Prometheus binaries (Debian package ``prometheus``).

Without them the tests that need them are skipped with the install command, except in CI
(``CI=true``), where a missing binary fails the test: CI must install the package.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


def _binary(name: str) -> Path:
    found = shutil.which(name)
    if found is None:
        why = f"{name} is not installed: apt-get install -y prometheus"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{why} (CI=true: these tests must run)")
        pytest.skip(why)
    return Path(found)


@pytest.fixture(scope="session")
def promtool() -> Path:
    return _binary("promtool")


@pytest.fixture(scope="session")
def prometheus_bin() -> Path:
    return _binary("prometheus")
