"""One unit's path from frame to committed verdict, and the model slot it reads.

``Inspector`` runs ``quality check -> detect -> decide`` under one lock (the detector's buffers are
reused, so one unit at a time), then builds the verdict and commits it to the outbox, which is the
only I/O on the per-frame path. The model lives in a slot (detector + verdict policy + reference)
replaced whole by ``swap_model`` between two units, so every verdict names the model that made it;
with no model every unit gets ``NO_DECISION``/``no_model``, never PASS. A full outbox raises an
alert and turns the station unready; ``commit`` then waits for room instead of dropping the verdict.
The daemon's loop, an HTTP upload and the benchmarks all drive units through this class.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from lineguard.config import LineguardConfig
from lineguard.edge.outbox import Outbox, OutboxFullError
from lineguard.edge.sources import Frame
from lineguard.errors import LineguardError
from lineguard.inference import (
    Decision,
    Detections,
    Detector,
    QualityBounds,
    QualityGate,
    QualityReport,
    VerdictPolicy,
    quality_bounds,
)
from lineguard.labeling import ReviewQueue, ReviewSampler
from lineguard.logs import Events
from lineguard.messages import ImageRef, ModelRef, Reason, UnitSource, Verdict, VerdictKind
from lineguard.monitoring import DriftMonitor, Metrics

__all__ = ["Inspector", "ModelSlot", "RunSummary"]

event = Events("lineguard.edge")


@dataclass(frozen=True)
class ModelSlot:
    """What decides a unit: the detector, the policy over its card, and the reference verdicts carry."""

    detector: Detector
    policy: VerdictPolicy
    ref: ModelRef
    drift: DriftMonitor  # measured against this model's reference statistics
    sampler: ReviewSampler | None  # picks this model's doubtful frames for QA review
    quality: QualityBounds  # image-quality bounds covering this model's training frames


@dataclass
class RunSummary:
    """Units committed by this process, for the line ``edge run`` prints when it stops.

    ``skipped`` counts, by reason, the frames that never became a unit: the line always says how
    many, so a run that lost none says so too.
    """

    units: int = 0
    by_verdict: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    pending: int = 0
    last_seq: int = 0
    deadline_misses: int = 0

    def line(self) -> str:
        counts = ", ".join(f"{k} {self.by_verdict.get(k, 0)}" for k in VerdictKind)
        total = sum(self.skipped.values())
        skipped = f"{total} frame{'' if total == 1 else 's'} skipped"
        if total:
            skipped += " (" + ", ".join(f"{k} {n}" for k, n in sorted(self.skipped.items()) if n) + ")"
        return (
            f"stopped: {self.units} units ({counts}); {skipped}; "
            f"last seq {self.last_seq}, {self.pending} undelivered"
        )


class Inspector:
    """Decides and commits units for one station; safe to call from the loop and the API threads."""

    def __init__(
        self,
        cfg: LineguardConfig,
        outbox: Outbox,
        metrics: Metrics,
        *,
        wake: Callable[[], None],
        alert: Callable[[str, dict[str, object]], None],
        stop: threading.Event,
        review_queue: ReviewQueue | None = None,
    ) -> None:
        self.cfg = cfg
        self.outbox = outbox
        self.metrics = metrics
        self._wake = wake
        self._alert = alert
        self._stop = stop
        self._review_queue = review_queue
        self._no_model = VerdictPolicy(None, cfg.policy)
        self._slot: ModelSlot | None = None
        self.model_error: str | None = "no model configured (model.path)" if cfg.model.path is None else None
        self._lock = threading.Lock()
        self.outbox_full = False
        self.unit_times: deque[float] = deque(maxlen=32)
        self.summary = RunSummary()
        self.on_swap: Callable[[], None] = lambda: None

    @property
    def slot(self) -> ModelSlot | None:
        return self._slot

    def load_model(self, path: Path) -> bool:
        """Load and swap in the model at ``path``; on failure keep the current slot and say why."""
        try:
            detector = Detector.for_station(path, self.cfg)
        except LineguardError as exc:
            self.model_error = str(exc)
            self.metrics.model_swaps.labels(result="failed").inc()
            event(logging.ERROR, "model_load_failed", path=str(path), error=str(exc))
            return False
        self.swap_model(detector)
        return True

    def swap_model(self, detector: Detector | None) -> None:
        """Put ``detector`` (or nothing) in the slot between two units; the old one is closed."""
        new = None
        if detector is not None:
            card = detector.card
            policy = VerdictPolicy(card, self.cfg.policy)
            new = ModelSlot(
                detector,
                policy,
                ModelRef(name=card.name, version=card.version, sha256=card.sha256),
                DriftMonitor(card.reference, self.cfg.monitoring, self.metrics),
                self._sampler_for(policy),
                quality_bounds(self.cfg.policy.quality, card.reference),
            )
        with self._lock:
            old, self._slot = self._slot, new
        if old is not None and (new is None or old.detector is not new.detector):
            old.detector.close()
        self.metrics.model_swaps.labels(result="ok").inc()
        if new is None:
            self.model_error = "model unloaded"
            self.metrics.model_info.info(
                {"name": "", "version": "", "sha256": "", "backend": "", "precision": ""}
            )
            event(logging.WARNING, "model_unloaded")
            return
        self.model_error = None
        self.metrics.model_info.info(
            {
                "name": new.ref.name,
                "version": new.ref.version,
                "sha256": new.ref.sha256,
                "backend": new.detector.backend,
                "precision": new.detector.precision,
            }
        )
        event(
            logging.INFO,
            "model_in_use",
            model=f"{new.ref.name}:{new.ref.version}",
            backend=new.detector.backend,
            precision=new.detector.precision_choice,
            thresholds=new.policy.thresholds_id,
            quality=new.quality.describe(),
            drift_reference=new.drift.reference_origin,
        )
        if new.detector.variant_failure:  # running, but slower than the card allows: someone should look
            self._alert(
                "precision_fallback",
                {"model": f"{new.ref.name}:{new.ref.version}", "reason": new.detector.variant_failure},
            )
        self.on_swap()  # the daemon publishes the change

    def _sampler_for(self, policy: VerdictPolicy) -> ReviewSampler | None:
        if self._review_queue is None or policy.card is None:
            return None
        classes = policy.card.classes
        thresholds = {name: policy.threshold(name) for name in classes}
        return ReviewSampler(self.cfg.sampling, classes, thresholds, self._review_queue, self.metrics)

    def decide(self, frame: Frame, gate: QualityGate) -> tuple[Decision, ModelSlot | None, Detections]:
        """Judge one frame; the detections come back too, for the review sampler."""
        with self._lock:
            slot = self._slot
            try:
                quality = gate.check(frame.image, slot.quality if slot is not None else None)
                detections: Detections | None
                if slot is None:
                    detections = None
                elif quality.problem is not None:
                    detections = Detections.empty()  # no verdict on this frame: skip the model
                else:
                    detections, times = slot.detector.detect(frame.image)
                    self.metrics.observe_stage("preprocess", times.preprocess_s)
                    self.metrics.observe_stage("inference", times.inference_s)
                    self.metrics.observe_stage("postprocess", times.postprocess_s)
                t0 = time.monotonic()
                policy = slot.policy if slot is not None else self._no_model
                elapsed_ms = (t0 - frame.captured_mono) * 1000.0
                decision = policy.decide(detections, quality=quality, elapsed_ms=elapsed_ms)
                self.metrics.observe_stage("verdict", time.monotonic() - t0)
                if slot is not None and quality.problem is None and detections is not None:
                    self._watch_drift(slot, quality, detections, decision)
            except Exception as exc:  # a unit must still get a verdict, never PASS
                event(logging.ERROR, "inspection_failed", error=repr(exc))
                decision = Decision(VerdictKind.NO_DECISION, Reason.ERROR)
                detections = None
        return decision, slot, detections if detections is not None else Detections.empty()

    def _watch_drift(
        self, slot: ModelSlot, quality: QualityReport, detections: Detections, decision: Decision
    ) -> None:
        """Feed drift detection (about 20 µs); a level change becomes an alert on ``…/alert``."""
        events = slot.drift.observe(
            brightness=quality.brightness,
            contrast=quality.contrast,
            sharpness=quality.sharpness,
            top_confidence=detections.top_confidence(),
            classes=sorted({d.class_name for d in decision.defects}),
            verdict=decision.verdict.value,
        )
        station = self.cfg.station
        for drift_event in events:
            if drift_event.level == "alarm" and slot.sampler is not None:
                slot.sampler.boost(self.cfg.sampling.drift_boost, self.cfg.sampling.drift_boost_s)
            alert = drift_event.to_alert(line=station.line, station=station.station)
            detail = {k: alert[k] for k in ("level", "signal", "message")} | alert["details"]
            self._alert("drift", detail)
            event(logging.WARNING, "drift", signal=drift_event.signal, drift_level=drift_event.level)

    def commit(
        self,
        frame: Frame,
        unit_id: str | None,
        decision: Decision,
        slot: ModelSlot | None,
        *,
        wait: bool = True,
        source: UnitSource | None = None,
        keep_frame: bool = False,
    ) -> Verdict:
        """Build the verdict and commit it; ``keep_frame``: the frame store keeps this frame (``image``)."""
        elapsed_s = max(0.0, time.monotonic() - frame.captured_mono)
        decided_at = frame.captured_at + timedelta(seconds=elapsed_s)
        thresholds = slot.policy.thresholds_id if slot is not None else self._no_model.thresholds_id
        station = self.cfg.station

        def make(seq: int) -> Verdict:
            return Verdict(
                seq=seq,
                unit_id=unit_id or f"{station.station}-{seq}",
                line=station.line,
                station=station.station,
                verdict=decision.verdict,
                reason=decision.reason,
                defects=decision.defects,
                model=slot.ref if slot is not None else None,
                thresholds=thresholds,
                captured_at=frame.captured_at,
                decided_at=decided_at,
                latency_ms=elapsed_s * 1000.0,
                source=source,
                image=ImageRef.for_seq(seq) if keep_frame else None,
            )

        verdict = self._add(make, wait=wait)
        self._wake()
        m = self.metrics
        m.decision_latency.observe(time.monotonic() - frame.captured_mono)
        m.verdicts.labels(verdict=verdict.verdict.value, reason=verdict.reason.value).inc()
        if verdict.reason is Reason.DEADLINE:
            m.deadline_misses.inc()
            self.summary.deadline_misses += 1
        for defect in verdict.defects:
            m.defects.labels(class_name=defect.class_name).inc()
        m.outbox_depth.set(self.outbox.depth())
        self.unit_times.append(time.monotonic())
        self.summary.units += 1
        self.summary.by_verdict[verdict.verdict.value] += 1
        self.summary.last_seq = verdict.seq
        return verdict

    def _add(self, make: Any, *, wait: bool) -> Verdict:
        """Insert into the outbox; when full, alert, turn unready and retry until there is room."""
        while True:
            try:
                verdict: Verdict = self.outbox.add(make)
            except OutboxFullError as exc:
                if not self.outbox_full:
                    self.outbox_full = True
                    self._alert("outbox_full", {"detail": str(exc), "max_pending": self.outbox.max_pending})
                    event(logging.ERROR, "outbox_full", detail=str(exc), action="inspection paused")
                if not wait or self._stop.wait(0.5):
                    raise
                continue
            if self.outbox_full:
                self.outbox_full = False
                event(logging.INFO, "outbox_has_room", depth=self.outbox.depth())
            return verdict
