"""The live view's frame hand-over: a copy only while someone watches, at most ``live_fps`` a second."""

from __future__ import annotations

import cv2
import numpy as np
from support.mqtt import make_verdict

from lineguard.edge.live import LiveView


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_nobody_watching_costs_no_copy() -> None:
    live = LiveView(5.0, clock=_Clock())
    live.offer(np.zeros((8, 8, 3), np.uint8), make_verdict(1))
    assert live.latest() is None


def test_watched_frame_is_a_private_copy_throttled_to_live_fps() -> None:
    clock = _Clock()
    live = LiveView(5.0, clock=clock)
    ring = np.full((16, 16, 3), 50, np.uint8)  # stands for a source's reused capture buffer
    live.want()
    live.offer(ring, make_verdict(1))
    ring[:] = 200  # the source overwrites its buffer with the next frame
    first = live.latest()
    assert first is not None and first.verdict.seq == 1 and int(first.image.max()) == 50
    clock.now += 0.1  # under 1/5 s later: skipped
    live.offer(ring, make_verdict(2))
    assert live.latest() is first
    clock.now += 0.15  # a period since the copy
    live.offer(ring, make_verdict(3))
    second = live.latest()
    assert second is not None and second.verdict.seq == 3 and second.version == first.version + 1
    clock.now += 10.0  # the viewer left: no more copies
    live.offer(ring, make_verdict(4))
    assert live.latest() is second


def test_jpeg_is_the_annotated_frame_at_its_own_aspect_ratio() -> None:
    live = LiveView(5.0, clock=_Clock())
    live.want()
    live.offer(np.full((120, 160, 3), 90, np.uint8), make_verdict(7))
    frame = live.latest()
    assert frame is not None
    image = cv2.imdecode(np.frombuffer(live.jpeg(frame), np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (360, 480, 3)  # 160 px scaled up to legible, 4:3 kept
    assert live.jpeg(frame) is live.jpeg(frame)  # viewers of one frame share one encoding
