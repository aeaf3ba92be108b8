"""A real station running on the synthetic line in a thread, with its HTTP API on a free port."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lineguard.config import load_config
from lineguard.edge.daemon import EdgeDaemon
from support.mqtt import wait_until

__all__ = ["running_station"]


@contextmanager
def running_station(
    data_dir: Path,
    model_dir: Path,
    *,
    profile: str = "development",
    mode: str = "continuous",
    first_unit: bool = True,
    **sections: dict[str, Any],
) -> Iterator[tuple[EdgeDaemon, str]]:
    """``(daemon, base URL)`` of a station judging the synthetic line until the block ends.

    A section given (``camera={"kind": "gige", ...}``) is merged over these defaults; ``first_unit``
    waits for a unit before the block starts (a triggered station has none until it is triggered).
    """
    overrides: dict[str, Any] = {
        "mode": mode,
        "station": {"station": "s1", "data_dir": str(data_dir), "profile": profile},
        "camera": {"kind": "synthetic", "fps": 20, "synthetic_imgsz": 160, "synthetic_seed": 3},
        "model": {"path": str(model_dir / "model.onnx"), "threads": 1, "warmup_runs": 1},
        "mqtt": {"enabled": False},
        "http": {"port": 0},
        "sampling": {"enabled": False},
    }
    for name, values in sections.items():
        overrides[name] = overrides.get(name, {}) | values
    daemon = EdgeDaemon(load_config(None, environ={}, overrides=overrides))
    loop = threading.Thread(target=daemon.run, daemon=True)
    loop.start()
    try:
        wait_until(lambda: daemon.http_port is not None, 15, "the HTTP API")
        base = f"http://127.0.0.1:{daemon.http_port}"
        if first_unit:
            wait_until(lambda: daemon.summary.units > 0, 15, "the first unit")
        yield daemon, base
    finally:
        daemon.stop()
        loop.join(20)
