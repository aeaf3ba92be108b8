"""Every Prometheus metric lineguard exports, defined once with stable names and bounded labels.

The edge, the delivery threads, the sampler and drift detection all record into one ``Metrics``
object made at start-up (no module-level globals, so tests and a hot-swapped model each get a
clean registry). Names carry their unit (``_seconds``, ``_total``); labels take values from small
fixed sets (verdict, reason, stage, class name, drift signal), never unit ids.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

__all__ = ["LATENCY_BUCKETS_S", "STAGES", "Metrics"]

STAGES = ("capture", "preprocess", "inference", "postprocess", "verdict", "publish")

# 0.5 ms .. 1 s: the budget is 200 ms, so resolution matters most below it.
LATENCY_BUCKETS_S = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    1.0,
)


class Metrics:
    """The metric families of one edge process, registered in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        p = "lineguard_"
        self.frames = Counter(p + "frames_total", "Frames taken from the camera.", registry=r)
        self.frames_skipped = Counter(
            p + "frames_skipped_total",
            "Frames never inspected: dropped by the latest-frame policy or unreadable files.",
            registry=r,
        )
        self.verdicts = Counter(p + "verdicts_total", "Verdicts decided.", ["verdict", "reason"], registry=r)
        self.defects = Counter(p + "defects_total", "Defects in FAIL verdicts.", ["class_name"], registry=r)
        self.stage_latency = Histogram(
            p + "stage_latency_seconds",
            "Time per pipeline stage.",
            ["stage"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.decision_latency = Histogram(
            p + "capture_to_decision_seconds",
            "Capture to verdict committed in the outbox.",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.ack_latency = Histogram(
            p + "capture_to_ack_seconds",
            "Capture to broker acknowledgement of the verdict.",
            buckets=(*LATENCY_BUCKETS_S, 2.0, 5.0, 10.0, 30.0, 60.0),
            registry=r,
        )
        self.deadline_misses = Counter(
            p + "deadline_misses_total", "Units whose decision missed the deadline.", registry=r
        )
        self.outbox_depth = Gauge(p + "outbox_pending", "Verdicts not yet acknowledged.", registry=r)
        self.outbox_oldest_age = Gauge(
            p + "outbox_oldest_age_seconds", "Age of the oldest unacknowledged verdict.", registry=r
        )
        self.outbox_degraded = Gauge(
            p + "outbox_degraded",
            "1 while verdicts cannot be stored (disk full or failing) and go out marked durable=false.",
            registry=r,
        )
        self.published = Counter(p + "verdicts_published_total", "Verdict publishes sent.", registry=r)
        self.acknowledged = Counter(
            p + "verdicts_acknowledged_total", "Verdicts acknowledged by the broker.", registry=r
        )
        self.replayed = Counter(
            p + "verdicts_replayed_total", "Verdicts sent again after a reconnect or restart.", registry=r
        )
        self.broker_up = Gauge(p + "broker_up", "1 when connected to the MQTT broker.", registry=r)
        self.opcua_up = Gauge(p + "opcua_up", "1 while the station's OPC UA server listens.", registry=r)
        self.camera_up = Gauge(
            p + "camera_up",
            "1 when the camera delivers fresh frames (a triggered camera: when it is connected).",
            registry=r,
        )
        self.camera_reconnects = Counter(
            p + "camera_reconnects_total", "Camera or stream reopened after a drop.", registry=r
        )
        self.model_info = Info(p + "model", "Model in use, the backend and precision running it.", registry=r)
        self.model_swaps = Counter(
            p + "model_swaps_total", "Model changes at the edge.", ["result"], registry=r
        )
        self.drift_score = Gauge(p + "drift_score", "Drift statistic per signal.", ["signal"], registry=r)
        self.drift_alarm = Gauge(
            p + "drift_alarm", "0 ok, 1 warning, 2 alarm, per signal.", ["signal"], registry=r
        )
        self.review_queue_depth = Gauge(
            p + "review_queue_pending", "Frames waiting to go to Label Studio.", registry=r
        )
        self.review_sampled = Counter(
            p + "review_sampled_total", "Frames sampled for review.", ["reason"], registry=r
        )
        self.frame_store_frames = Counter(
            p + "frame_store_frames_total",
            "Frames the frame store wrote (stored), let go (evicted_bytes, evicted_age) or could not "
            "keep (busy: writer behind, too_large, failed).",
            ["result"],
            registry=r,
        )
        self.frame_store_bytes = Gauge(
            p + "frame_store_bytes", "Bytes of frames (JPEG + sidecar) in the frame store.", registry=r
        )
        self.feedback = Counter(
            p + "feedback_total", "Confirmed unit outcomes from downstream.", ["outcome"], registry=r
        )
        self.alerts = Counter(p + "alerts_total", "Alerts raised.", ["kind"], registry=r)
        self.shadow_disagreements = Counter(
            p + "shadow_disagreements_total", "Units where the shadow model's verdict differs.", registry=r
        )

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stage_latency.labels(stage=stage).observe(seconds)

    def render(self) -> bytes:
        """Text exposition format, for ``/metrics``."""
        return generate_latest(self.registry)
