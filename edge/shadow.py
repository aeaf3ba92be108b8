"""Shadow mode: a staging model judges the same frames as production, silently, when there is time.

The daemon calls ``ShadowRunner.run`` after the production verdict is committed, passing how many
milliseconds remain before the next frame; the runner skips the frame unless its recent run time
fits, so shadowing never delays inspection. The shadow's decision is compared with production's
(only for verdicts the model made: not deadline, image-quality or no-model ones); disagreements
are counted (``lineguard_shadow_disagreements_total``) and kept in a bounded list the labeling
sampler drains: they are exactly the frames worth a human look before a promotion. The shadow
never publishes anything.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from lineguard.messages import Reason, Verdict, VerdictKind

if TYPE_CHECKING:
    from lineguard.inference import Decision, Detector, VerdictPolicy
    from lineguard.monitoring import Metrics

__all__ = ["COMPARABLE_REASONS", "ShadowDisagreement", "ShadowRunner"]

# Production verdicts that came from the model, so a second model's opinion is comparable.
COMPARABLE_REASONS = frozenset({Reason.NO_DEFECT, Reason.DEFECT, Reason.UNCERTAIN})


@dataclass(frozen=True)
class ShadowDisagreement:
    """A unit the two models judged differently; ``frame`` is kept for the review sampler."""

    unit_id: str
    seq: int | None
    production: VerdictKind
    shadow: VerdictKind
    shadow_reason: Reason
    shadow_model: str
    top_confidence: float
    frame: npt.NDArray[np.uint8] | None


class ShadowRunner:
    """Runs ``detector`` + ``policy`` (the staging model) beside production and counts disagreements."""

    def __init__(
        self,
        detector: Detector,
        policy: VerdictPolicy,
        *,
        metrics: Metrics | None = None,
        keep: int = 200,
        keep_frames: bool = True,
        margin_ms: float = 1.0,
    ) -> None:
        self.detector = detector
        self.policy = policy
        self.metrics = metrics
        self.margin_ms = margin_ms
        self.keep_frames = keep_frames
        self.units = 0  # frames the shadow judged
        self.skipped = 0  # frames left out for lack of time
        self.disagreements = 0
        self.expected_ms = 0.0  # moving average of one shadow run
        self._pending: deque[ShadowDisagreement] = deque(maxlen=keep)
        self._lock = threading.Lock()

    @property
    def model(self) -> str:
        return self.detector.card.ref

    def run(
        self,
        frame: npt.NDArray[np.uint8],
        production: Verdict | VerdictKind,
        *,
        reason: Reason = Reason.NO_DEFECT,
        unit_id: str = "",
        seq: int | None = None,
        time_left_ms: float | None = None,
    ) -> Decision | None:
        """Judge ``frame`` with the shadow model unless time is short; None when skipped.

        ``production`` is the published verdict (or its kind plus ``reason``); ``time_left_ms`` is
        the time before the next frame is due (None: no limit, e.g. offline comparison).
        """
        if isinstance(production, Verdict):
            kind, reason = production.verdict, production.reason
            unit_id, seq = production.unit_id, production.seq
        else:
            kind = production
        if reason not in COMPARABLE_REASONS:
            return None
        if time_left_ms is not None and time_left_ms < self.expected_ms + self.margin_ms:
            with self._lock:
                self.skipped += 1
            return None
        t0 = time.perf_counter()
        detections, _ = self.detector.detect(frame)
        decision = self.policy.decide(detections)
        spent_ms = (time.perf_counter() - t0) * 1000.0
        with self._lock:
            self.expected_ms = spent_ms if self.units == 0 else 0.8 * self.expected_ms + 0.2 * spent_ms
            self.units += 1
            if decision.verdict is not kind:
                self.disagreements += 1
                if self.metrics is not None:
                    self.metrics.shadow_disagreements.inc()
                self._pending.append(
                    ShadowDisagreement(
                        unit_id=unit_id,
                        seq=seq,
                        production=kind,
                        shadow=decision.verdict,
                        shadow_reason=decision.reason,
                        shadow_model=self.model,
                        top_confidence=detections.top_confidence(),
                        frame=frame.copy() if self.keep_frames else None,
                    )
                )
        return decision

    def drain(self) -> list[ShadowDisagreement]:
        """Take the disagreements collected so far (for the labeling sampler)."""
        with self._lock:
            out = list(self._pending)
            self._pending.clear()
        return out

    def close(self) -> None:
        self.detector.close()
