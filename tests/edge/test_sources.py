"""Frame sources: the newest frame wins, finite inputs end, a dropped stream comes back."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from support.bombs import png_bomb
from support.mosquitto import free_port

from lineguard.config import CameraConfig
from lineguard.edge.source_factory import open_source
from lineguard.edge.sources import Frame, FrameSource, unit_keys
from lineguard.errors import ConfigError
from lineguard.monitoring.metrics import Metrics
from lineguard.synthetic import render_unit


def _drain(source: FrameSource, limit_s: float = 20.0) -> list[Frame]:
    frames: list[Frame] = []
    deadline = time.monotonic() + limit_s
    while not source.exhausted and time.monotonic() < deadline:
        frame = source.read_latest(0.5)
        if frame is not None:
            frames.append(dataclasses.replace(frame, image=frame.image.copy()))
    return frames


class MjpegServer:
    """An MJPEG-over-HTTP camera (multipart/x-mixed-replace) on a fixed port; stop and restart it."""

    def __init__(self, port: int, fps: float = 20.0) -> None:
        self.port = port
        self.fps = fps
        self.frames = [cv2.imencode(".jpg", render_unit(3, i, imgsz=96).image)[1].tobytes() for i in range(8)]
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()

    def start(self) -> MjpegServer:
        halt = self._halt = threading.Event()
        frames, period = self.frames, 1.0 / self.fps

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                i = 0
                try:
                    while not halt.is_set():
                        jpg = frames[i % len(frames)]
                        head = f"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpg)}\r\n\r\n"
                        self.wfile.write(head.encode() + jpg + b"\r\n")
                        i += 1
                        halt.wait(period)
                except OSError:
                    pass

            def log_message(self, format: str, *args: object) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._halt.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)


@pytest.fixture
def mjpeg() -> Iterator[MjpegServer]:
    server = MjpegServer(free_port()).start()
    try:
        yield server
    finally:
        server.stop()


def test_synthetic_frames_are_the_units_of_the_line() -> None:
    cfg = CameraConfig(kind="synthetic", fps=50, synthetic_seed=5, synthetic_imgsz=64)
    source = open_source(cfg)
    source.start()
    try:
        frame = source.read_latest(5.0)
    finally:
        source.stop()
    assert frame is not None
    expected = render_unit(5, frame.index, imgsz=64, defect_rate=cfg.synthetic_defect_rate).image
    assert np.array_equal(frame.image, expected)
    assert frame.captured_at.tzinfo is not None


def test_video_without_loop_delivers_every_frame_once_then_ends(synthetic_dataset: Path) -> None:
    video = synthetic_dataset / "video" / "line.avi"
    truth = (synthetic_dataset / "video" / "line_truth.jsonl").read_text().splitlines()
    metrics = Metrics()
    source = open_source(CameraConfig(kind="video", uri=str(video), fps=200), metrics)
    source.start()
    try:
        frames = _drain(source)
        health = source.health()
    finally:
        source.stop()
    assert source.exhausted
    indices = [f.index for f in frames]
    assert indices == sorted(set(indices))
    assert len(frames) + health.skipped == len(truth)
    assert metrics.registry.get_sample_value("lineguard_frames_skipped_total") == health.skipped
    assert not health.up and health.detail == "end of input"


def test_folder_is_read_in_name_order(tmp_path: Path) -> None:
    for i in (2, 0, 1):
        cv2.imwrite(str(tmp_path / f"img_{i}.png"), np.full((32, 32, 3), 40 + 60 * i, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    source = open_source(CameraConfig(kind="folder", uri=str(tmp_path), fps=20))
    source.start()
    try:
        frames = _drain(source)
    finally:
        source.stop()
    assert [int(f.image[0, 0, 0]) for f in frames] == [40, 100, 160]


def test_folder_skips_an_image_bomb_without_decoding_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), np.full((32, 32, 3), 40, np.uint8))
    (tmp_path / "b.png").write_bytes(png_bomb(20_000, 20_000))
    cv2.imwrite(str(tmp_path / "c.png"), np.full((32, 32, 3), 160, np.uint8))
    decoded: list[int] = []
    real_imdecode = cv2.imdecode

    def spy(buf: Any, flags: int) -> Any:
        decoded.append(buf.size)
        return real_imdecode(buf, flags)

    monkeypatch.setattr(cv2, "imdecode", spy)
    source = open_source(CameraConfig(kind="folder", uri=str(tmp_path), fps=20))
    source.start()
    try:
        frames = _drain(source)
    finally:
        source.stop()
    assert [int(f.image[0, 0, 0]) for f in frames] == [40, 160]
    assert len(decoded) == 2  # the bomb never reached the decoder
    assert any("b.png" in r.getMessage() and "20000x20000" in r.getMessage() for r in caplog.records)


def test_stream_credentials_never_reach_status_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    source = open_source(CameraConfig(kind="stream", uri="rtsp://op:hunter2@127.0.0.1:9/x", watchdog_s=0.5))
    source.start()
    try:
        time.sleep(1.0)
        health = source.health()
    finally:
        source.stop()
    assert source.name == "stream:rtsp://***@127.0.0.1:9/x"
    assert "hunter2" not in health.detail
    assert all("hunter2" not in r.getMessage() for r in caplog.records)


def test_live_source_hands_a_slow_reader_the_newest_frame_and_counts_skips(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    source = open_source(CameraConfig(kind="synthetic", fps=200, synthetic_imgsz=64), metrics)
    source.lossless = False  # a live camera: what a station in triggered mode makes of any source
    source.start()
    try:
        first = source.read_latest(5.0)
        assert first is not None
        time.sleep(0.3)  # the reader is busy: several frames arrive meanwhile
        second = source.read_latest(5.0)
        health = source.health()
    finally:
        source.stop()
    assert second is not None
    assert second.index > first.index + 1
    assert health.skipped >= second.index - first.index - 1
    assert source.skips == {"busy": health.skipped}
    assert metrics.registry.get_sample_value("lineguard_frames_skipped_total") == health.skipped
    logged = [r for r in caplog.records if "frames_skipped" in r.getMessage()]
    assert len(logged) == 1 < health.skipped  # the first skip is logged, not every one


def test_file_source_waits_for_a_slow_reader_and_loses_no_frame(tmp_path: Path) -> None:
    for i in range(6):
        cv2.imwrite(str(tmp_path / f"img_{i}.png"), np.full((32, 32, 3), 40 + 30 * i, np.uint8))
    metrics = Metrics()
    source = open_source(CameraConfig(kind="folder", uri=str(tmp_path), fps=200), metrics)
    source.start()
    try:
        time.sleep(0.3)  # the station is still starting: at 200 fps the whole folder would be gone
        frames = _drain(source)
        health = source.health()
    finally:
        source.stop()
    assert [int(f.image[0, 0, 0]) for f in frames] == [40 + 30 * i for i in range(6)]
    assert [(f.index, f.unit, f.file) for f in frames] == [(i, f"img_{i}", f"img_{i}.png") for i in range(6)]
    assert (health.skipped, source.skips) == (0, {})
    assert metrics.registry.get_sample_value("lineguard_frames_skipped_total") == 0


def test_folder_units_are_named_by_file_and_an_unreadable_one_is_a_counted_skip(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    names = ["a.png", "b 2.png", "c.jpg", "c.png", "d.png", "e.png"]
    for i, name in enumerate(names):
        cv2.imwrite(str(tmp_path / name), np.full((32, 32, 3), 40 + 30 * i, np.uint8))
    (tmp_path / "d.png").write_bytes(b"not an image at all")
    metrics = Metrics()
    source = open_source(CameraConfig(kind="folder", uri=str(tmp_path), fps=100), metrics)
    source.start()
    try:
        frames = _drain(source)
    finally:
        source.stop()
    assert [(f.index, f.unit, f.file) for f in frames] == [
        (0, "a", "a.png"),
        (1, "b_2-i000001", "b 2.png"),
        (2, "c-i000002", "c.jpg"),
        (3, "c-i000003", "c.png"),
        (5, "e", "e.png"),
    ]
    assert source.skips == {"unreadable": 1}
    assert metrics.registry.get_sample_value("lineguard_frames_skipped_total") == 1
    assert any("image_unreadable" in r.getMessage() and "d.png" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("stems", "keys"),
    [
        ([], []),
        (["img_001", "B-2.v1"], ["img_001", "B-2.v1"]),
        (["a b", "a_b"], ["a_b-i000000", "a_b-i000001"]),  # cleaning would make them one
        (["x", "x"], ["x-i000000", "x-i000001"]),  # x.png and x.jpg
        (["", "..", "a\nb"], ["-i000000", "-i000001", "a_b-i000002"]),
        (["a b", "a_b-i000000"], ["a_b-i000000", "a_b-i000000-2"]),  # a file named like a fallback
        (["p" * 80], ["p" * 56 + "-i000000"]),
    ],
)
def test_unit_keys_are_unique_safe_and_deterministic(stems: list[str], keys: list[str]) -> None:
    assert unit_keys(stems) == keys
    assert all(len(k) <= 64 for k in keys)


def test_identical_frames_mark_the_camera_frozen(tmp_path: Path) -> None:
    image = render_unit(1, 1, imgsz=64).image
    for i in range(6):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), image)
    source = open_source(CameraConfig(kind="folder", uri=str(tmp_path), fps=100, loop=True, frozen_frames=4))
    source.start()
    try:
        deadline = time.monotonic() + 5
        while not source.health().frozen and time.monotonic() < deadline:
            source.read_latest(0.2)
        health = source.health()
    finally:
        source.stop()
    assert health.frozen
    assert "identical frames" in health.detail


@pytest.mark.parametrize(
    ("kind", "uri"),
    [("video", "/nonexistent/line.avi"), ("folder", "/nonexistent"), ("stream", "camera-1")],
)
def test_wrong_uri_is_a_config_error(kind: str, uri: str) -> None:
    with pytest.raises(ConfigError, match=r"camera\.uri"):
        open_source(CameraConfig.model_validate({"kind": kind, "uri": uri}))


def test_dropped_stream_is_reconnected(mjpeg: MjpegServer) -> None:
    metrics = Metrics()
    cfg = CameraConfig(
        kind="stream", uri=f"http://127.0.0.1:{mjpeg.port}/stream.mjpg", watchdog_s=0.5, reconnect_max_s=0.5
    )
    source = open_source(cfg, metrics)
    source.start()
    try:
        assert source.read_latest(10.0) is not None
        assert source.health().up
        mjpeg.stop()  # the camera goes away
        deadline = time.monotonic() + 10
        while source.health().up and time.monotonic() < deadline:
            source.read_latest(0.1)
        down = source.health()
        assert not down.up
        assert metrics.registry.get_sample_value("lineguard_camera_up") == 0
        mjpeg.start()  # and comes back on the same address
        deadline = time.monotonic() + 15
        frame = None
        while frame is None and time.monotonic() < deadline:
            frame = source.read_latest(0.5, newer_than=time.monotonic())
        health = source.health()
    finally:
        source.stop()
    assert frame is not None, json.dumps(down.__dict__)
    assert health.up and health.reconnects >= 1
    assert metrics.registry.get_sample_value("lineguard_camera_up") == 1
