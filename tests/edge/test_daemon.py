"""The inspection loop on a real ONNX model: one verdict per unit, never a PASS it cannot stand behind."""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from support.contracts import assert_matches_schema
from support.mosquitto import Broker, free_port
from support.mqtt import subscribed, wait_until

from lineguard.config import LineguardConfig, load_config
from lineguard.edge.control import Trigger
from lineguard.edge.daemon import EdgeDaemon
from lineguard.inference import Detector
from lineguard.messages import ModelCard, Reason, Verdict, VerdictKind
from lineguard.synthetic import render_unit


def station(tmp_path: Path, model: Path | None, **sections: Any) -> LineguardConfig:
    """A JSON-lines station under ``tmp_path`` (no MQTT, no HTTP) with section overrides."""
    base: dict[str, Any] = {
        "station": {"line": "l1", "station": "s1", "data_dir": str(tmp_path / "var")},
        "camera": {"kind": "synthetic", "fps": 50, "synthetic_imgsz": 160},
        "model": {
            "path": None if model is None else str(model / "model.onnx"),
            "threads": 1,
            "warmup_runs": 1,
        },
        "mqtt": {"enabled": False},
        "http": {"enabled": False},
        "jsonl_path": str(tmp_path / "verdicts.jsonl"),
    }
    for key, value in sections.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and key in base else value
    return load_config(None, environ={}, overrides=base)


def verdicts(path: Path) -> list[Verdict]:
    if not path.exists():
        return []
    return [Verdict.from_json(line) for line in path.read_text().splitlines()]


def wait_for(check: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.02)


def test_video_gives_one_verdict_per_unit_in_seq_order(
    tmp_path: Path, tiny_model: Path, synthetic_dataset: Path
) -> None:
    video = synthetic_dataset / "video"
    truth = [json.loads(line) for line in (video / "line_truth.jsonl").read_text().splitlines()]
    cfg = station(tmp_path, tiny_model, camera={"kind": "video", "uri": str(video / "line.avi"), "fps": 40})
    daemon = EdgeDaemon(cfg)
    summary = daemon.run()  # returns when the video ends

    got = verdicts(tmp_path / "verdicts.jsonl")
    assert [v.seq for v in got] == list(range(1, len(truth) + 1))  # every frame of a file is a unit
    assert summary.units == len(truth) and not summary.skipped
    assert summary.pending == 0
    assert [v.unit_id for v in got] == [f"s1-f{i:06d}" for i in range(len(truth))]
    assert {v.source.camera for v in got if v.source} == {f"video:{video / 'line.avi'}"}
    assert [(v.source.index, v.source.file) for v in got if v.source] == [
        (i, None) for i in range(len(truth))
    ]
    for v in got:
        assert (v.line, v.station) == ("l1", "s1")
        assert v.model is not None and v.model.name == "tiny"
        assert v.thresholds.startswith("tiny:0.0.1+")
        assert v.decided_at >= v.captured_at
        assert v.verdict is not VerdictKind.PASS or v.reason is Reason.NO_DEFECT
    metrics = daemon.metrics.registry
    assert metrics.get_sample_value("lineguard_capture_to_decision_seconds_count") == summary.units
    assert (
        metrics.get_sample_value("lineguard_stage_latency_seconds_count", {"stage": "inference"})
        == summary.units
    )


def test_frames_a_live_camera_drops_are_counted_in_the_summary_and_metrics(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lineguard.edge")
    daemon = EdgeDaemon(station(tmp_path, None, camera={"fps": 200, "synthetic_imgsz": 64}))
    daemon.source.lossless = False  # as a camera or stream is: the newest frame wins
    daemon.source.start()  # frames arrive before the loop reads: the station is still starting
    wait_for(lambda: daemon.source.health().skipped >= 3)
    summary = daemon.run(max_units=2)

    busy = summary.skipped["busy"]
    assert busy >= 3 and summary.skipped == {"busy": busy}
    assert f"; {busy} frames skipped (busy {busy}); last seq 2, 0 undelivered" in summary.line()
    assert daemon.metrics.registry.get_sample_value("lineguard_frames_skipped_total") == busy
    stopped = [r for r in caplog.records if "stopped" in r.getMessage()]
    assert stopped and f"'busy': {busy}" in stopped[-1].getMessage()


def test_black_and_frozen_frames_get_no_decision_image_quality(tmp_path: Path, tiny_model: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    black = np.zeros((160, 160, 3), np.uint8)
    good = render_unit(0, 1, imgsz=160).image
    for i, image in enumerate([black, black, good, good, good, good, good]):
        cv2.imwrite(str(folder / f"{i:02d}.png"), image)
    cfg = station(
        tmp_path, tiny_model, camera={"kind": "folder", "uri": str(folder), "fps": 20, "frozen_frames": 3}
    )
    EdgeDaemon(cfg).run()

    got = verdicts(tmp_path / "verdicts.jsonl")
    by_frame = {int(v.unit_id.removeprefix("s1-")): v for v in got}
    assert sorted(by_frame) == list(range(7))  # every file of a folder is a unit
    for index, verdict in by_frame.items():
        if index < 2 or index >= 4:  # black, or the 3rd identical frame in a row onwards
            assert (verdict.verdict, verdict.reason) == (VerdictKind.NO_DECISION, Reason.IMAGE_QUALITY), index
        else:
            assert verdict.reason is not Reason.IMAGE_QUALITY, index


def test_deadline_of_1ms_gives_no_decision_deadline(tmp_path: Path, tiny_model: Path) -> None:
    cfg = station(tmp_path, tiny_model, policy={"deadline_ms": 1.0})
    daemon = EdgeDaemon(cfg)
    summary = daemon.run(max_units=5)

    got = verdicts(tmp_path / "verdicts.jsonl")
    assert len(got) == summary.units == 5
    assert {(v.verdict, v.reason) for v in got} == {(VerdictKind.NO_DECISION, Reason.DEADLINE)}
    assert all(v.latency_ms > 1.0 for v in got)
    assert daemon.metrics.registry.get_sample_value("lineguard_deadline_misses_total") == 5


@pytest.mark.parametrize("model", ["none", "tampered"])
def test_without_a_usable_model_every_unit_is_no_decision_no_model(
    tmp_path: Path, tiny_model: Path, model: str
) -> None:
    folder = None
    if model == "tampered":
        folder = tmp_path / "model"
        shutil.copytree(tiny_model, folder)
        card = ModelCard.load(folder / "model_card.json")
        card.sha256 = "0" * 64
        card.save(folder / "model_card.json")
    daemon = EdgeDaemon(station(tmp_path, folder))
    ready, reasons = daemon.readiness()
    summary = daemon.run(max_units=3)

    got = verdicts(tmp_path / "verdicts.jsonl")
    assert summary.units == len(got) == 3
    assert {(v.verdict, v.reason, v.model) for v in got} == {(VerdictKind.NO_DECISION, Reason.NO_MODEL, None)}
    assert not ready
    assert reasons[0].startswith("no model loaded: ")
    assert ("sha256" in reasons[0]) if model == "tampered" else ("model.path" in reasons[0])


def test_model_swapped_between_units_names_the_model_that_decided(
    tmp_path: Path, tiny_model: Path, background: Callable[[EdgeDaemon], threading.Thread]
) -> None:
    daemon = EdgeDaemon(station(tmp_path, None))
    out = tmp_path / "verdicts.jsonl"
    thread = background(daemon)
    wait_for(lambda: len(verdicts(out)) >= 3)
    cfg = daemon.cfg.model
    daemon.swap_model(Detector.load(tiny_model / "model.onnx", cfg))
    wait_for(lambda: any(v.model is not None for v in verdicts(out)))
    daemon.stop()
    thread.join(20)

    got = verdicts(out)
    first = next(i for i, v in enumerate(got) if v.model is not None)
    assert first >= 3
    assert all(v.reason is Reason.NO_MODEL for v in got[:first])
    assert all(v.model is not None and v.model.version == "0.0.1" for v in got[first:])
    assert [v.seq for v in got] == list(range(1, len(got) + 1))


def test_trigger_inspects_the_next_frame_as_that_unit(
    tmp_path: Path, tiny_model: Path, background: Callable[[EdgeDaemon], threading.Thread]
) -> None:
    daemon = EdgeDaemon(station(tmp_path, tiny_model, mode="triggered"))
    background(daemon)

    def frames() -> float:
        return daemon.metrics.registry.get_sample_value("lineguard_frames_total") or 0.0

    wait_for(lambda: frames() >= 5)  # frames flow, but no unit without a trigger
    assert daemon.summary.units == 0
    sent = time.time()
    first = daemon.trigger(Trigger(unit_id="PLC-0001")).result(timeout=20)
    second = daemon.trigger(Trigger(unit_id="PLC-0002")).result(timeout=20)

    assert (first.unit_id, first.seq, second.unit_id, second.seq) == ("PLC-0001", 1, "PLC-0002", 2)
    assert first.captured_at.timestamp() >= sent
    assert daemon.summary.units == 2


def test_full_outbox_pauses_inspection_and_resumes_without_a_gap(
    tmp_path: Path, tiny_model: Path, background: Callable[[EdgeDaemon], threading.Thread]
) -> None:
    out = tmp_path / "verdicts.jsonl"
    daemon = EdgeDaemon(station(tmp_path, tiny_model, outbox={"max_pending": 10}))
    daemon.source.lossless = False  # a live camera goes on while inspection pauses
    thread = background(daemon)
    wait_for(lambda: len(verdicts(out)) >= 1)
    out.rename(tmp_path / "part1.jsonl")  # lines written meanwhile still land in part1
    out.mkdir()  # the sink cannot write any more: verdicts pile up in the outbox
    wait_for(lambda: any("outbox full" in r for r in daemon.readiness()[1]))
    units_when_full = daemon.summary.units
    taken = daemon.metrics.registry.get_sample_value("lineguard_frames_total") or 0.0
    wait_for(lambda: (daemon.metrics.registry.get_sample_value("lineguard_frames_total") or 0) >= taken + 5)
    assert daemon.summary.units == units_when_full  # the camera went on; inspection paused, none dropped
    assert daemon.metrics.registry.get_sample_value("lineguard_alerts_total", {"kind": "outbox_full"}) == 1
    out.rmdir()  # the sink recovers
    wait_for(lambda: daemon.summary.units > units_when_full + 3)
    daemon.stop()
    thread.join(20)

    got = verdicts(tmp_path / "part1.jsonl") + verdicts(out)
    assert [v.seq for v in got] == list(range(1, daemon.summary.last_seq + 1))
    assert daemon.summary.pending == 0
    assert not any("outbox full" in r for r in daemon.readiness()[1])


def test_triggers_and_verdicts_travel_over_mqtt(
    tmp_path: Path, tiny_model: Path, broker: Broker, background: Callable[[EdgeDaemon], threading.Thread]
) -> None:
    mqtt = {"enabled": True, "host": broker.host, "port": broker.port, "reconnect_max_s": 1.0}
    daemon = EdgeDaemon(station(tmp_path, tiny_model, mode="triggered", mqtt=mqtt))
    with subscribed(broker.host, broker.port, "lineguard/l1/s1/#") as sub:
        thread = background(daemon)

        def online() -> list[dict[str, Any]]:
            return [
                json.loads(p)
                for t, p, _ in list(sub.messages)
                if t.endswith("/status") and json.loads(p).get("state") == "online"
            ]

        wait_until(lambda: bool(online()), 20, "station online")  # it listens for triggers now
        for unit in ("PLC-1", "PLC-2", "PLC-3"):
            sub.client.publish("lineguard/l1/s1/trigger", json.dumps({"unit_id": unit}), qos=1)

        def received() -> list[Verdict]:
            return [Verdict.from_json(p) for t, p, _ in list(sub.messages) if t.endswith("/verdict")]

        wait_until(lambda: len(received()) >= 3, 20, "three verdicts")
        daemon.stop()
        thread.join(20)

    got = received()
    assert [(v.seq, v.unit_id) for v in got] == [(1, "PLC-1"), (2, "PLC-2"), (3, "PLC-3")]
    assert all(v.model is not None and v.model.name == "tiny" for v in got)
    assert any((s.get("model") or {}).get("name") == "tiny" for s in online())
    for _, payload, _ in [m for m in list(sub.messages) if m[0].endswith("/verdict")]:
        assert_matches_schema("verdict", payload)
    for status in online():  # what the daemon's status() becomes on the wire honours the schema
        assert_matches_schema("status", status)
    assert daemon.summary.pending == 0


def test_camera_that_never_delivers_raises_one_alert_and_turns_unready(
    tmp_path: Path, tiny_model: Path, background: Callable[[EdgeDaemon], threading.Thread]
) -> None:
    camera = {"kind": "stream", "uri": f"http://127.0.0.1:{free_port()}/cam", "watchdog_s": 0.5}
    daemon = EdgeDaemon(station(tmp_path, tiny_model, camera=camera, mode="triggered"))
    background(daemon)
    alerts = daemon.metrics.registry
    wait_for(lambda: alerts.get_sample_value("lineguard_alerts_total", {"kind": "camera_down"}) == 1)
    verdict = daemon.trigger(Trigger(unit_id="U-1")).result(timeout=20)  # no frame comes

    ready, reasons = daemon.readiness()
    assert not ready and any(r.startswith("camera down: no frame for") for r in reasons)
    assert (verdict.unit_id, verdict.verdict, verdict.reason) == (
        "U-1",
        VerdictKind.NO_DECISION,
        Reason.CAMERA,
    )
    assert alerts.get_sample_value("lineguard_alerts_total", {"kind": "camera_down"}) == 1
    assert alerts.get_sample_value("lineguard_camera_up") == 0


def test_darker_line_raises_a_brightness_drift_alarm(tmp_path: Path, tiny_model: Path) -> None:
    from lineguard.config import QualityConfig
    from lineguard.inference import QualityGate
    from lineguard.messages import ReferenceStats
    from lineguard.synthetic import CONDITIONS

    gate = QualityGate(QualityConfig(), frozen_frames=1 << 30)
    reports = [gate.check(render_unit(0, 5000 + i, imgsz=160).image) for i in range(120)]
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    card = ModelCard.load(model / "model_card.json")
    card.reference = ReferenceStats(
        brightness=[r.brightness for r in reports],
        contrast=[r.contrast for r in reports],
        sharpness=[r.sharpness for r in reports],
    )
    card.save(model / "model_card.json")
    assert CONDITIONS["dark"].brightness < 1.0
    cfg = station(
        tmp_path,
        model,
        camera={"synthetic_condition": "dark"},
        monitoring={"drift_window": 40, "drift_every": 10},
        policy={"quality": {"min_brightness": 1.0}},
    )
    daemon = EdgeDaemon(cfg)
    daemon.run(max_units=60)
    alarm = daemon.metrics.drift_alarm.labels(signal="brightness")._value.get()
    assert alarm == 2.0
    assert daemon.metrics.alerts.labels(kind="drift")._value.get() >= 1


def test_sampled_frames_reach_the_review_queue_within_the_caps(tmp_path: Path, tiny_model: Path) -> None:
    import sqlite3

    from lineguard.labeling import read_stats, review_dir

    cfg = station(
        tmp_path,
        tiny_model,
        sampling={"audit_share": 1.0, "per_minute": 5, "dedup_distance": -1},
    )
    daemon = EdgeDaemon(cfg)
    daemon.run(max_units=30)
    stats = read_stats(review_dir(cfg.station.data_dir))
    assert stats is not None and stats.depth == 5
    db = sqlite3.connect(review_dir(cfg.station.data_dir) / "review.sqlite")
    items = [json.loads(row[0]) for row in db.execute("SELECT payload FROM items")]
    db.close()
    assert {item["reason"] for item in items} == {"audit"}
    assert len({item["unit_id"] for item in items}) == 5
    assert all(item["model_name"] == "tiny" for item in items)


def test_shadow_model_judges_the_same_units_silently_and_counts_disagreements(tmp_path: Path) -> None:
    from support.signal_model import build_signal_onnx

    build_signal_onnx(tmp_path / "prod", version="2.0.0", contrast=0.19)  # finds the dark defects
    build_signal_onnx(tmp_path / "weak", version="1.0.0", contrast=0.45)  # misses them
    cfg = station(
        tmp_path,
        tmp_path / "prod",
        camera={"fps": 5, "synthetic_defect_rate": 0.6},  # 200 ms per frame: time for the shadow
    )
    cfg.model.shadow_path = tmp_path / "weak" / "model.onnx"
    daemon = EdgeDaemon(cfg)
    shadow = daemon.shadow
    assert shadow is not None
    daemon.run(max_units=25)
    published = verdicts(tmp_path / "verdicts.jsonl")
    assert len(published) == 25
    assert {v.model.version for v in published if v.model} == {"2.0.0"}  # the shadow never publishes
    assert shadow.units + shadow.skipped >= 20
    assert shadow.disagreements > 0
    assert daemon.metrics.shadow_disagreements._value.get() == shadow.disagreements
