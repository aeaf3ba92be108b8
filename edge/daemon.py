"""The edge daemon: takes the newest frame, asks the model, commits a verdict, and keeps going.

One inspection thread runs ``quality check -> detect -> decide -> outbox insert -> wake delivery``
for each unit; that is the only I/O on the per-frame path, and the delivery thread publishes what
the outbox holds. The model lives in a slot (detector + verdict policy) swapped whole between two
units, so every verdict names the model that made it; with no model every unit gets
``NO_DECISION``/``no_model``, never PASS. A unit is every frame (``continuous``) or the next frame
after a trigger (``triggered``, from MQTT or ``POST /v1/inspect``). A full outbox pauses inspection
and raises an alert instead of dropping verdicts; SIGTERM finishes the unit in flight, flushes
delivery and returns. Logs are one JSON object per line (see ``lineguard.edge.cli``).
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import numpy.typing as npt

from lineguard.config import LineguardConfig
from lineguard.detections import Detections
from lineguard.edge.control import DesiredModel, Feedback, Trigger
from lineguard.edge.delivery import make_delivery
from lineguard.edge.engine import Detector
from lineguard.edge.outbox import Outbox, OutboxFullError
from lineguard.edge.policy import Decision, VerdictPolicy
from lineguard.edge.quality import QualityGate
from lineguard.edge.sources import Frame, FrameSource, open_source
from lineguard.errors import LineguardError
from lineguard.monitoring.metrics import Metrics
from lineguard.verdict import ModelRef, Reason, Verdict, VerdictKind

__all__ = ["EdgeDaemon", "ModelSlot", "RunSummary"]

log = logging.getLogger("lineguard.edge.daemon")

_POLL_S = 0.2  # longest the loop waits for a frame or trigger before checking stop and status
_HEALTH_EVERY_S = 0.5


def event(level: int, name: str, **fields: Any) -> None:
    """Log one structured event: ``name k=v ...``; the JSON formatter also gets ``fields``."""
    text = " ".join(f"{k}={v}" for k, v in fields.items())
    log.log(level, f"{name} {text}".strip(), extra={"event": name, "fields": fields})


@dataclass(frozen=True)
class ModelSlot:
    """What decides a unit: the detector, the policy over its card, and the reference verdicts carry."""

    detector: Detector
    policy: VerdictPolicy
    ref: ModelRef


@dataclass
class RunSummary:
    units: int = 0
    by_verdict: Counter[str] = field(default_factory=Counter)
    pending: int = 0
    last_seq: int = 0

    def line(self) -> str:
        counts = ", ".join(f"{k} {self.by_verdict.get(k, 0)}" for k in VerdictKind)
        return f"stopped: {self.units} units ({counts}); last seq {self.last_seq}, {self.pending} undelivered"


@dataclass
class _Request:
    """A triggered unit waiting for the first frame captured after ``received_mono``."""

    unit_id: str | None
    received_mono: float
    future: Future[Verdict] = field(default_factory=Future)


class EdgeDaemon:
    """One station's inspection loop with its outbox, delivery, frame source and model slot."""

    def __init__(self, cfg: LineguardConfig, *, source: FrameSource | None = None) -> None:
        self.cfg = cfg
        self.metrics = Metrics()
        cfg.station.data_dir.mkdir(parents=True, exist_ok=True)
        self.outbox = Outbox(cfg.station.data_dir / "outbox.sqlite", max_pending=cfg.outbox.max_pending)
        self.source = source if source is not None else open_source(cfg.camera, self.metrics)
        self.quality = QualityGate(cfg.policy.quality, cfg.camera.frozen_frames)
        self._upload_quality = QualityGate(cfg.policy.quality, frozen_frames=1 << 30)
        self._no_model = VerdictPolicy(None, cfg.policy)
        self._slot: ModelSlot | None = None
        self.model_error: str | None = "no model configured (model.path)" if cfg.model.path is None else None
        self._unit_lock = threading.Lock()  # one unit at a time: the detector's buffers are shared
        self._stop = threading.Event()
        self._requests: queue.Queue[_Request] = queue.Queue()
        self._outbox_full = False
        self._unit_times: deque[float] = deque(maxlen=32)
        self._last_health = 0.0
        self._last_status = 0.0
        self._status_sig: tuple[Any, ...] = ()
        self._camera_alerted = False
        self._started = False
        self._http: Any = None
        self.summary = RunSummary()
        self.delivery = make_delivery(
            cfg,
            self.outbox,
            self.metrics,
            on_trigger=self._on_trigger,
            on_feedback=self._on_feedback,
            on_model=self._on_model,
        )
        self.desired_model: DesiredModel | None = None
        if cfg.model.path is not None:
            self.load_model(cfg.model.path)
        else:
            event(
                logging.WARNING,
                "no_model",
                detail="model.path is not set; every unit gets NO_DECISION/no_model",
            )

    # -- model slot -----------------------------------------------------------------------
    @property
    def slot(self) -> ModelSlot | None:
        return self._slot

    def load_model(self, path: Path) -> bool:
        """Load and swap in the model at ``path``; on failure keep the current slot and say why."""
        try:
            detector = Detector.load(
                path,
                self.cfg.model,
                min_confidence=self.cfg.policy.min_confidence,
                nms_iou=self.cfg.policy.nms_iou,
            )
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
                detector, policy, ModelRef(name=card.name, version=card.version, sha256=card.sha256)
            )
        with self._unit_lock:
            old, self._slot = self._slot, new
        if old is not None and (new is None or old.detector is not new.detector):
            old.detector.close()
        self.metrics.model_swaps.labels(result="ok").inc()
        if new is None:
            self.model_error = "model unloaded"
            self.metrics.model_info.info({"name": "", "version": "", "sha256": "", "backend": ""})
            event(logging.WARNING, "model_unloaded")
            return
        self.model_error = None
        self.metrics.model_info.info(
            {
                "name": new.ref.name,
                "version": new.ref.version,
                "sha256": new.ref.sha256,
                "backend": new.detector.backend,
            }
        )
        event(
            logging.INFO,
            "model_in_use",
            model=f"{new.ref.name}:{new.ref.version}",
            backend=new.detector.backend,
            thresholds=new.policy.thresholds_id,
        )
        self._last_status = 0.0  # publish the change with the next status tick

    # -- units ----------------------------------------------------------------------------
    def trigger(self, trigger: Trigger) -> Future[Verdict]:
        """Inspect the next camera frame as ``trigger.unit_id``; the future gets its verdict."""
        request = _Request(trigger.unit_id, time.monotonic())
        self._requests.put(request)
        return request.future

    def inspect_image(self, image: npt.NDArray[np.uint8], unit_id: str | None = None) -> Verdict:
        """Judge an uploaded image as one unit (``POST /v1/inspect``); the verdict is committed too."""
        frame = Frame(image, datetime.now(UTC), time.monotonic(), -1)
        decision, slot = self._decide(frame, self._upload_quality)
        return self._commit(frame, unit_id, decision, slot, wait=False)

    def _decide(self, frame: Frame, gate: QualityGate) -> tuple[Decision, ModelSlot | None]:
        with self._unit_lock:
            slot = self._slot
            try:
                quality = gate.check(frame.image)
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
            except Exception as exc:  # a unit must still get a verdict, never PASS
                event(logging.ERROR, "inspection_failed", error=repr(exc))
                decision = Decision(VerdictKind.NO_DECISION, Reason.ERROR)
        return decision, slot

    def _commit(
        self,
        frame: Frame,
        unit_id: str | None,
        decision: Decision,
        slot: ModelSlot | None,
        *,
        wait: bool = True,
    ) -> Verdict:
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
            )

        verdict = self._add(make, wait=wait)
        self.delivery.wake()
        m = self.metrics
        m.decision_latency.observe(time.monotonic() - frame.captured_mono)
        m.verdicts.labels(verdict=verdict.verdict.value, reason=verdict.reason.value).inc()
        if verdict.reason is Reason.DEADLINE:
            m.deadline_misses.inc()
        for defect in verdict.defects:
            m.defects.labels(class_name=defect.class_name).inc()
        m.outbox_depth.set(self.outbox.depth())
        self._unit_times.append(time.monotonic())
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
                if not self._outbox_full:
                    self._outbox_full = True
                    self.delivery.publish_alert(
                        "outbox_full", {"detail": str(exc), "max_pending": self.outbox.max_pending}
                    )
                    event(logging.ERROR, "outbox_full", detail=str(exc), action="inspection paused")
                if not wait or self._stop.wait(0.5):
                    raise
                continue
            if self._outbox_full:
                self._outbox_full = False
                event(logging.INFO, "outbox_has_room", depth=self.outbox.depth())
            return verdict

    # -- loop -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the source, delivery and HTTP API (``run`` calls this)."""
        if self._started:
            return
        self._started = True
        self.source.start()
        self.delivery.start()
        if self.cfg.http.enabled:
            from lineguard.edge.api import ApiServer, create_app

            self._http = ApiServer(create_app(self), self.cfg.http.host, self.cfg.http.port)
            self._http.start()
            event(logging.INFO, "http_listening", url=f"http://{self.cfg.http.host}:{self._http.port}")
        event(
            logging.INFO,
            "started",
            station=f"{self.cfg.station.line}/{self.cfg.station.station}",
            mode=self.cfg.mode,
            camera=self.source.name,
            next_seq=self.outbox.last_seq + 1,
        )

    def stop(self) -> None:
        """Ask the loop to finish the unit in flight and return (signal handlers call this)."""
        self._stop.set()

    @property
    def running(self) -> bool:
        return self._started and not self._stop.is_set()

    @property
    def http_port(self) -> int | None:
        return None if self._http is None else int(self._http.port)

    def run(self, max_units: int | None = None) -> RunSummary:
        """Inspect until stopped, ``max_units`` are done or a finite source ends; then shut down."""
        restore = self._install_signals()
        try:
            self.start()
            while not self._stop.is_set():
                if max_units is not None and self.summary.units >= max_units:
                    break
                self._tick()
                if not self._step():
                    break
        finally:
            self.shutdown()
            for sig, handler in restore.items():
                signal.signal(sig, handler)
        return self.summary

    def _step(self) -> bool:
        """Inspect at most one unit; False when a finite source has nothing more to give."""
        try:
            request = self._requests.get_nowait()
        except queue.Empty:
            request = None
        if request is None and self.cfg.mode == "triggered":
            try:
                request = self._requests.get(timeout=_POLL_S)
            except queue.Empty:
                return not self.source.exhausted
        if request is None:
            frame = self.source.read_latest(_POLL_S)
            if frame is None:
                return not self.source.exhausted
            self._run_unit(frame, None, None)
            return True
        while not self._stop.is_set():
            frame = self.source.read_latest(_POLL_S, newer_than=request.received_mono)
            if frame is not None:
                self._run_unit(frame, request.unit_id, request.future)
                return True
            waited = time.monotonic() - request.received_mono
            if self.source.exhausted or waited > self.cfg.camera.watchdog_s:
                self._no_frame(request, f"no camera frame within {waited:.1f} s")
                return not self.source.exhausted
            self._tick()
        self._no_frame(request, "station stopping")
        return False

    def _run_unit(self, frame: Frame, unit_id: str | None, future: Future[Verdict] | None) -> None:
        decision, slot = self._decide(frame, self.quality)
        try:
            verdict = self._commit(frame, unit_id, decision, slot)
        except OutboxFullError as exc:  # stopping while the outbox is full: say loudly what is lost
            event(
                logging.ERROR, "verdict_not_stored", unit_id=unit_id, verdict=decision.verdict, error=str(exc)
            )
            if future is not None:
                future.set_exception(exc)
            return
        if future is not None:
            future.set_result(verdict)

    def _no_frame(self, request: _Request, why: str) -> None:
        """A triggered unit that got no frame still gets a verdict: NO_DECISION/error."""
        event(logging.ERROR, "trigger_without_frame", unit_id=request.unit_id, detail=why)
        frame = Frame(np.zeros((1, 1, 3), np.uint8), datetime.now(UTC), time.monotonic(), -1)
        decision = Decision(VerdictKind.NO_DECISION, Reason.ERROR)
        try:
            request.future.set_result(self._commit(frame, request.unit_id, decision, None, wait=False))
        except OutboxFullError as exc:
            event(logging.ERROR, "verdict_not_stored", unit_id=request.unit_id, error=str(exc))
            request.future.set_exception(exc)

    def shutdown(self) -> None:
        """Stop the source, answer waiting triggers, flush delivery, stop HTTP, close the outbox."""
        if not self._started:
            self.outbox.close()
            return
        self._started = False
        self._stop.set()
        self.source.stop()
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                break
            self._no_frame(request, "station stopping")
        self.delivery.stop(timeout_s=5.0)
        if self._http is not None:
            self._http.stop()
            self._http = None
        self.summary.pending = self.outbox.depth()
        self.summary.last_seq = self.outbox.last_seq
        self.outbox.close()
        event(logging.INFO, "stopped", units=self.summary.units, undelivered=self.summary.pending)

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum: int, _frame: FrameType | None) -> None:
            event(
                logging.INFO, "signal", signal=signal.Signals(signum).name, action="finishing unit in flight"
            )
            self._stop.set()

        previous: dict[int, Any] = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.getsignal(sig)
            signal.signal(sig, handler)
        return previous

    # -- health and status ----------------------------------------------------------------
    def inspection_fps(self) -> float:
        stamps = list(self._unit_times)
        if len(stamps) < 2 or time.monotonic() - stamps[-1] > 2.0:
            return 0.0
        return (len(stamps) - 1) / max(stamps[-1] - stamps[0], 1e-9)

    def readiness(self) -> tuple[bool, list[str]]:
        """Ready = model loaded, camera up (not frozen), delivery ready, outbox not full."""
        reasons = []
        if self._slot is None:
            reasons.append(f"no model loaded: {self.model_error}")
        health = self.source.health()
        if not health.up:
            reasons.append(f"camera down: {health.detail}")
        elif health.frozen:
            reasons.append(f"camera frozen: {health.detail}")
        ok, detail = self.delivery.readiness()
        if not ok:
            reasons.append(f"delivery not ready: {detail}")
        if self._outbox_full:
            reasons.append(f"verdict outbox full ({self.outbox.max_pending} unacknowledged)")
        return not reasons, reasons

    def status(self) -> dict[str, Any]:
        slot = self._slot
        health = self.source.health()
        return {
            "state": "online",
            "mode": self.cfg.mode,
            "model": None if slot is None else slot.ref.model_dump(),
            "backend": None if slot is None else slot.detector.backend,
            "thresholds": None if slot is None else slot.policy.thresholds_id,
            "camera": {
                "source": self.source.name,
                "up": health.up,
                "frozen": health.frozen,
                "fps": health.fps,
                "skipped": health.skipped,
                "reconnects": health.reconnects,
                "detail": health.detail,
            },
            "fps": round(self.inspection_fps(), 2),
            "outbox_pending": self.outbox.depth(),
        }

    def _tick(self) -> None:
        """Watchdog and status, at most every half second (outside the per-frame path's budget)."""
        now = time.monotonic()
        if now - self._last_health < _HEALTH_EVERY_S:
            return
        self._last_health = now
        status = self.status()
        camera = status["camera"]
        bad = not camera["up"] or camera["frozen"]
        if bad and not self._camera_alerted and not self.source.exhausted:
            kind = "camera_frozen" if camera["up"] else "camera_down"
            self.delivery.publish_alert(kind, {"source": camera["source"], "detail": camera["detail"]})
            event(logging.WARNING, kind, detail=camera["detail"])
        elif not bad and self._camera_alerted:
            event(logging.INFO, "camera_ok", source=camera["source"])
        self._camera_alerted = bad
        sig = (status["model"], status["backend"], camera["up"], camera["frozen"])
        if sig != self._status_sig or now - self._last_status >= self.cfg.mqtt.status_interval_s:
            self._status_sig = sig
            self._last_status = now
            self.delivery.publish_status(status)

    # -- messages from MQTT ---------------------------------------------------------------
    def _on_trigger(self, trigger: Trigger) -> None:
        self.trigger(trigger)

    def _on_feedback(self, feedback: Feedback) -> None:
        event(logging.INFO, "feedback", unit_id=feedback.unit_id, outcome=feedback.outcome)

    def _on_model(self, desired: DesiredModel) -> None:
        self.desired_model = desired
        event(logging.INFO, "desired_model", model=f"{desired.name}:{desired.version}", url=desired.url)
