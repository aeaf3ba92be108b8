"""``lineguard demo`` end to end on a pre-cached model: verdicts, the summary table, a rerun."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from support.mosquitto import free_port

from lineguard.demo import DemoSettings


def _demo(cache: Path, out: Path, port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "lineguard.cli",
            "demo",
            "--units",
            "30",
            "--out",
            str(out),
            "--mqtt-port",
            str(port),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env={**os.environ, "LINEGUARD_CACHE_DIR": str(cache)},
    )


def test_demo_scores_every_unit_and_can_run_again(tmp_path: Path, tiny_model: Path) -> None:
    cache = tmp_path / "cache"
    shutil.copytree(tiny_model, cache / "demo" / DemoSettings().key() / "model")  # skip training
    no_broker = free_port()
    first = _demo(cache, tmp_path / "out", no_broker)
    assert first.returncode == 0, first.stderr[-2000:]
    assert f"no MQTT broker at 127.0.0.1:{no_broker}: verdicts go to" in first.stdout
    assert "  units          30" in first.stdout
    for row in ("escape rate", "overkill rate", "latency p99", "sample verdicts"):
        assert row in first.stdout
    assert len(list((tmp_path / "out").glob("*/sample_verdicts.png"))) == 1
    verdict_files = list((tmp_path / "out").glob("*/verdicts.jsonl"))
    assert len(verdict_files) == 1 and len(verdict_files[0].read_text().splitlines()) == 30
    again = _demo(cache, tmp_path / "out", no_broker)  # the registry already holds the model
    assert again.returncode == 0, again.stderr[-2000:]
