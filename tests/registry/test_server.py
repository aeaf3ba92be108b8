"""The artifact server: the token is required, and with it a station gets the exact bytes."""

from __future__ import annotations

import http.client
import json
from pathlib import Path

import httpx
import pytest

from lineguard.errors import ConfigError
from lineguard.registry import ArtifactServer, Registry, read_token

TOKEN = "s3cret-token-for-tests"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong-token-xxxxxxxx"}, 401),
        ({"Authorization": TOKEN}, 401),
        ({"Authorization": f"Bearer {TOKEN}"}, 200),
    ],
)
def test_artifact_needs_the_bearer_token(
    registry: Registry, models: dict[str, Path], headers: dict[str, str], status: int
) -> None:
    mv = registry.add(models["weak"])
    with ArtifactServer(registry, TOKEN) as server:
        resp = httpx.get(f"{server.url}/v1/artifacts/{mv.sha256}", headers=headers)
    assert resp.status_code == status
    if status == 200:
        assert resp.content == (models["weak"] / "model.onnx").read_bytes()


def test_cards_models_and_unknown_artifacts(registry: Registry, models: dict[str, Path]) -> None:
    mv = registry.add(models["weak"])
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with ArtifactServer(registry, TOKEN) as server, httpx.Client(base_url=server.url) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/v1/cards/signal/1.0.0.json").status_code == 401
        card = client.get("/v1/cards/signal/1.0.0.json", headers=auth).json()
        assert card["sha256"] == mv.sha256
        assert client.get(f"/v1/artifacts/{'0' * 64}", headers=auth).status_code == 404
        assert client.get("/v1/artifacts/..%2Fregistry.sqlite", headers=auth).status_code == 404
        assert client.get("/v1/models", headers=auth).json()[0]["stage"] == "candidate"


@pytest.mark.parametrize(("content", "message"), [(None, "not found"), ("short", "shorter than 16")])
def test_token_file_must_exist_and_be_long(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        read_token(path)


def _raw_get(port: int, path: str) -> tuple[int, bytes]:
    """GET ``path`` exactly as written: http.client sends '..' as is, where httpx would normalise it."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize(
    "path",
    [
        "/v1/cards/../secret.json",
        "/v1/cards/%2e%2e/secret.json",
        "/v1/cards/signal/..%2f..%2fsecret.json",
        "/v1/cards/signal/escape.json",
    ],
    ids=["dotdot", "encoded-dotdot", "encoded-slash", "symlink-out"],
)
def test_card_names_cannot_leave_the_registry(
    registry: Registry, models: dict[str, Path], tmp_path: Path, path: str
) -> None:
    registry.add(models["weak"])
    secret = b'{"password": "hunter2"}'
    (registry.root / "secret.json").write_bytes(secret)
    (tmp_path / "outside.json").write_bytes(secret)
    (registry.cards / "signal" / "escape.json").symlink_to(tmp_path / "outside.json")
    with ArtifactServer(registry, TOKEN) as server:
        status, body = _raw_get(server.port, path)
        good, card = _raw_get(server.port, "/v1/cards/signal/1.0.0.json")
    assert status == 404
    assert b"hunter2" not in body
    assert (good, json.loads(card)["version"]) == (200, "1.0.0")
