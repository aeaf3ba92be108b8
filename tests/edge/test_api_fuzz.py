"""Schemathesis against the running edge API: no generated request may cause a 5xx.

The station's HTTP API faces plant networks; a malformed upload or query must get a 4xx that names
the problem, never crash a handler. Examples are bounded so the test stays a few seconds long.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lineguard.config import load_config
from lineguard.edge import EdgeDaemon

TOKEN = "fuzz-token-0123456789"


@pytest.fixture(scope="module")
def running_station(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[EdgeDaemon]:
    root = tmp_path_factory.mktemp("fuzz")
    (root / "token").write_text(TOKEN)
    cfg = load_config(
        None,
        environ={},
        overrides={
            "station": {"data_dir": str(root / "var")},
            "camera": {"kind": "synthetic", "fps": 20, "synthetic_imgsz": 160},
            "model": {"path": str(tiny_model / "model.onnx"), "threads": 1, "warmup_runs": 1},
            "mqtt": {"enabled": False},
            "http": {"port": 0, "token_file": str(root / "token"), "max_upload_bytes": 64 * 1024},
            "sampling": {"enabled": False},
        },
    )
    station = EdgeDaemon(cfg)
    loop = threading.Thread(target=station.run, daemon=True)  # camera units need the running loop
    loop.start()
    while station.http_port is None and loop.is_alive():
        time.sleep(0.05)
    try:
        yield station
    finally:
        station.stop()
        loop.join(30)


@pytest.mark.slow
def test_no_generated_request_makes_the_api_fail_with_5xx(
    running_station: EdgeDaemon, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{running_station.http_port}/openapi.json"
    cli = Path(sys.executable).with_name("schemathesis")
    out = subprocess.run(
        [
            str(cli),
            "run",
            url,
            "--checks",
            "not_a_server_error",
            "--header",
            f"Authorization: Bearer {TOKEN}",
            "--max-examples",
            "15",
            "--seed",
            "1",
            "--generation-database",
            "none",
            "--max-time",
            "60",
            # An endless MJPEG stream has no response to check; its auth is tested in test_page.py.
            "--exclude-path",
            "/v1/live.mjpeg",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false", "NO_COLOR": "1"},
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    # Every operation of the spec was fuzzed, the upload among them (schemathesis' summary).
    assert "/v1/inspect" in httpx.get(url).json()["paths"]
    tested = re.search(r"Selected: (\d+)/(\d+)\s+Tested: (\d+)", out.stdout)
    assert tested is not None, out.stdout[-2000:]
    selected, total, done = (int(n) for n in tested.groups())
    assert selected == done == total - 1, out.stdout[-2000:]  # all but the live stream
