"""GigE Vision cameras (``camera.kind: gige``) against Aravis' own fake camera, a real GVCP/GVSP peer.

The fake binds UDP 3956 on an interface's own address, so one fake camera on 127.0.0.1 serves the
module; it keeps the settings the previous test wrote, which is what a real camera does too (the
source writes every setting on connect). A station triggered by the PLC's unit id (HTTP here;
MQTT takes the same path) fires one software trigger per unit and gets exactly one frame back;
pulling the camera (stopping its process) turns the station's camera down with an alert, and the
PLC still gets a NO_DECISION per unit until the camera is back.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from support.aravis import FakeCamera
from support.mosquitto import Broker
from support.mqtt import subscribed, wait_until
from support.signal_model import build_signal_onnx
from support.stations import running_station

from lineguard.cli import main
from lineguard.config import CameraConfig, GigeConfig, load_config
from lineguard.edge.gige import BufferInfo, buffer_problem, load_aravis, to_bgr
from lineguard.edge.source_factory import open_source
from lineguard.errors import ConfigError, MissingDependencyError
from lineguard.messages import Reason, Verdict, VerdictKind
from lineguard.monitoring import Metrics

MONO8 = 0x01080001  # GenICam PFNC codes, as the camera reports them
RGB8 = 0x02180014


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("signal_model")
    build_signal_onnx(out)
    return out


@pytest.fixture(scope="module")
def fake_camera() -> Iterator[FakeCamera]:
    with FakeCamera("127.0.0.1", "LG0001") as fake:
        yield fake


@pytest.fixture
def camera(fake_camera: FakeCamera) -> FakeCamera:
    """The module's fake camera, running (a test that pulled it may have failed before plugging it in)."""
    if not fake_camera.running:
        fake_camera.start()
    return fake_camera


def gige(fake: FakeCamera, **settings: Any) -> dict[str, Any]:
    return {"kind": "gige", "uri": fake.address, "fps": 25, "watchdog_s": 1.0, "reconnect_max_s": 0.5} | {
        "gige": settings
    }


# -- a buffer is hostile until checked -------------------------------------------------------------
def test_buffers_the_camera_cannot_vouch_for_are_refused() -> None:
    good = BufferInfo(complete=True, image=True, pixel_format=MONO8, width=64, height=48, nbytes=64 * 48)
    assert buffer_problem(good, "Mono8", MONO8, 40_000_000) is None
    cases = {
        "incomplete buffer": BufferInfo(False, True, MONO8, 64, 48, 64 * 48),
        "no image": BufferInfo(True, False, MONO8, 64, 48, 64 * 48),
        "pixel format 0x02180014, configured Mono8": BufferInfo(True, True, RGB8, 64, 48, 64 * 48 * 3),
        "size 0x48 outside": BufferInfo(True, True, MONO8, 0, 48, 0),
        "size 70000x2 outside": BufferInfo(True, True, MONO8, 70_000, 2, 140_000),
        "over camera.max_image_pixels": BufferInfo(True, True, MONO8, 4000, 4000, 16_000_000),
        "3071 bytes for 64x48 Mono8 (expected 3072)": BufferInfo(True, True, MONO8, 64, 48, 3071),
    }
    for expected, info in cases.items():
        problem = buffer_problem(info, "Mono8", MONO8, 1_000_000)
        assert problem is not None and expected in problem, (expected, problem)
    rgb = BufferInfo(True, True, RGB8, 64, 48, 64 * 48)  # one byte per pixel is a third of an RGB8 frame
    assert "expected 9216" in (buffer_problem(rgb, "RGB8", RGB8, 1_000_000) or "")


def test_every_pixel_format_becomes_a_bgr_frame() -> None:
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 10  # red, green, blue
    assert to_bgr(rgb.tobytes(), 6, 4, "RGB8")[2, 3].tolist() == [10, 100, 200]

    mono = np.arange(24, dtype=np.uint8).reshape(4, 6)
    out = np.empty((4, 6, 3), np.uint8)
    bgr = to_bgr(mono.tobytes(), 6, 4, "Mono8", out)
    assert bgr is out and all(np.array_equal(bgr[..., c], mono) for c in range(3))

    # A red scene through an RGGB mosaic: only the red sites see light.
    mosaic = np.zeros((8, 8), np.uint8)
    mosaic[0::2, 0::2] = 200
    assert to_bgr(mosaic.tobytes(), 8, 8, "BayerRG8")[3, 3].tolist() == [0, 0, 200]
    # The same bytes read as BGGR put the light on the blue sites instead.
    assert to_bgr(mosaic.tobytes(), 8, 8, "BayerBG8")[3, 3].tolist() == [200, 0, 0]


# -- settings ---------------------------------------------------------------------------------------
def test_gige_settings_are_typed_and_a_software_trigger_needs_a_triggered_station() -> None:
    cfg = load_config(None, environ={}, overrides={"mode": "triggered", "camera": {"kind": "gige"}})
    assert cfg.camera.gige == GigeConfig()
    with pytest.raises(ConfigError, match="exposure_time"):
        load_config(None, environ={}, overrides={"camera": {"gige": {"exposure_time": 100}}})
    with pytest.raises(ConfigError, match="set mode: triggered"):
        load_config(None, environ={}, overrides={"camera": {"kind": "gige", "gige": {"trigger": "software"}}})
    with pytest.raises(ConfigError, match="trigger_line"):
        load_config(None, environ={}, overrides={"camera": {"gige": {"trigger_line": "Line0; reboot"}}})


def test_without_pygobject_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gi", None)  # what a station without the gige extra sees
    with pytest.raises(MissingDependencyError, match=r"lineguard\[gige\]"):
        load_aravis()


# -- the real protocol ------------------------------------------------------------------------------
@pytest.mark.parametrize(("pixel_format", "colour"), [("Mono8", False), ("RGB8", True), ("BayerRG8", True)])
def test_each_pixel_format_arrives_as_a_bgr_frame(
    camera: FakeCamera, pixel_format: str, colour: bool
) -> None:
    cfg = CameraConfig.model_validate(gige(camera, pixel_format=pixel_format))
    source = open_source(cfg, Metrics())
    source.start()
    try:
        frame = source.read_latest(5.0)
    finally:
        source.stop()
    assert frame is not None
    image = frame.image
    assert image.shape == (512, 512, 3) and image.dtype == np.uint8  # the fake's sensor
    channels_differ = not (
        np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2])
    )
    assert channels_differ is colour
    # The fake's first frame after a start is sometimes incomplete: refused and counted, not judged.
    assert set(source.skips) <= {"busy", "bad_buffer"} and source.skips.get("bad_buffer", 0) <= 1


def test_a_camera_named_by_serial_number_is_found(camera: FakeCamera) -> None:
    cfg = CameraConfig.model_validate(gige(camera) | {"uri": camera.serial})
    source = open_source(cfg)
    source.start()
    try:
        assert source.read_latest(5.0) is not None
    finally:
        source.stop()


def test_free_running_camera_frames_become_units(tmp_path: Path, model_dir: Path, camera: FakeCamera) -> None:
    with running_station(tmp_path, model_dir, camera=gige(camera)) as (daemon, base):
        wait_until(lambda: daemon.summary.units >= 5, 15, "five units from the camera")
        status = httpx.get(f"{base}/v1/status", timeout=5).json()
    assert status["camera"]["source"] == f"gige:{camera.address}"
    assert status["camera"]["up"] is True and status["camera"]["fps"] > 0
    lines = (tmp_path / "verdicts.jsonl").read_text().splitlines()
    verdicts = [Verdict.from_json(line) for line in lines]
    assert len(verdicts) >= 5
    assert all(v.unit_id == f"s1-{v.seq}" for v in verdicts)  # a live camera's units are numbered


def _trigger(base: str, unit_id: str) -> Verdict:
    response = httpx.post(f"{base}/v1/inspect", params={"unit_id": unit_id}, timeout=15)
    assert response.status_code == 200, response.text
    return Verdict.from_json(response.content)


def test_software_trigger_gives_one_frame_and_one_verdict_per_plc_unit(
    tmp_path: Path, model_dir: Path, camera: FakeCamera
) -> None:
    settings = gige(camera, trigger="software", pixel_format="BayerGR8")
    with running_station(tmp_path, model_dir, mode="triggered", first_unit=False, camera=settings) as (
        daemon,
        base,
    ):
        wait_until(lambda: daemon.status()["camera"]["up"], 10, "the camera connected")
        time.sleep(1.5)  # longer than the watchdog: a triggered camera's silence is not a fault
        assert daemon.status()["camera"]["up"] is True
        assert daemon.metrics.registry.get_sample_value("lineguard_frames_total") == 0
        verdicts = [_trigger(base, f"PLC-{i}") for i in range(6)]
        frames = daemon.metrics.registry.get_sample_value("lineguard_frames_total")
        units = daemon.summary.units
    assert [v.unit_id for v in verdicts] == [f"PLC-{i}" for i in range(6)]
    assert all(v.reason is not Reason.CAMERA for v in verdicts)  # each was judged on its own frame
    assert (units, frames) == (6, 6)  # one trigger, one frame, one verdict
    assert [v.seq for v in verdicts] == list(range(1, 7))


def test_mqtt_triggers_fire_the_camera_and_the_plc_gets_its_unit_ids_back(
    tmp_path: Path, model_dir: Path, camera: FakeCamera, broker: Broker
) -> None:
    mqtt = {"enabled": True, "host": broker.host, "port": broker.port}
    settings = gige(camera, trigger="software")
    with (
        subscribed(broker.host, broker.port, "lineguard/line1/s1/verdict") as sub,
        running_station(
            tmp_path, model_dir, mode="triggered", first_unit=False, camera=settings, mqtt=mqtt
        ) as (daemon, _),
    ):
        wait_until(lambda: daemon.status()["camera"]["up"] and daemon.delivery.readiness()[0], 10, "ready")
        units = [f"PLC-{i:03d}" for i in range(5)]
        for unit in units:  # sent at once: the station fires the camera once per unit, in order
            sub.client.publish("lineguard/line1/s1/trigger", json.dumps({"unit_id": unit}), qos=1)
        wait_until(lambda: len(sub.messages) >= 5, 15, "five verdicts")
        time.sleep(0.3)  # a sixth would have arrived by now
        frames = daemon.metrics.registry.get_sample_value("lineguard_frames_total")
    got = [Verdict.from_json(payload) for _, payload, _ in list(sub.messages)]
    assert [v.unit_id for v in got] == units
    assert all(v.reason is not Reason.CAMERA for v in got)
    assert frames == 5


def test_check_fires_a_software_triggered_camera_once(
    tmp_path: Path, model_dir: Path, camera: FakeCamera, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "station.yaml"
    station = {
        "mode": "triggered",
        "station": {"station": "s1", "data_dir": str(tmp_path / "var")},
        "camera": gige(camera, trigger="software", pixel_format="RGB8"),
        "model": {"path": str(model_dir / "model.onnx"), "threads": 1, "warmup_runs": 1},
        "mqtt": {"enabled": False},
    }
    config.write_text(yaml.safe_dump(station))
    assert main(["edge", "check", "--config", str(config), "--camera"]) == 0
    assert f"OK    camera     gige:{camera.address}: 512x512 frame" in capsys.readouterr().out


def test_hardware_triggered_camera_waits_for_its_line_and_stays_up(camera: FakeCamera) -> None:
    cfg = CameraConfig.model_validate(gige(camera, trigger="hardware", trigger_line="Line0"))
    source = open_source(cfg)
    source.start()
    try:
        assert source.read_latest(1.5) is None  # no pulse on Line0, no frame
        health = source.health()
        assert health.up and health.detail == "capturing"  # silent longer than the watchdog, still up
        assert source.lossless  # every pulse is a unit
    finally:
        source.stop()


def test_a_setting_the_camera_refuses_keeps_it_down_and_says_which(camera: FakeCamera) -> None:
    # The fake camera triggers on rising edges only.
    cfg = CameraConfig.model_validate(gige(camera, trigger="hardware", trigger_activation="falling_edge"))
    source = open_source(cfg)
    source.start()
    try:
        wait_until(lambda: "cannot open" in source.health().detail, 5, "the refused setting")
        health = source.health()
    finally:
        source.stop()
    assert not health.up and "TriggerActivation" in health.detail and "FallingEdge" in health.detail


@pytest.mark.slow  # the heartbeat needs about 5 s to call the camera lost
def test_pulled_camera_degrades_the_station_answers_every_trigger_and_recovers(
    tmp_path: Path, model_dir: Path, camera: FakeCamera
) -> None:
    settings = gige(camera, trigger="software")
    with running_station(tmp_path, model_dir, mode="triggered", first_unit=False, camera=settings) as (
        daemon,
        base,
    ):
        registry = daemon.metrics.registry
        wait_until(lambda: daemon.status()["camera"]["up"], 10, "the camera connected")
        before = _trigger(base, "U-before")
        camera.stop()  # the cable is pulled
        wait_until(lambda: not daemon.status()["camera"]["up"], 15, "the camera reported down")
        wait_until(
            lambda: registry.get_sample_value("lineguard_alerts_total", {"kind": "camera_down"}) == 1,
            5,
            "one camera_down alert",
        )
        ready = httpx.get(f"{base}/readyz", timeout=5)
        assert ready.status_code == 503 and "camera down" in ready.text
        assert registry.get_sample_value("lineguard_camera_up") == 0
        t0 = time.monotonic()
        during = [_trigger(base, f"U-out-{i}") for i in range(3)]
        answered_in = time.monotonic() - t0

        camera.start()  # plugged back in
        wait_until(lambda: daemon.status()["camera"]["up"], 15, "the camera back up")
        after = _trigger(base, "U-after")
        status = daemon.status()["camera"]
        reconnects = registry.get_sample_value("lineguard_camera_reconnects_total")

    assert before.reason is not Reason.CAMERA
    assert [(v.unit_id, v.verdict, v.reason) for v in during] == [
        (f"U-out-{i}", VerdictKind.NO_DECISION, Reason.CAMERA) for i in range(3)
    ]
    assert answered_in < 2.0  # the PLC is not kept waiting for a camera that is known to be gone
    assert after.unit_id == "U-after" and after.reason is not Reason.CAMERA
    assert status["reconnects"] == 1 and reconnects == 1
