"""The edge daemon: a station's lifecycle around the per-unit path (``lineguard.edge.inspector``).

It owns the outbox, the delivery (MQTT or JSON lines), the frame source, the HTTP API thread and
the inspection loop. A unit is every frame (``continuous``) or the first frame captured after a
trigger (``triggered``: MQTT ``…/trigger`` or ``POST /v1/inspect`` without an image; a source the
station triggers, such as a GigE camera in software-trigger mode, is fired once per trigger; a
trigger that gets no frame still gets NO_DECISION/camera, at once when the camera is down).
In continuous mode a folder, video or synthetic source is lossless (every file becomes a unit,
also while the station starts or swaps models) and names its units: ``<station>-<file stem>`` for
a folder, ``<station>-f<frame index>`` for a video or the synthetic line, with the verdict's
``source`` naming the file and its position; a live camera's units are ``<station>-<seq>``, and
the frames it drops are counted in the run summary. A triggered station's sources keep only the
newest frame. A trigger whose unit id is among the last ``DUPLICATE_WINDOW`` unit ids triggered
since the station started (MQTT JSON or plain text, ``POST /v1/inspect``) is answered
NO_DECISION/``duplicate_unit`` in its turn, after the first unit's verdict, with a seq of its own:
the first verdict is never replaced. While the retained ``…/control`` message says ``paused``,
triggers are answered NO_DECISION/``paused`` (no camera is fired), a live camera's frames are read
and counted as skipped (``paused``), and a folder, video or synthetic source waits where it is;
status says ``inspection: paused``. Every half second the loop runs the camera watchdog, alerts on
a down or frozen camera and publishes status on change and every ``mqtt.status_interval_s``.
SIGTERM/SIGINT finish the unit in flight, flush delivery and return. Logs are structured events,
one JSON object per line under ``lineguard edge run``.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import numpy.typing as npt

from lineguard.config import LineguardConfig
from lineguard.edge.control import DesiredModel, Feedback, InspectionControl, RecentIds, Trigger
from lineguard.edge.delivery_factory import make_delivery
from lineguard.edge.frame_store import FrameStore
from lineguard.edge.hot_swap import ModelFollower
from lineguard.edge.inspector import Inspector, ModelSlot, RunSummary
from lineguard.edge.live import LiveView
from lineguard.edge.opcua_server import OpcuaServer
from lineguard.edge.outbox import OUTBOX_FILE, Outbox, OutboxFullError
from lineguard.edge.samples import SampleKeeper
from lineguard.edge.shadow import ShadowRunner
from lineguard.edge.source_factory import open_source
from lineguard.edge.sources import Frame, FrameSource
from lineguard.errors import LineguardError
from lineguard.inference import Decision, Detections, Detector, QualityGate, VerdictPolicy
from lineguard.labeling import LabelStudioSink, ReviewQueue, review_dir, sink_from_config
from lineguard.logs import Events
from lineguard.messages import Reason, UnitSource, Verdict, VerdictKind
from lineguard.monitoring import Metrics
from lineguard.redact import mask_url

__all__ = ["DUPLICATE_WINDOW", "EdgeDaemon"]

event = Events("lineguard.edge")

_POLL_S = 0.2  # longest the loop waits for a frame or trigger before checking stop and status
_HEALTH_EVERY_S = 0.5
DUPLICATE_WINDOW = 1000  # unit ids remembered to answer a repeated trigger (about 100 kB)


def _settle(future: Future[Verdict], verdict: Verdict | None = None, error: Exception | None = None) -> None:
    """Answer a waiting caller; one that gave up (cancelled) is skipped, the verdict stays committed."""
    if not future.set_running_or_notify_cancel():
        return
    if error is not None:
        future.set_exception(error)
    elif verdict is not None:
        future.set_result(verdict)


@dataclass
class _Request:
    """A triggered unit waiting for the first frame captured after ``received_mono``.

    ``refusal``: answered NO_DECISION with this reason in its turn, without a frame.
    """

    unit_id: str | None
    received_mono: float
    refusal: Reason | None = None
    future: Future[Verdict] = field(default_factory=Future)


class EdgeDaemon:
    """One station's inspection loop with its outbox, delivery, frame source and model slot."""

    def __init__(self, cfg: LineguardConfig, *, source: FrameSource | None = None, samples: int = 0) -> None:
        self.cfg = cfg
        self.metrics = Metrics()
        cfg.station.data_dir.mkdir(parents=True, exist_ok=True)
        self.outbox = Outbox(
            cfg.station.data_dir / OUTBOX_FILE,
            max_pending=cfg.outbox.max_pending,
            retry_s=cfg.outbox.retry_s,
        )
        self.source = source if source is not None else open_source(cfg.camera, self.metrics)
        if cfg.mode == "triggered":  # the trigger makes the unit: frames in between are not units
            self.source.lossless = False
        self.samples = SampleKeeper(samples) if samples > 0 else None
        self.live = LiveView(cfg.http.live_fps)
        self.quality = QualityGate(cfg.policy.quality, cfg.camera.frozen_frames)
        self._upload_quality = QualityGate(cfg.policy.quality, frozen_frames=1 << 30)
        self._stop = threading.Event()
        self._requests: queue.Queue[_Request] = queue.Queue()
        self._recent_ids = RecentIds(DUPLICATE_WINDOW)
        self._ids_lock = threading.Lock()  # MQTT and HTTP threads trigger
        self.paused = False  # set by …/control (retained), read by the loop
        self._last_health = 0.0
        self._last_status = 0.0
        self._status_sig: tuple[Any, ...] = ()
        self._camera_alerted = False
        self._started = False
        self._http: Any = None
        self.desired_model: DesiredModel | None = None
        self._review_sink: LabelStudioSink | None = None
        self.delivery = make_delivery(
            cfg,
            self.outbox,
            self.metrics,
            on_trigger=self._on_trigger,
            on_feedback=self._on_feedback,
            on_model=self._on_model,
            on_control=self._on_control,
        )
        # OPC UA mirrors committed verdicts for PLCs (a missing password file is refused here).
        self.opcua = OpcuaServer(cfg.opcua, self, self.delivery.publish_alert) if cfg.opcua.enabled else None
        self.review_queue = self._open_review_queue()
        self.frame_store = (
            FrameStore(cfg.frame_store, cfg.frame_store_dir, metrics=self.metrics)
            if cfg.frame_store.enabled
            else None
        )
        self._feedback_counts: Counter[str] = Counter()
        self.shadow = self._open_shadow()
        self.inspector = Inspector(
            cfg,
            self.outbox,
            self.metrics,
            wake=self.delivery.wake,
            alert=self.delivery.publish_alert,
            stop=self._stop,
            review_queue=self.review_queue,
        )
        self.inspector.on_swap = self._status_soon
        # Hot swap: a new desired model on …/model is prepared off the frame path, then swapped in.
        self.follower = ModelFollower(
            cfg,
            swap=self.swap_model,
            current_classes=lambda: self.slot.detector.card.classes if self.slot else None,
            on_refused=lambda desired, why: self.delivery.publish_alert(
                "model_refused", {"model": f"{desired.name}:{desired.version}", "reason": mask_url(why)}
            ),
            on_rollback=lambda why: self.delivery.publish_alert(
                "model_rollback", {"level": "alarm", "reason": why}
            ),
            golden_dir=cfg.registry.golden_dir,
        )
        self.summary = self.inspector.summary
        if cfg.model.path is not None:
            self.inspector.load_model(cfg.model.path)
        else:
            event(
                logging.WARNING,
                "no_model",
                detail="model.path is not set; every unit gets NO_DECISION/no_model",
            )

    def _open_review_queue(self) -> ReviewQueue | None:
        """The durable queue of frames for QA review, uploading when Label Studio is configured."""
        if not self.cfg.sampling.enabled:
            return None
        review = ReviewQueue(
            review_dir(self.cfg.station.data_dir),
            max_items=self.cfg.sampling.max_queue,
            metrics=self.metrics,
            on_alert=lambda kind, message: self.delivery.publish_alert(kind, {"message": message}),
        )
        sink = sink_from_config(self.cfg.sampling)
        if sink is not None:
            review.start_uploader(sink)
            self._review_sink = sink
        return review

    def _open_shadow(self) -> ShadowRunner | None:
        """Shadow mode: the staging model named by ``model.shadow_path``; a bad one is logged, not fatal."""
        path = self.cfg.model.shadow_path
        if path is None:
            return None
        try:
            detector = Detector.for_station(path, self.cfg)
        except LineguardError as exc:
            event(logging.ERROR, "shadow_model_refused", path=str(path), error=str(exc))
            return None
        event(logging.INFO, "shadow_model", model=detector.card.ref)
        return ShadowRunner(
            detector, VerdictPolicy(detector.card, self.cfg.policy), metrics=self.metrics, keep_frames=False
        )

    # -- model slot (the registry's hot swap calls these) ---------------------------------
    @property
    def slot(self) -> ModelSlot | None:
        return self.inspector.slot

    @property
    def model_error(self) -> str | None:
        return self.inspector.model_error

    def load_model(self, path: Path) -> bool:
        """Load and swap in the model at ``path``; on failure keep the current model and say why."""
        return self.inspector.load_model(path)

    def swap_model(self, detector: Detector | None) -> None:
        """Put ``detector`` (or nothing) in the slot between two units; the old one is closed."""
        self.inspector.swap_model(detector)

    def _status_soon(self) -> None:
        self._last_status = 0.0
        self._last_health = 0.0

    # -- units ----------------------------------------------------------------------------
    def trigger(self, trigger: Trigger) -> Future[Verdict]:
        """Inspect the next camera frame as ``trigger.unit_id``; the future gets its verdict.

        Paused, or a unit id seen among the last ``DUPLICATE_WINDOW``: the verdict is NO_DECISION
        (``paused``, ``duplicate_unit``), committed in turn after the triggers queued before it. A
        paused trigger's id is not remembered, so the PLC may send that unit again once resumed.
        """
        refusal = None
        if self.paused:
            refusal = Reason.PAUSED
        else:
            with self._ids_lock:
                if self._recent_ids.seen_before(trigger.unit_id):
                    refusal = Reason.DUPLICATE_UNIT
        request = _Request(trigger.unit_id, time.monotonic(), refusal)
        self._requests.put(request)
        return request.future

    def inspect_image(self, image: npt.NDArray[np.uint8], unit_id: str | None = None) -> Verdict:
        """Judge an uploaded image as one unit (``POST /v1/inspect``); the verdict is committed too."""
        frame = Frame(image, datetime.now(UTC), time.monotonic(), -1)
        decision, slot, detections = self.inspector.decide(frame, self._upload_quality)
        return self._commit(frame, unit_id, decision, slot, detections, wait=False)

    # -- loop -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start delivery, the HTTP API and then the camera (``run`` calls this).

        The model was loaded and warmed up in ``__init__``; the camera comes last so that its first
        frame is not left waiting while the API starts (a live camera's first unit would miss its
        deadline, and a file source's first unit would be judged while the station still starts).
        """
        if self._started:
            return
        self._started = True
        self.delivery.start()
        if self.cfg.http.enabled:
            from lineguard.edge.api import ApiServer, create_app

            server = ApiServer(create_app(self), self.cfg.http.host, self.cfg.http.port)
            server.start()
            self._http = server
            event(logging.INFO, "http_listening", url=f"http://{self.cfg.http.host}:{self._http.port}")
        if self.opcua is not None:  # a server that cannot start degrades the station (alert, status)
            self.opcua.start()
        self.source.start()
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
        if request is None and self.paused:
            return self._idle_paused()
        if request is None:
            frame = self.source.read_latest(_POLL_S)
            if frame is None:
                return not self.source.exhausted
            unit_id = f"{self.cfg.station.station}-{frame.unit}" if frame.unit is not None else None
            self._run_unit(frame, unit_id, None)
            return True
        if request.refusal is not None:  # paused or a repeated id: answered, no camera fired
            self._refuse(request)
            return True
        # A camera the station fires: only a frame after this firing is this unit's, so one that
        # arrives late for an earlier unit cannot shift every later unit by one.
        fired = time.monotonic() if self.source.station_triggered else request.received_mono
        if not self.source.request_frame():  # a PLC waiting for this unit gets its answer now
            self._no_frame(request, f"camera cannot take the trigger: {self.source.health().detail}")
            return True
        while not self._stop.is_set():
            frame = self.source.read_latest(_POLL_S, newer_than=fired)
            if frame is not None:
                self._run_unit(frame, request.unit_id, request.future)
                return True
            waited = time.monotonic() - fired
            if self.source.exhausted or waited > self.cfg.camera.watchdog_s:
                self._no_frame(request, f"no camera frame within {waited:.1f} s")
                return not self.source.exhausted
            self._tick()
        self._no_frame(request, "station stopping", Reason.ERROR)
        return False

    def _idle_paused(self) -> bool:
        """Paused, continuous: a live camera's frames are skipped; files and the synthetic line wait."""
        if self.source.lossless:
            self._stop.wait(_POLL_S)
            return True
        if self.source.read_latest(_POLL_S) is not None:
            self.source.count_skip("paused")
        return not self.source.exhausted

    def _run_unit(self, frame: Frame, unit_id: str | None, future: Future[Verdict] | None) -> None:
        decision, slot, detections = self.inspector.decide(frame, self.quality)
        source = None
        if frame.unit is not None:  # the frame is a file, a video frame or a synthetic unit: name it
            camera = self.source.name
            camera = camera if len(camera) <= 256 else "..." + camera[-253:]
            source = UnitSource(camera=camera, file=frame.file, index=frame.index)
        try:
            verdict = self._commit(frame, unit_id, decision, slot, detections, source=source)
        except OutboxFullError as exc:  # stopping while the outbox is full: say loudly what is lost
            event(
                logging.ERROR, "verdict_not_stored", unit_id=unit_id, verdict=decision.verdict, error=str(exc)
            )
            if future is not None:
                _settle(future, error=exc)
            return
        self.follower.observe(verdict)
        self.live.offer(frame.image, verdict)  # a copy only while someone watches, at live_fps
        disagreement = False
        if self.shadow is not None and slot is not None:  # after the verdict is out, if time allows
            left_ms = 1000.0 / self.cfg.camera.fps - (time.monotonic() - frame.captured_mono) * 1000.0
            shadow = self.shadow.run(frame.image, verdict, time_left_ms=left_ms)
            disagreement = shadow is not None and shadow.verdict is not verdict.verdict
        if slot is not None and slot.sampler is not None:  # copies the frame only if sampled
            slot.sampler.offer(frame.image, verdict, detections, disagreement=disagreement)
        if self.samples is not None:  # draws a small tile, only for the first units of each kind
            self.samples.offer(frame.image, verdict)
        if future is not None:
            _settle(future, verdict)

    def _commit(
        self,
        frame: Frame,
        unit_id: str | None,
        decision: Decision,
        slot: ModelSlot | None,
        detections: Detections,
        *,
        wait: bool = True,
        source: UnitSource | None = None,
        storable: bool = True,
    ) -> Verdict:
        """Commit the unit's verdict; the frame store keeps its frame when it planned to (``image``)."""
        store = self.frame_store
        keep = store is not None and storable and store.plan(decision.verdict)
        try:
            verdict = self.inspector.commit(
                frame, unit_id, decision, slot, wait=wait, source=source, keep_frame=keep
            )
        except BaseException:
            if keep and store is not None:
                store.cancel()
            raise
        if store is not None:  # a copy of the frame, only when kept; encoded on the store's thread
            policy = slot.policy if slot is not None else None
            store.record(verdict, frame.image if keep else None, detections, policy)
        if self.opcua is not None:  # never waits: the server mirrors it on its own thread
            self.opcua.publish(verdict)
        return verdict

    def _refuse(self, request: _Request) -> None:
        """A trigger refused (``duplicate_unit``, ``paused``) gets NO_DECISION with that reason.

        A duplicate also raises a ``duplicate_unit_id`` alert, as a repeated id is a line problem.
        """
        reason = request.refusal or Reason.ERROR
        event(logging.WARNING, "trigger_refused", unit_id=request.unit_id, reason=reason.value)
        if reason is Reason.DUPLICATE_UNIT:
            self.delivery.publish_alert(
                "duplicate_unit_id", {"unit_id": request.unit_id, "action": "answered NO_DECISION"}
            )
        self._answer(request, reason)

    def _no_frame(self, request: _Request, why: str, reason: Reason = Reason.CAMERA) -> None:
        """A triggered unit that got no frame still gets a verdict: NO_DECISION/camera (or error)."""
        event(logging.ERROR, "trigger_without_frame", unit_id=request.unit_id, detail=why)
        self._answer(request, reason)

    def _answer(self, request: _Request, reason: Reason) -> None:
        """Commit NO_DECISION/``reason`` for a trigger without a frame and hand it to the caller."""
        frame = Frame(np.zeros((1, 1, 3), np.uint8), datetime.now(UTC), time.monotonic(), -1)
        decision = Decision(VerdictKind.NO_DECISION, reason)
        try:
            verdict = self._commit(
                frame, request.unit_id, decision, None, Detections.empty(), wait=False, storable=False
            )
            _settle(request.future, verdict)
        except OutboxFullError as exc:
            event(logging.ERROR, "verdict_not_stored", unit_id=request.unit_id, error=str(exc))
            _settle(request.future, error=exc)

    def shutdown(self) -> None:
        """Stop the source, answer waiting triggers, stop HTTP, flush delivery, close the outbox."""
        self.follower.close()
        if self.shadow is not None:
            self.shadow.close()
        if self.review_queue is not None:
            self.review_queue.close()
        if self._review_sink is not None:  # after the uploader stopped: its HTTP connections
            self._review_sink.client.close()
            self._review_sink = None
        if not self._started:
            self.outbox.close()
            self._close_frame_store()
            return
        self._started = False
        self._stop.set()
        self.source.stop()
        self._answer_waiting_triggers()
        if self._http is not None:  # before delivery stops, so an upload's verdict is flushed too
            self._http.stop()
            self._http = None
        self._answer_waiting_triggers()
        if self.opcua is not None:
            self.opcua.stop()
        self.delivery.stop(timeout_s=5.0)
        self.summary.pending = self.outbox.depth()
        self.summary.last_seq = self.outbox.last_seq
        self.summary.skipped.update(self.source.skips)
        self.outbox.close()
        self._close_frame_store()
        event(
            logging.INFO,
            "stopped",
            units=self.summary.units,
            skipped=dict(self.summary.skipped),
            undelivered=self.summary.pending,
        )

    def _close_frame_store(self) -> None:
        if self.frame_store is not None:
            self.frame_store.close()

    def _answer_waiting_triggers(self) -> None:
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return
            if request.refusal is not None:
                self._refuse(request)
            else:
                self._no_frame(request, "station stopping", Reason.ERROR)

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
        stamps = list(self.inspector.unit_times)
        if len(stamps) < 2 or time.monotonic() - stamps[-1] > 2.0:
            return 0.0
        return (len(stamps) - 1) / max(stamps[-1] - stamps[0], 1e-9)

    def readiness(self) -> tuple[bool, list[str]]:
        """Ready = model loaded, camera up (not frozen), delivery ready, outbox not full."""
        reasons = []
        if self.slot is None:
            reasons.append(f"no model loaded: {self.model_error}")
        health = self.source.health()
        if not health.up:
            reasons.append(f"camera down: {health.detail}")
        elif health.frozen:
            reasons.append(f"camera frozen: {health.detail}")
        ok, detail = self.delivery.readiness()
        if not ok:
            reasons.append(f"delivery not ready: {detail}")
        if self.inspector.outbox_full:
            reasons.append(f"verdict outbox full ({self.outbox.max_pending} unacknowledged)")
        return not reasons, reasons

    def status(self) -> dict[str, Any]:
        slot = self.slot
        health = self.source.health()
        return {
            "state": "online",
            "mode": self.cfg.mode,
            "inspection": "paused" if self.paused else "running",
            "model": None if slot is None else slot.ref.model_dump(),
            "backend": None if slot is None else slot.detector.backend,
            "precision": None if slot is None else slot.detector.precision,
            "thresholds": None if slot is None else slot.policy.thresholds_id,
            "camera": {
                "source": self.source.name,
                "up": health.up,
                "frozen": health.frozen,
                "fps": health.fps,
                "skipped": health.skipped,
                "reconnects": health.reconnects,
                "detail": health.detail,
                "silent_s": health.silent_s,
            },
            "fps": round(self.inspection_fps(), 2),
            "outbox_pending": self.outbox.depth(),
            "outbox_durable": self.outbox.degraded is None,
        }

    def opcua_status(self) -> dict[str, Any] | None:
        return None if self.opcua is None else self.opcua.status()

    def counters(self) -> dict[str, int]:
        """Units by verdict, deadline misses and confirmed escapes/overkills since this process started."""
        by_verdict = self.summary.by_verdict
        return {
            **{kind.value: int(by_verdict.get(kind.value, 0)) for kind in VerdictKind},
            "deadline_misses": self.summary.deadline_misses,
            "feedback_escapes": self._feedback_counts["escape"],
            "feedback_overkills": self._feedback_counts["overkill"],
        }

    def _tick(self) -> None:
        """Watchdog and status, at most every half second (outside the per-frame path's budget)."""
        now = time.monotonic()
        if now - self._last_health < _HEALTH_EVERY_S:
            return
        self._last_health = now
        status = self.status()
        camera = status["camera"]
        silent = not camera["up"] and camera["silent_s"] > self.cfg.camera.watchdog_s
        bad = (silent or camera["frozen"]) and not self.source.ended
        if bad and not self._camera_alerted:
            kind = "camera_frozen" if camera["up"] else "camera_down"
            self.delivery.publish_alert(kind, {"source": camera["source"], "detail": camera["detail"]})
            event(logging.WARNING, kind, detail=camera["detail"])
        elif not bad and self._camera_alerted:
            event(logging.INFO, "camera_ok", source=camera["source"])
        self._camera_alerted = bad
        sig = (
            status["model"],
            status["backend"],
            status["precision"],
            camera["up"],
            camera["frozen"],
            status["outbox_durable"],
            status["inspection"],
        )
        if sig != self._status_sig or now - self._last_status >= self.cfg.mqtt.status_interval_s:
            self._status_sig = sig
            self._last_status = now
            self.delivery.publish_status(status)

    # -- messages from MQTT ---------------------------------------------------------------
    def _on_trigger(self, trigger: Trigger) -> None:
        self.trigger(trigger)

    def _on_control(self, control: InspectionControl) -> None:
        paused = control.inspection == "paused"
        if paused != self.paused:
            self.paused = paused
            event(logging.WARNING if paused else logging.INFO, "inspection", state=control.inspection)
            self._status_soon()

    def _on_feedback(self, feedback: Feedback) -> None:
        """Count the outcome; an escape or overkill whose frame is kept goes to QA review."""
        event(logging.INFO, "feedback", unit_id=feedback.unit_id, outcome=feedback.outcome)
        self._feedback_counts[feedback.outcome] += 1
        if feedback.outcome not in ("escape", "overkill"):
            return
        reason = f"feedback_{feedback.outcome}"
        found = None if self.frame_store is None else self.frame_store.review_frame(feedback.unit_id, reason)
        if found is None or self.review_queue is None:
            why = (
                "frame not kept (frame_store)" if found is None else "sampling is disabled (no review queue)"
            )
            event(
                logging.WARNING,
                "feedback_frame_not_reviewed",
                unit_id=feedback.unit_id,
                reason=reason,
                why=why,
            )
            return
        image, item = found
        if self.review_queue.submit(image, item):
            self.metrics.review_sampled.labels(reason=reason).inc()
            event(logging.INFO, "feedback_frame_to_review", unit_id=feedback.unit_id, reason=reason)

    def _on_model(self, desired: DesiredModel) -> None:
        self.desired_model = desired
        model = f"{desired.name}:{desired.version}"
        event(logging.INFO, "desired_model", model=model, url=mask_url(desired.url))
        running = self.slot
        if running is None or running.ref.sha256 != desired.sha256:
            self.follower.submit(desired)
