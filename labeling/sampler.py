"""Which frames go to QA staff: few, well chosen, and never at the cost of the inspection loop.

``ReviewSampler.offer`` runs on the inspection thread after each verdict. It picks a reason
(``disagreement`` with the shadow model, ``uncertain`` = a box within a band around its class
threshold, ``no_decision``, ``class`` = a chosen class was seen, ``audit`` = a random share of
PASS and FAIL units that catches silent failures of a confident model), drops near-duplicates of
recent samples by a perceptual hash (a stopped line shows the same unit for minutes), applies
per-minute/hour/day caps and hands the frame to the review queue without waiting: encoding and
disk writes happen on the queue's writer thread. A drift alarm may ``boost`` the audit share for
a while, so a changed line gets more eyes.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

from lineguard.config import SamplingConfig
from lineguard.inference import Detections
from lineguard.labeling.review_outbox import ReviewBox, ReviewItem, ReviewQueue
from lineguard.messages import Verdict, VerdictKind

if TYPE_CHECKING:
    from lineguard.monitoring import Metrics

__all__ = [
    "REASONS",
    "ReviewSampler",
    "SamplerStats",
    "class_thresholds",
    "hamming",
    "perceptual_hash",
    "review_boxes",
]

# In priority order: a frame sampled for several reasons is filed under the first. A doubtful box
# usually makes the unit NO_DECISION too; "uncertain" says more, so it goes first, and
# "no_decision" is left for deadline, image quality and no-model units.
REASONS: Final = ("disagreement", "uncertain", "no_decision", "class", "audit")
_WINDOWS: Final = (("minute", 60.0), ("hour", 3600.0), ("day", 86400.0))
_DEFAULT_THRESHOLD: Final = 0.5


def perceptual_hash(frame: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """pHash: signs of the 8×8 lowest DCT frequencies of a 32×32 gray thumbnail (63 bits, packed).

    Robust to sensor noise and small shifts in brightness, unlike a byte hash; on the synthetic
    line two different units differ in 10+ bits and one unit under fresh noise in at most 4.
    """
    import cv2

    height, width = frame.shape[:2]
    if max(height, width) > 256:  # cheap nearest-neighbour pre-shrink of big camera frames
        scale = 256 / max(height, width)
        size = (max(32, round(width * scale)), max(32, round(height * scale)))
        frame = np.asarray(cv2.resize(frame, size, interpolation=cv2.INTER_NEAREST), dtype=np.uint8)
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
    thumb = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low: npt.NDArray[np.float32] = np.asarray(cv2.dct(thumb), dtype=np.float32)[:8, :8].reshape(-1)[1:]
    return np.packbits(low > np.float32(np.median(low)))


def hamming(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> int:
    return int(np.unpackbits(np.bitwise_xor(a, b)).sum())


def class_thresholds(classes: list[str], thresholds: dict[str, float]) -> npt.NDArray[np.float32]:
    """Each class's threshold in model order; a class the card does not name gets the 0.5 default."""
    return np.array([thresholds.get(name, _DEFAULT_THRESHOLD) for name in classes], dtype=np.float32)


def review_boxes(
    detections: Detections, classes: list[str], thresholds: npt.NDArray[np.float32], band: float
) -> tuple[ReviewBox, ...]:
    """The boxes QA staff see pre-drawn: those at or above their class threshold less ``band``.

    The station's samples and the predictions refreshed after a promotion use this one rule, so
    staff see the same kind of guess whichever way a task got it.
    """
    if not len(detections):
        return ()
    ids = np.clip(detections.class_id, 0, len(classes) - 1)
    shown = detections.confidence >= thresholds[ids] - band
    boxes: list[ReviewBox] = []
    for i in np.flatnonzero(shown):
        x1, y1, x2, y2 = (float(v) for v in np.clip(detections.xyxy[i], 0.0, 1.0))
        boxes.append(
            ReviewBox(
                class_name=classes[int(ids[i])],
                confidence=float(detections.confidence[i]),
                xyxy=(x1, y1, x2, y2),
            )
        )
    return tuple(boxes)


@dataclass
class SamplerStats:
    offered: int = 0
    sampled: int = 0
    duplicate: int = 0
    capped: int = 0
    dropped: int = 0


class ReviewSampler:
    """Decides per unit whether its frame goes to review, and queues it without blocking."""

    def __init__(
        self,
        cfg: SamplingConfig,
        classes: list[str],
        thresholds: dict[str, float],
        queue: ReviewQueue,
        metrics: Metrics | None,
        *,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.classes = list(classes)
        self._thr = class_thresholds(self.classes, thresholds)
        self._chosen = np.array([name in set(cfg.classes) for name in self.classes], dtype=bool)
        self._queue = queue
        self._metrics = metrics
        self._rng = random.Random(seed)
        self._clock = clock
        self._taken: deque[float] = deque()
        self._recent: deque[npt.NDArray[np.uint8]] = deque(maxlen=max(1, cfg.dedup_window))
        self._boost = 1.0
        self._boost_until = 0.0
        self._lock = threading.Lock()
        self.stats = SamplerStats()

    def boost(self, factor: float, duration_s: float) -> None:
        """Multiply the audit share by ``factor`` for ``duration_s`` seconds (drift alarm)."""
        with self._lock:
            self._boost = max(1.0, float(factor))
            self._boost_until = self._clock() + max(0.0, duration_s)

    @property
    def audit_share(self) -> float:
        boosted = self._boost if self._clock() < self._boost_until else 1.0
        return min(1.0, self.cfg.audit_share * boosted)

    def reason_for(
        self, verdict: Verdict, detections: Detections, *, disagreement: bool = False
    ) -> str | None:
        """The first reason in ``REASONS`` that applies to this unit, or None."""
        if disagreement:
            return "disagreement"
        chosen = False
        if len(detections):
            ids = np.clip(detections.class_id, 0, len(self.classes) - 1)
            thr = self._thr[ids]
            band = self.cfg.uncertain_band
            if bool(np.any(np.abs(detections.confidence - thr) <= band)):
                return "uncertain"
            chosen = bool(np.any(self._chosen[ids] & (detections.confidence >= thr - band)))
        if verdict.verdict is VerdictKind.NO_DECISION:
            return "no_decision"
        if chosen:
            return "class"
        if self.audit_share > 0 and self._rng.random() < self.audit_share:
            return "audit"
        return None

    def offer(
        self,
        frame_bgr: npt.NDArray[np.uint8],
        verdict: Verdict,
        detections: Detections,
        *,
        disagreement: bool = False,
    ) -> str | None:
        """Sample this unit's frame if it qualifies; return the reason, or None if not sent."""
        if not self.cfg.enabled:
            return None
        with self._lock:
            self.stats.offered += 1
            reason = self.reason_for(verdict, detections, disagreement=disagreement)
            if reason is None:
                return None
            now = self._clock()
            if not self._under_caps(now):
                self.stats.capped += 1
                return None
            digest = perceptual_hash(frame_bgr)
            if any(hamming(digest, seen) <= self.cfg.dedup_distance for seen in self._recent):
                self.stats.duplicate += 1
                return None
            if not self._queue.submit(frame_bgr.copy(), self._item(verdict, detections, reason, frame_bgr)):
                self.stats.dropped += 1
                return None
            self._recent.append(digest)
            self._taken.append(now)
            self.stats.sampled += 1
        if self._metrics is not None:
            self._metrics.review_sampled.labels(reason=reason).inc()
        return reason

    def _under_caps(self, now: float) -> bool:
        while self._taken and now - self._taken[0] >= _WINDOWS[-1][1]:
            self._taken.popleft()
        caps = (self.cfg.per_minute, self.cfg.per_hour, self.cfg.per_day)
        for (_, span), cap in zip(_WINDOWS, caps, strict=True):
            if sum(1 for t in reversed(self._taken) if now - t < span) >= cap:
                return False
        return True

    def _item(
        self, verdict: Verdict, detections: Detections, reason: str, frame: npt.NDArray[np.uint8]
    ) -> ReviewItem:
        boxes = review_boxes(detections, self.classes, self._thr, self.cfg.uncertain_band)
        model = verdict.model
        return ReviewItem(
            review_id=uuid.uuid4().hex,
            unit_id=verdict.unit_id,
            line=verdict.line,
            station=verdict.station,
            captured_at=verdict.captured_at,
            reason=reason,
            verdict=verdict.verdict.value,
            model_name=model.name if model else "",
            model_version=model.version if model else "",
            score=float(min(1.0, detections.top_confidence())),
            width=int(frame.shape[1]),
            height=int(frame.shape[0]),
            boxes=boxes,
            view=verdict.shown_view or "",
        )
