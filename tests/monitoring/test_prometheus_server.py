"""A real Prometheus server scrapes a running edge daemon and holds its lineguard metrics.

The test starts its own ``prometheus`` process on a free loopback port (Debian package
``prometheus``), with our alert rules loaded and a 1 s scrape of the daemon's ``/metrics``, then
asks Prometheus' HTTP API what it stored. Nothing leaves loopback; both processes are stopped.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.mosquitto import free_port

from lineguard.config import load_config
from lineguard.edge.daemon import EdgeDaemon

RULES = Path(__file__).resolve().parents[2] / "monitoring" / "prometheus" / "rules.yml"


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        data: dict[str, Any] = json.loads(resp.read())
    return data


def _wait(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if check():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout_s} s")
        time.sleep(0.2)


@pytest.fixture
def edge(tmp_path: Path, tiny_model: Path) -> Iterator[EdgeDaemon]:
    """A daemon on the synthetic line with its HTTP API on a free port (no MQTT)."""
    cfg = load_config(
        None,
        environ={},
        overrides={
            "station": {"line": "l1", "station": "s1", "data_dir": str(tmp_path / "var")},
            "camera": {"kind": "synthetic", "fps": 20, "synthetic_imgsz": 160},
            "model": {"path": str(tiny_model / "model.onnx"), "threads": 1, "warmup_runs": 1},
            "mqtt": {"enabled": False},
            "http": {"enabled": True, "host": "127.0.0.1", "port": 0},
            "jsonl_path": str(tmp_path / "verdicts.jsonl"),
        },
    )
    daemon = EdgeDaemon(cfg)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        _wait(lambda: daemon.http_port is not None, 30, "the edge's HTTP API did not come up")
        yield daemon
    finally:
        daemon.stop()
        thread.join(20)


@pytest.fixture
def prometheus(tmp_path: Path, prometheus_bin: Path, edge: EdgeDaemon) -> Iterator[str]:
    """A Prometheus of this test's own scraping ``edge`` every second; yields its base URL."""
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files:\n  - {RULES}\n"
        "scrape_configs:\n  - job_name: lineguard\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{edge.http_port}']\n"
    )
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            str(prometheus_bin),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(
            lambda: urllib.request.urlopen(base + "/-/ready", timeout=2).status == 200,
            30,
            "prometheus did not become ready",
        )
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def _query(base: str, expr: str) -> list[dict[str, Any]]:
    data = _get_json(base + "/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    result: list[dict[str, Any]] = data["data"]["result"]
    return result


def test_prometheus_scrapes_lineguard_metrics_from_a_running_edge(prometheus: str) -> None:
    _wait(lambda: bool(_query(prometheus, "lineguard_frames_total > 0")), 60, "no frames metric scraped")
    _wait(
        lambda: bool(_query(prometheus, "sum(lineguard_verdicts_total) > 0")),
        60,
        "no verdicts metric scraped",
    )
    target = _get_json(prometheus + "/api/v1/targets")["data"]["activeTargets"][0]
    assert target["health"] == "up"
    assert target["labels"]["job"] == "lineguard"

    stages = {r["metric"]["stage"] for r in _query(prometheus, "lineguard_stage_latency_seconds_count > 0")}
    assert "inference" in stages
    assert [r["value"][1] for r in _query(prometheus, "lineguard_camera_up")] == ["1"]
    # the alert rules were loaded by the same server
    groups = _get_json(prometheus + "/api/v1/rules")["data"]["groups"]
    alerts = {rule["name"] for g in groups for rule in g["rules"] if rule["type"] == "alerting"}
    assert {"LineguardCameraDown", "LineguardDriftAlarm", "LineguardEscapeRate"} <= alerts
