"""Recent verdicts and the frames behind them over HTTP, and feedback escapes sent back to QA."""

from __future__ import annotations

import json
import threading
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from starlette.exceptions import StarletteDeprecationWarning
from support.label_studio import LabelStudioInfo
from support.mosquitto import Broker
from support.mqtt import subscribed, wait_until
from support.signal_model import build_signal_onnx

from lineguard.config import load_config
from lineguard.edge.api import create_app
from lineguard.edge.daemon import EdgeDaemon
from lineguard.labeling import LabelStudioClient
from lineguard.releases import generate_keypair
from lineguard.synthetic import CLASSES, render_unit

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

TOKEN = "verdicts-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def make_station(tmp_path: Path, **sections: Any) -> EdgeDaemon:
    model = tmp_path / "model"
    if not (model / "model.onnx").exists():
        build_signal_onnx(model)  # finds the synthetic line's dark defects: FAIL and PASS both
    base: dict[str, Any] = {
        "station": {"line": "l1", "station": "s1", "data_dir": str(tmp_path / "var")},
        "camera": {"kind": "synthetic", "fps": 50, "synthetic_imgsz": 160, "synthetic_seed": 4},
        "model": {"path": str(model / "model.onnx"), "threads": 1, "warmup_runs": 1},
        "mqtt": {"enabled": False},
        "http": {"port": 0},
        "frame_store": {"pass_share": 0.0},
        "jsonl_path": str(tmp_path / "verdicts.jsonl"),
    }
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value}
    return EdgeDaemon(load_config(None, environ={}, overrides=base))


def upload(client: TestClient, index: int, headers: dict[str, str] | None = None) -> dict[str, Any]:
    jpeg = cv2.imencode(".png", render_unit(4, index, imgsz=160).image)[1].tobytes()
    response = client.post(
        "/v1/inspect", content=jpeg, headers={"Content-Type": "image/png", **(headers or {})}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def station(tmp_path: Path) -> Iterator[EdgeDaemon]:
    daemon = make_station(tmp_path)
    yield daemon
    daemon.shutdown()


def decode(jpeg: bytes) -> np.ndarray[Any, Any]:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return np.asarray(image)


def test_recent_verdicts_filter_page_and_serve_their_frames(station: EdgeDaemon) -> None:
    with TestClient(create_app(station)) as client:
        sent = [upload(client, i) for i in range(12)]
        assert station.frame_store is not None and station.frame_store.flush()
        kinds = {v["verdict"] for v in sent}
        assert {"FAIL", "PASS"} <= kinds, kinds  # the signal model finds some defects, not all units
        for v in sent:  # the payload names the image exactly when the store keeps the frame
            assert ("image" in v) == (v["verdict"] != "PASS"), v

        listed = client.get("/v1/verdicts").json()["verdicts"]
        assert [v["seq"] for v in listed] == [v["seq"] for v in reversed(sent)]
        assert listed[-1] == sent[0]

        fails = client.get("/v1/verdicts", params={"verdict": "FAIL", "reason": "defect"}).json()["verdicts"]
        assert fails and [v["seq"] for v in fails] == [
            v["seq"] for v in reversed(sent) if v["verdict"] == "FAIL"
        ]
        page = client.get("/v1/verdicts", params={"limit": 2, "before_seq": 6}).json()["verdicts"]
        assert [v["seq"] for v in page] == [5, 4]

        fail = fails[0]
        assert client.get(f"/v1/verdicts/{fail['seq']}").json() == fail
        plain = client.get(fail["image"]["url"])
        drawn = client.get(fail["image"]["url"], params={"annotated": "true"})
        assert plain.headers["content-type"] == drawn.headers["content-type"] == "image/jpeg"
        assert decode(plain.content).shape == decode(drawn.content).shape == (160, 160, 3)
        assert np.abs(decode(plain.content).astype(int) - decode(drawn.content)).mean() > 2  # boxes, band

        passed = next(v for v in sent if v["verdict"] == "PASS")
        assert client.get(f"/v1/verdicts/{passed['seq']}").status_code == 200  # listed, no frame kept
        assert client.get(f"/v1/verdicts/{passed['seq']}/image").status_code == 404
        assert client.get("/v1/verdicts/999").status_code == 404
        assert client.get("/v1/verdicts/999/image").status_code == 404
        for bad in ({"limit": 501}, {"verdict": "MAYBE"}, {"before_seq": 0}):
            assert client.get("/v1/verdicts", params=bad).status_code == 422, bad
        assert client.get("/v1/verdicts/abc").status_code == 422

        counters = client.get("/v1/status").json()["counters"]
    assert counters["FAIL"] + counters["PASS"] + counters["NO_DECISION"] == 12
    assert counters["FAIL"] == len(fails)


def test_production_verdicts_and_images_need_the_token(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    _, public_key = generate_keypair(tmp_path / "keys")
    daemon = make_station(
        tmp_path,
        station={"profile": "production"},
        http={"token_file": str(token)},
        registry={"public_keys": [str(public_key)]},
        frame_store={"pass_share": 1.0},
    )
    try:
        with TestClient(create_app(daemon)) as client:
            seq = upload(client, 0, AUTH)["seq"]
            assert daemon.frame_store is not None and daemon.frame_store.flush()
            for path in ("/v1/verdicts", f"/v1/verdicts/{seq}", f"/v1/verdicts/{seq}/image"):
                denied = client.get(path)
                assert (denied.status_code, denied.headers["www-authenticate"]) == (401, "Bearer"), path
                assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401, path
                assert client.get(path, headers=AUTH).status_code == 200, path
    finally:
        daemon.shutdown()


def test_frame_store_off_lists_nothing_and_names_no_image(tmp_path: Path) -> None:
    daemon = make_station(tmp_path, frame_store={"enabled": False})
    try:
        with TestClient(create_app(daemon)) as client:
            sent = [upload(client, i) for i in range(4)]
            assert all("image" not in v for v in sent)
            assert client.get("/v1/verdicts").json() == {"verdicts": []}
            assert client.get(f"/v1/verdicts/{sent[0]['seq']}/image").status_code == 404
    finally:
        daemon.shutdown()
    assert not (tmp_path / "var" / "frames").exists()


def tasks(info: LabelStudioInfo, project_id: int) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{info.url}/api/tasks",
        params={"project": project_id, "fields": "all", "page_size": 100},
        headers={"Authorization": f"Token {info.token}"},
        timeout=10,
    )
    response.raise_for_status()
    body = response.json()
    found: list[dict[str, Any]] = body["tasks"] if isinstance(body, dict) else body
    return found


@pytest.mark.labelstudio
def test_feedback_escape_sends_the_stored_frame_to_label_studio(
    tmp_path: Path, broker: Broker, label_studio: LabelStudioInfo
) -> None:
    client = LabelStudioClient(label_studio.url, label_studio.token)
    title = f"test-escapes-{uuid.uuid4().hex[:10]}"
    project, _ = client.ensure_project(title, list(CLASSES))
    token = tmp_path / "ls-token"
    token.write_text(label_studio.token)
    daemon = make_station(
        tmp_path,
        mqtt={"enabled": True, "host": broker.host, "port": broker.port, "reconnect_max_s": 1.0},
        http={"enabled": False},
        frame_store={"pass_share": 1.0},
        # no sampled frames: only feedback sends frames to QA in this test
        sampling={
            "audit_share": 0.0,
            "uncertain_band": 0.0,
            "per_minute": 0,
            "label_studio_url": label_studio.url,
            "label_studio_token_file": str(token),
            "label_studio_project": title,
        },
    )
    thread = threading.Thread(target=daemon.run, daemon=True)  # runs until stopped
    try:
        with subscribed(broker.host, broker.port, "lineguard/l1/s1/#") as sub:
            thread.start()

            def verdicts() -> list[dict[str, Any]]:
                return [json.loads(p) for t, p, _ in list(sub.messages) if t.endswith("/verdict")]

            wait_until(lambda: len(verdicts()) >= 12, 30, "twelve verdicts")
            store = daemon.frame_store
            assert store is not None and store.flush()
            got = verdicts()
            escaped = next(v for v in got if v["verdict"] == "PASS")
            overkilled, confirmed = [v for v in got if v["verdict"] == "FAIL"][:2]
            for unit, outcome in (
                (escaped["unit_id"], "escape"),
                (overkilled["unit_id"], "overkill"),
                (confirmed["unit_id"], "confirmed"),
                ("s1-not-stored", "escape"),
            ):
                payload = json.dumps({"unit_id": unit, "outcome": outcome})
                sub.client.publish("lineguard/l1/s1/feedback", payload, qos=1)

            def reasons() -> dict[str, str]:
                return {t["data"]["unit_id"]: t["data"]["reason"] for t in tasks(label_studio, project.id)}

            wait_until(lambda: len(reasons()) >= 2, 60, "two feedback tasks in Label Studio")
            assert reasons() == {
                escaped["unit_id"]: "feedback_escape",
                overkilled["unit_id"]: "feedback_overkill",
            }
            counters = daemon.counters()
            assert (counters["feedback_escapes"], counters["feedback_overkills"]) == (2, 1)
            task = next(
                t for t in tasks(label_studio, project.id) if t["data"]["reason"] == "feedback_overkill"
            )
            assert task["data"]["verdict"] == "FAIL" and task["predictions"]  # the model's boxes pre-drawn
    finally:
        daemon.stop()
        thread.join(30)
        client.delete_project(project.id)
        client.close()
