"""A real station process for the benchmarks that need one or many (the fleet, the OPC UA mirror)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

__all__ = ["start_station"]


def start_station(config: Path, log: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``lineguard edge run --config CONFIG`` with its output appended to ``log`` (warnings and up)."""
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lineguard.cli",
                "edge",
                "run",
                "--config",
                str(config),
                "--log-level",
                "warning",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
