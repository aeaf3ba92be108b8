"""The station page, its live view, the status figures it shows, and the offline API docs."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import paho.mqtt.publish as publish
import pytest
from starlette.exceptions import StarletteDeprecationWarning
from support.mosquitto import Broker
from support.mqtt import wait_until
from support.signal_model import build_signal_onnx
from support.stations import running_station

from lineguard.config import load_config
from lineguard.edge.api import create_app
from lineguard.edge.daemon import EdgeDaemon
from lineguard.releases import generate_keypair

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

TOKEN = "page-token-9"
_REF = re.compile(r"""(?:src|href)="([^"]+)\"""")


@pytest.fixture(scope="module")
def signal_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model that FAILs the synthetic line's defective units."""
    out = tmp_path_factory.mktemp("signal")
    build_signal_onnx(out, contrast=0.19)
    return out


def _client(tmp_path: Path, model: Path, profile: str) -> Iterator[TestClient]:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    _, public_key = generate_keypair(tmp_path / "keys")  # production pins the registry's key
    cfg = load_config(
        None,
        environ={},
        overrides={
            "station": {"station": "s1", "data_dir": str(tmp_path / "var"), "profile": profile},
            "camera": {"kind": "synthetic", "fps": 20, "synthetic_imgsz": 160},
            "model": {"path": str(model / "model.onnx"), "threads": 1, "warmup_runs": 1},
            "mqtt": {"enabled": False},
            "http": {"port": 0, "token_file": str(token)},
            "registry": {"public_keys": [str(public_key)]},
        },
    )
    daemon = EdgeDaemon(cfg)
    try:
        with TestClient(create_app(daemon)) as client:
            yield client
    finally:
        daemon.shutdown()


@pytest.fixture
def dev_client(tmp_path: Path, tiny_model: Path) -> Iterator[TestClient]:
    yield from _client(tmp_path, tiny_model, "development")


@pytest.fixture
def prod_client(tmp_path: Path, tiny_model: Path) -> Iterator[TestClient]:
    yield from _client(tmp_path, tiny_model, "production")


def test_page_loads_only_from_the_station(dev_client: TestClient) -> None:
    page = dev_client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    refs = _REF.findall(page.text)
    assert "/static/station.js" in refs and "/static/station.css" in refs
    for ref in refs:
        assert ref.startswith("/"), f"{ref} is not served by the station"
        if ref.startswith("/static/"):
            asset = dev_client.get(ref)
            assert asset.status_code == 200, ref
            assert "://" not in asset.text, f"{ref} reaches outside the station"


def test_api_docs_work_offline(dev_client: TestClient) -> None:
    docs = dev_client.get("/docs")
    assert docs.status_code == 200
    refs = _REF.findall(docs.text) + re.findall(r"""url: ?'([^']+)'""", docs.text)
    scripts = [r for r in refs if r.endswith(".js")]
    assert scripts, "the docs page loads no script"
    for ref in refs:
        assert ref.startswith("/"), f"the docs page loads {ref} from elsewhere"
        assert dev_client.get(ref).status_code == 200, ref
    assert all(len(dev_client.get(s).content) > 100_000 for s in scripts)  # Swagger UI itself, not a stub
    paths = dev_client.get("/openapi.json").json()["paths"]
    assert {"/v1/live.jpg", "/v1/live.mjpeg"} <= set(paths)


def test_production_page_shell_is_open_but_its_data_needs_the_token(prod_client: TestClient) -> None:
    assert prod_client.get("/").status_code == 200  # holds no data; it asks for the token
    assert prod_client.get("/docs").status_code == 404
    assert prod_client.get("/v1/status").status_code == 401
    assert prod_client.get("/v1/live.mjpeg").status_code == 401
    assert prod_client.get("/v1/live.jpg", params={"token": "wrong"}).status_code == 401
    assert prod_client.get("/v1/status", params={"token": TOKEN}).status_code == 401  # header only
    # The right token in the query opens the live route (an empty stream: this station is not running).
    assert prod_client.get("/v1/live.mjpeg", params={"token": TOKEN}).status_code == 200
    assert prod_client.get("/v1/status", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def _jpeg_parts(base: str, count: int) -> list[bytes]:
    """The first ``count`` JPEG parts of the MJPEG stream."""
    parts: list[bytes] = []
    buffer = b""
    with httpx.stream("GET", f"{base}/v1/live.mjpeg", timeout=10) as response:
        assert response.headers["content-type"] == "multipart/x-mixed-replace; boundary=frame"
        for chunk in response.iter_bytes():
            buffer += chunk
            while (start := buffer.find(b"\xff\xd8")) >= 0 and (end := buffer.find(b"\xff\xd9", start)) >= 0:
                parts.append(buffer[start : end + 2])
                buffer = buffer[end + 2 :]
            if len(parts) >= count:
                break
    return parts


def test_live_view_streams_the_latest_annotated_frames(tmp_path: Path, signal_model: Path) -> None:
    with running_station(tmp_path / "var", signal_model) as (_daemon, base):
        still = httpx.get(f"{base}/v1/live.jpg", timeout=10)
        parts = _jpeg_parts(base, 3)
    assert still.status_code == 200 and still.headers["content-type"] == "image/jpeg"
    image = cv2.imdecode(np.frombuffer(still.content, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (480, 480, 3)  # 160 px, scaled up to legible
    frames = [cv2.imdecode(np.frombuffer(p, np.uint8), cv2.IMREAD_COLOR) for p in parts]
    assert all(f is not None and f.shape == (480, 480, 3) for f in frames)
    assert len({p for p in parts}) == 3, "the stream repeated a frame instead of showing new units"


def test_status_counts_units_feedback_broker_and_drift(
    tmp_path: Path, signal_model: Path, broker: Broker
) -> None:
    mqtt = {"enabled": True, "host": broker.host, "port": broker.port}
    with running_station(tmp_path / "var", signal_model, mqtt=mqtt) as (daemon, base):
        wait_until(lambda: daemon.delivery.readiness()[0], 10, "the broker connection")
        topic = f"lineguard/{daemon.cfg.station.line}/s1/feedback"
        for outcome in ("escape", "escape", "overkill"):
            payload = f'{{"schema": "lineguard.feedback/1", "unit_id": "s1-f1", "outcome": "{outcome}"}}'
            publish.single(topic, payload, qos=1, hostname=broker.host, port=broker.port)

        def status() -> dict[str, object]:
            body: dict[str, object] = httpx.get(f"{base}/v1/status", timeout=5).json()
            return body

        wait_until(lambda: status()["counters"]["feedback_overkills"] == 1, 10, "feedback counted")  # type: ignore[index]
        got = status()
        units = daemon.summary.units
    counters = got["counters"]
    assert isinstance(counters, dict)
    assert counters["feedback_escapes"] == 2 and counters["feedback_overkills"] == 1
    assert counters["FAIL"] > 0 and counters["PASS"] > 0  # the signal model finds the defects
    assert 0 < counters["PASS"] + counters["FAIL"] + counters["NO_DECISION"] <= units
    assert got["broker"] == {"connected": True, "detail": f"connected to {broker.host}:{broker.port}"}
    assert got["precision"] == "fp32" and got["station"] == "line1/s1"
    drift = got["drift"]
    assert isinstance(drift, dict) and drift["level"] in {"ok", "warning", "alarm"}
