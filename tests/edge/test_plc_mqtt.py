"""A PLC wired over a real Mosquitto: plain-text triggers, repeated ids, pause/resume, compact results.

A PLC waiting for a unit id must always get an answer: a repeated id gets NO_DECISION/
duplicate_unit after the first verdict (which stands), a paused station answers NO_DECISION/paused,
and the retained ``…/control`` message is what a (re)started station obeys.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.publish as publish
from support.mosquitto import Broker
from support.mqtt import Subscriber, subscribed, wait_until

from lineguard.config import LineguardConfig, load_config
from lineguard.edge.control import Trigger
from lineguard.edge.daemon import EdgeDaemon
from lineguard.messages import Reason, Verdict, VerdictKind

PREFIX = "lineguard/l1/s1/"


def station(tmp_path: Path, model: Path, broker: Broker, **sections: Any) -> LineguardConfig:
    base: dict[str, Any] = {
        "station": {"line": "l1", "station": "s1", "data_dir": str(tmp_path / "var")},
        "camera": {"kind": "synthetic", "fps": 50, "synthetic_imgsz": 160},
        "model": {"path": str(model / "model.onnx"), "threads": 1, "warmup_runs": 1},
        "mqtt": {"host": broker.host, "port": broker.port, "reconnect_max_s": 1.0},
        "http": {"enabled": False},
        "sampling": {"enabled": False},
    }
    for key, value in sections.items():
        base[key] = base.get(key, {}) | value if isinstance(value, dict) else value
    return load_config(None, environ={}, overrides=base)


def send(broker: Broker, kind: str, payload: bytes, *, retain: bool = False) -> None:
    publish.single(PREFIX + kind, payload, qos=1, retain=retain, hostname=broker.host, port=broker.port)


def verdicts(sub: Subscriber) -> list[Verdict]:
    return [Verdict.from_json(p) for t, p, _ in list(sub.messages) if t.endswith("/verdict")]


def statuses(sub: Subscriber) -> list[dict[str, Any]]:
    return [json.loads(p) for t, p, _ in list(sub.messages) if t.endswith("/status") and p]


def test_plc_gets_an_answer_for_every_trigger_and_a_compact_result_for_each(
    tmp_path: Path, tiny_model: Path, broker: Broker, background: Callable[[EdgeDaemon], threading.Thread]
) -> None:
    cfg = station(tmp_path, tiny_model, broker, mode="triggered", mqtt={"result_topic": True})
    daemon = EdgeDaemon(cfg)
    with subscribed(broker.host, broker.port, PREFIX + "#") as sub:
        thread = background(daemon)
        wait_until(lambda: any(s["state"] == "online" for s in statuses(sub)), 20, "station online")
        send(broker, "trigger", b"PLC-7")  # plain text: the payload is the unit id
        wait_until(lambda: len(verdicts(sub)) == 1, 20, "the first verdict")
        send(broker, "trigger", b"PLC-7")  # the PLC repeats the id
        send(broker, "trigger", b"PLC-8\r\n")  # refused: not a unit id as a whole
        wait_until(lambda: len(verdicts(sub)) == 2, 20, "the duplicate's verdict")

        send(broker, "control", b'{"inspection": "paused"}', retain=True)
        wait_until(lambda: statuses(sub)[-1].get("inspection") == "paused", 10, "paused in status")
        send(broker, "trigger", json.dumps({"unit_id": "PLC-9"}).encode())
        wait_until(lambda: len(verdicts(sub)) == 3, 20, "the paused station's answer")

        send(broker, "control", b'{"inspection": "running"}', retain=True)
        wait_until(lambda: statuses(sub)[-1].get("inspection") == "running", 10, "running in status")
        send(broker, "trigger", b"PLC-9")  # a unit refused while paused is inspected once resumed
        wait_until(lambda: len(verdicts(sub)) == 4, 20, "the resumed verdict")
        wait_until(lambda: len([m for m in sub.messages if m[0].endswith("/result")]) == 4, 10, "results")
        daemon.stop()
        thread.join(20)

    got = verdicts(sub)
    assert [(v.seq, v.unit_id, v.reason) for v in got[1:3]] == [
        (2, "PLC-7", Reason.DUPLICATE_UNIT),
        (3, "PLC-9", Reason.PAUSED),
    ]
    assert all(v.verdict is VerdictKind.NO_DECISION for v in got[1:3])
    first, last = got[0], got[3]
    assert (first.seq, first.unit_id, last.seq, last.unit_id) == (1, "PLC-7", 4, "PLC-9")
    assert first.reason not in (Reason.DUPLICATE_UNIT, Reason.PAUSED) and first.model is not None
    assert last.reason not in (Reason.DUPLICATE_UNIT, Reason.PAUSED) and last.model is not None
    results = [p.decode() for t, p, _ in sub.messages if t.endswith("/result")]
    assert results == [f"{v.verdict.value},{v.seq},{v.unit_id}" for v in got]
    alerts = [json.loads(p) for t, p, _ in sub.messages if t.endswith("/alert")]
    assert sorted(a["kind"] for a in alerts) == ["duplicate_unit_id", "invalid_trigger"]
    assert "PLC-8" not in json.dumps(alerts)
    assert daemon.summary.pending == 0


def test_retained_pause_holds_a_restarted_station_and_skips_a_live_cameras_frames(
    tmp_path: Path, tiny_model: Path, broker: Broker, background: Callable[[EdgeDaemon], threading.Thread]
) -> None:
    send(broker, "control", b'{"inspection": "paused"}', retain=True)  # set before the station starts
    daemon = EdgeDaemon(station(tmp_path, tiny_model, broker, http={"enabled": True, "port": 0}))
    daemon.source.lossless = False  # a free-running camera: frames come whether or not we look
    background(daemon)
    wait_until(lambda: daemon.source.skips.get("paused", 0) >= 10, 20, "frames skipped while paused")
    units = daemon.summary.units  # a unit or two may have run before the retained message arrived
    status = httpx.get(f"http://127.0.0.1:{daemon.http_port}/v1/status").json()
    assert status["inspection"] == "paused"
    answer = daemon.trigger(Trigger(unit_id="HTTP-1")).result(timeout=20)
    assert (answer.verdict, answer.reason) == (VerdictKind.NO_DECISION, Reason.PAUSED)
    assert daemon.summary.units == units + 1  # the trigger's answer, no camera frame

    send(broker, "control", b"", retain=True)  # the retained message cleared: running again
    wait_until(lambda: daemon.summary.units >= units + 5, 20, "inspection to resume")
    status = httpx.get(f"http://127.0.0.1:{daemon.http_port}/v1/status").json()
    assert status["inspection"] == "running"
