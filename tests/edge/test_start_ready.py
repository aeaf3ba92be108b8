"""Start ready: the camera starts only once the model is warm and the API answers.

A live camera keeps only its newest frame; started before the HTTP server was up, its first frame
sat in the slot while the station finished starting and the first unit missed its deadline.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from lineguard.config import CameraConfig, load_config
from lineguard.edge.daemon import EdgeDaemon
from lineguard.edge.sources import SyntheticSource
from lineguard.messages import Reason, Verdict, VerdictKind


class _LiveLine(SyntheticSource):
    """The synthetic line behaving like a live camera (newest frame only, clock at capture).

    It notes what the station offered when it was started, as a camera would see it.
    """

    def __init__(self, cfg: CameraConfig, daemon_ref: list[EdgeDaemon]) -> None:
        super().__init__(cfg)
        self.lossless = False
        self._daemon = daemon_ref
        self.seen_at_start: tuple[bool, int | None] | None = None

    def start(self) -> None:
        daemon = self._daemon[0]
        port = daemon.http_port
        answered = None
        if port is not None:
            answered = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5.0).status_code
        self.seen_at_start = (daemon.slot is not None, answered)
        super().start()


def test_first_unit_of_a_live_camera_is_inspected_like_every_other(tmp_path: Path, tiny_model: Path) -> None:
    cfg = load_config(
        None,
        environ={},
        overrides={
            "station": {"station": "s1", "data_dir": str(tmp_path / "var")},
            # 2 frames/s: a frame taken before the station is up stays the newest for 0.5 s
            "camera": {"kind": "synthetic", "fps": 2, "synthetic_imgsz": 160},
            "model": {"path": str(tiny_model / "model.onnx"), "threads": 1, "warmup_runs": 1},
            "mqtt": {"enabled": False},
            "http": {"port": 0},
            "jsonl_path": str(tmp_path / "verdicts.jsonl"),
        },
    )
    ref: list[EdgeDaemon] = []
    source = _LiveLine(cfg.camera, ref)
    daemon = EdgeDaemon(cfg, source=source)
    ref.append(daemon)
    daemon.run(max_units=2)
    assert source.seen_at_start == (True, 200)  # model loaded and warm, API answering
    lines = (tmp_path / "verdicts.jsonl").read_text().splitlines()
    first = Verdict.from_json(lines[0])
    assert first.verdict is not VerdictKind.NO_DECISION or first.reason is not Reason.DEADLINE, first
    assert first.latency_ms < cfg.policy.deadline_ms
