"""The live view's latest frame: handed over by the inspection thread, encoded by whoever watches.

A source's frame lives in a reused ring buffer and is overwritten a few frames later, so a viewer
cannot simply keep a reference to it; copying every frame would cost the inspection thread for
nobody. ``offer`` therefore copies the decided frame only while a viewer has asked for one in the
last few seconds (``want``) and at most ``http.live_fps`` times a second, then swaps one reference
(atomic under the GIL, no lock on the frame path). Annotating and JPEG encoding happen in the HTTP
task that serves the viewer, once per new frame however many viewers share it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from lineguard.inference import annotate_frame
from lineguard.messages import Verdict

__all__ = ["LiveFrame", "LiveView"]

_VIEWER_GRACE_S = 3.0  # a viewer that stopped asking this long ago no longer costs a copy
_JPEG_QUALITY = 80
_MIN_SIDE = 480  # a small frame is scaled up before drawing, so its labels stay legible on a screen


@dataclass(frozen=True)
class LiveFrame:
    """A private copy of a decided frame, the verdict it got and when it was copied."""

    version: int
    image: npt.NDArray[np.uint8]
    verdict: Verdict
    copied_mono: float


class LiveView:
    """The latest decided frame for the live view; ``offer`` runs on the inspection thread."""

    def __init__(self, fps: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.period_s = 1.0 / fps
        self._clock = clock
        self._wanted_until = float("-inf")
        self._last_copy = float("-inf")
        self._latest: LiveFrame | None = None
        self._encode_lock = threading.Lock()
        self._jpeg: tuple[int, bytes] | None = None

    def want(self, seconds: float = _VIEWER_GRACE_S) -> None:
        """A viewer is watching: keep copying frames for the next ``seconds``."""
        self._wanted_until = max(self._wanted_until, self._clock() + seconds)

    @property
    def watched(self) -> bool:
        return self._clock() <= self._wanted_until

    def offer(self, image: npt.NDArray[np.uint8], verdict: Verdict) -> None:
        """Keep a copy of ``image`` if someone watches and the last copy is a period old; else nothing."""
        now = self._clock()
        if now > self._wanted_until or now - self._last_copy < self.period_s:
            return
        self._last_copy = now
        version = 1 if self._latest is None else self._latest.version + 1
        self._latest = LiveFrame(version, image.copy(), verdict, now)

    def latest(self) -> LiveFrame | None:
        return self._latest

    def jpeg(self, frame: LiveFrame) -> bytes:
        """``frame`` annotated and JPEG-encoded; viewers of the same frame share one encoding."""
        with self._encode_lock:
            cached = self._jpeg
            if cached is not None and cached[0] == frame.version:
                return cached[1]
            ok, buf = cv2.imencode(
                ".jpg",
                annotate_frame(_legible(frame.image), frame.verdict),
                [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY],
            )
            if not ok:
                raise ValueError("OpenCV could not encode the live frame as JPEG")
            data = buf.tobytes()
            self._jpeg = (frame.version, data)
            return data


def _legible(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """``image`` with its long side at least 480 px, aspect ratio kept."""
    h, w = image.shape[:2]
    scale = _MIN_SIDE / max(h, w, 1)
    if scale <= 1.0:
        return image
    size = (round(w * scale), round(h * scale))
    return np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_LINEAR), np.uint8)
