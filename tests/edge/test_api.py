"""The station's HTTP API: probes, metrics, the model, and inspecting an uploaded image."""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import pytest
from starlette.exceptions import StarletteDeprecationWarning
from support.bombs import png_bomb

from lineguard.config import load_config
from lineguard.edge.api import ApiServer, create_app
from lineguard.edge.daemon import EdgeDaemon
from lineguard.errors import ConfigError
from lineguard.messages import Verdict
from lineguard.releases import generate_keypair
from lineguard.synthetic import render_unit

# Starlette 1.x wants the httpx2 package for its TestClient and warns (an error here) on httpx.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

TOKEN = "s3cret-token"


def make_daemon(
    tmp_path: Path,
    model: Path | None,
    *,
    profile: str = "development",
    camera: dict[str, Any] | None = None,
    registry: dict[str, Any] | None = None,
    **http: Any,
) -> EdgeDaemon:
    cfg = load_config(
        None,
        environ={},
        overrides={
            "station": {"station": "s1", "data_dir": str(tmp_path / "var"), "profile": profile},
            "camera": camera or {"kind": "synthetic", "fps": 20, "synthetic_imgsz": 160},
            "model": {
                "path": None if model is None else str(model / "model.onnx"),
                "threads": 1,
                "warmup_runs": 1,
            },
            "mqtt": {"enabled": False},
            "http": {"port": 0, **http},
            "registry": registry or {},
        },
    )
    return EdgeDaemon(cfg)


@pytest.fixture
def daemon(tmp_path: Path, tiny_model: Path) -> Iterator[EdgeDaemon]:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    station = make_daemon(tmp_path, tiny_model, token_file=str(token), max_upload_bytes=64 * 1024)
    yield station
    station.shutdown()


@pytest.fixture
def client(daemon: EdgeDaemon) -> Iterator[TestClient]:
    with TestClient(create_app(daemon)) as test_client:
        yield test_client


AUTH = {"Authorization": f"Bearer {TOKEN}"}
JPEG = cv2.imencode(".jpg", render_unit(0, 3, imgsz=160).image)[1].tobytes()
PNG = cv2.imencode(".png", render_unit(0, 4, imgsz=160).image)[1].tobytes()


def test_probes_and_metrics_need_no_token(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")  # answers without a token; its status code agrees with its body
    assert ready.status_code == (200 if ready.json()["ready"] else 503), ready.json()
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert "lineguard_verdicts_total" in metrics.text
    assert "/v1/inspect" in client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}],
    ids=["none", "wrong", "no-scheme"],
)
def test_inspect_without_the_right_token_is_401(client: TestClient, headers: dict[str, str]) -> None:
    response = client.post("/v1/inspect", content=JPEG, headers={"Content-Type": "image/jpeg", **headers})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(("body", "ctype"), [(JPEG, "image/jpeg"), (PNG, "image/png")], ids=["jpeg", "png"])
def test_raw_image_is_inspected_as_one_unit(
    client: TestClient, daemon: EdgeDaemon, body: bytes, ctype: str
) -> None:
    response = client.post(
        "/v1/inspect", content=body, params={"unit_id": "U-7"}, headers={"Content-Type": ctype, **AUTH}
    )
    assert response.status_code == 200, response.text
    verdict = Verdict.model_validate(response.json())
    assert (verdict.unit_id, verdict.seq, verdict.station) == ("U-7", 1, "s1")
    assert verdict.model is not None and verdict.model.name == "tiny"
    assert [p.seq for p in daemon.outbox.pending()] == [1]


def test_multipart_upload_takes_the_unit_id_from_the_form(client: TestClient) -> None:
    response = client.post(
        "/v1/inspect",
        files={"file": ("part.png", PNG, "image/png")},
        data={"unit_id": "LOT4-0009"},
        headers=AUTH,
    )
    assert response.status_code == 200, response.text
    assert response.json()["unit_id"] == "LOT4-0009"


def test_upload_over_the_limit_is_413(client: TestClient) -> None:
    big = b"\xff\xd8\xff" + b"0" * (64 * 1024)
    raw = client.post("/v1/inspect", content=big, headers={"Content-Type": "image/jpeg", **AUTH})
    form = client.post("/v1/inspect", files={"file": ("big.jpg", big, "image/jpeg")}, headers=AUTH)
    assert (raw.status_code, form.status_code) == (413, 413)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"content": b"hello", "headers": {"Content-Type": "text/plain"}},
        {"content": JPEG, "headers": {"Content-Type": "application/json"}},
        {"files": {"file": ("notes.txt", b"hello", "text/plain")}},
    ],
    ids=["text", "json", "multipart-text"],
)
def test_wrong_content_type_is_415(client: TestClient, kwargs: dict[str, Any]) -> None:
    headers = {**kwargs.pop("headers", {}), **AUTH}
    assert client.post("/v1/inspect", headers=headers, **kwargs).status_code == 415


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (PNG[:40] + b"garbage" * 10, 422, "cannot decode"),
        (b"\x89PNG\r\n\x1a\n" + b"garbage" * 10, 415, "IHDR"),
        (b"not an image at all", 415, "unknown header"),
    ],
    ids=["corrupt-data", "corrupt-header", "unknown-format"],
)
def test_undecodable_or_unknown_image_is_refused_in_one_line(
    client: TestClient, body: bytes, status: int, words: str
) -> None:
    response = client.post("/v1/inspect", content=body, headers={"Content-Type": "image/png", **AUTH})
    assert response.status_code == status
    detail = response.json()["detail"]
    assert words in detail and "\n" not in detail


def test_model_endpoint_summarises_the_card(client: TestClient) -> None:
    model = client.get("/v1/model").json()
    assert model["loaded"] is True
    assert (model["name"], model["version"], model["input_size"]) == ("tiny", "0.0.1", 160)
    assert model["classes"] == ["scratch", "pit", "crack", "inclusion"]
    assert model["backend"].startswith(("onnxruntime", "openvino"))


def test_readyz_lists_every_reason_it_is_not_ready(tmp_path: Path) -> None:
    station = make_daemon(tmp_path, None)
    try:
        with TestClient(create_app(station)) as client:
            response = client.get("/readyz")
            model = client.get("/v1/model").json()
    finally:
        station.shutdown()
    assert response.status_code == 503
    reasons = response.json()["reasons"]
    assert [r.split(":")[0] for r in reasons] == ["no model loaded", "camera down"]
    assert model == {"loaded": False, "error": "no model configured (model.path)"}


def test_running_station_serves_http_and_inspects_the_next_camera_frame(
    tmp_path: Path, tiny_model: Path
) -> None:
    station = make_daemon(tmp_path, tiny_model)
    loop = threading.Thread(target=station.run, daemon=True)
    loop.start()
    try:
        deadline = time.monotonic() + 15
        while station.http_port is None and time.monotonic() < deadline:
            time.sleep(0.02)
        base = f"http://127.0.0.1:{station.http_port}"
        ready = httpx.get(f"{base}/readyz")
        while ready.status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
            ready = httpx.get(f"{base}/readyz")
        camera_unit = httpx.post(f"{base}/v1/inspect", params={"unit_id": "CAM-1"}, timeout=20)
    finally:
        station.stop()
        loop.join(20)
    assert ready.json() == {"ready": True, "reasons": []}
    assert camera_unit.status_code == 200, camera_unit.text
    assert camera_unit.json()["unit_id"] == "CAM-1"


def test_unreadable_token_file_fails_at_start(tmp_path: Path, tiny_model: Path) -> None:
    station = make_daemon(tmp_path, None, token_file=str(tmp_path / "missing-token"))
    try:
        with pytest.raises(ConfigError, match="token_file"):
            create_app(station)
    finally:
        station.shutdown()


@pytest.mark.parametrize("side", [20_000, 60_000])
def test_image_bomb_is_refused_from_its_header_while_probes_answer(
    daemon: EdgeDaemon, monkeypatch: pytest.MonkeyPatch, side: int
) -> None:
    decodes: list[int] = []
    real_imdecode = cv2.imdecode

    def spy(*args: Any) -> Any:
        decodes.append(1)
        return real_imdecode(*args)

    monkeypatch.setattr(cv2, "imdecode", spy)
    server = ApiServer(create_app(daemon), "127.0.0.1", 0)
    server.start()
    bombs: list[httpx.Response] = []
    try:
        base = f"http://127.0.0.1:{server.port}"
        headers = {"Content-Type": "image/png", **AUTH}

        def send() -> None:
            bombs.append(httpx.post(f"{base}/v1/inspect", content=BOMBS[side], headers=headers, timeout=30))

        sender = threading.Thread(target=send)
        sender.start()
        health = httpx.get(f"{base}/healthz")
        sender.join(30)
        after = httpx.get(f"{base}/healthz")
    finally:
        server.stop()
    assert len(BOMBS[side]) < 64 * 1024  # fits the 64 kB upload limit: the header check must refuse it
    assert [r.status_code for r in bombs] == [413]
    assert f"{side}x{side}" in bombs[0].json()["detail"]
    assert decodes == []  # refused before any decoder ran
    assert (health.status_code, after.status_code) == (200, 200)
    assert list(daemon.outbox.pending()) == []


BOMBS = {side: png_bomb(side, side) for side in (20_000, 60_000)}


def test_unit_id_with_a_trailing_newline_is_422(client: TestClient) -> None:
    headers = {"Content-Type": "image/jpeg", **AUTH}
    response = client.post("/v1/inspect", content=JPEG, params={"unit_id": "U-7\n"}, headers=headers)
    assert response.status_code == 422
    assert "unit_id" in response.json()["detail"]


@pytest.fixture
def production(tmp_path: Path, tiny_model: Path) -> Iterator[TestClient]:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    _, public_key = generate_keypair(tmp_path / "keys")  # production pins the registry's key
    registry = {"public_keys": [str(public_key)]}
    station = make_daemon(
        tmp_path, tiny_model, profile="production", registry=registry, token_file=str(token)
    )
    try:
        with TestClient(create_app(station)) as test_client:
            yield test_client
    finally:
        station.shutdown()


def test_production_api_needs_the_token_on_all_but_the_probes(production: TestClient) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        assert production.get(path).status_code in (200, 503), path
    for path in ("/v1/status", "/v1/model"):
        denied = production.get(path)
        assert (denied.status_code, denied.headers["www-authenticate"]) == (401, "Bearer"), path
        assert production.get(path, headers=AUTH).status_code == 200, path
    upload = production.post("/v1/inspect", content=JPEG, headers={"Content-Type": "image/jpeg"})
    assert upload.status_code == 401
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
        assert production.get(path, headers=AUTH).status_code == 404, path


def test_camera_credentials_are_masked_in_status(tmp_path: Path, tiny_model: Path) -> None:
    camera = {"kind": "stream", "uri": "rtsp://operator:hunter2@127.0.0.1:9/live"}
    station = make_daemon(tmp_path, tiny_model, camera=camera)
    try:
        with TestClient(create_app(station)) as client:
            status = client.get("/v1/status")
    finally:
        station.shutdown()
    assert status.status_code == 200
    assert "hunter2" not in status.text and "operator" not in status.text
    assert status.json()["camera"]["source"] == "stream:rtsp://***@127.0.0.1:9/live"
