"""Where committed verdicts go: the ``Delivery`` protocol, the JSON-lines sink and shared helpers.

The inspection loop commits each verdict to the ``Outbox`` and calls ``wake()``; a delivery
drains the outbox on its own thread, in ``seq`` order, fsyncs it (``Outbox.sync``) once the new
rows are handed on, and acks a row only once its destination has it (the broker's PUBACK, or an
fsync of the file), so a slow or absent destination never slows inspection and a crash never
loses a verdict. ``JsonlDelivery`` is the sink for stations without a broker; ``MqttDelivery``
(``mqtt_delivery``) builds on the helpers here, and ``delivery_factory.make_delivery`` picks one
of the two from the config, so this module never imports the MQTT one. ``OutboxWatch`` keeps the
outbox gauges and raises the "outbox nearly full" alert once per crossing, for both sinks.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Protocol

from lineguard.edge.outbox import Outbox, PendingVerdict
from lineguard.logs import Events
from lineguard.monitoring import Metrics

__all__ = ["Delivery", "JsonlDelivery", "OutboxWatch", "captured_ts", "record_acks"]

event = Events(__name__)

AlertSink = Callable[[str, dict[str, object]], None]


class Delivery(Protocol):
    """What the daemon needs from a verdict sink; every method is safe to call from any thread."""

    def start(self) -> None: ...

    def wake(self) -> None:
        """A verdict was just committed to the outbox; never blocks."""

    def stop(self, timeout_s: float = 5.0) -> None:
        """Try to flush within ``timeout_s``; whatever is left stays in the outbox."""

    def readiness(self) -> tuple[bool, str]:
        """``(True, "")`` when delivering, else ``(False, why)`` for ``/readyz``."""
        ...

    def publish_alert(self, kind: str, detail: dict[str, object]) -> None:
        """Send an alert (counted in ``lineguard_alerts_total``); never raises."""

    def publish_status(self, status: dict[str, object]) -> None:
        """Refresh the station status; never raises."""


def captured_ts(payload: str) -> float | None:
    """``captured_at`` of a verdict payload as Unix seconds, for the capture-to-ack histogram."""
    try:
        value = json.loads(payload).get("captured_at")
        return datetime.fromisoformat(value).timestamp() if isinstance(value, str) else None
    except (ValueError, AttributeError):
        return None


def record_acks(metrics: Metrics, rows: Sequence[PendingVerdict], now: float) -> None:
    """Count acknowledged verdicts and observe their commit-to-ack and capture-to-ack times."""
    metrics.acknowledged.inc(len(rows))
    for row in rows:
        metrics.observe_stage("publish", max(0.0, now - row.created))
        captured = captured_ts(row.payload)
        if captured is not None:
            metrics.ack_latency.observe(max(0.0, now - captured))


class OutboxWatch:
    """Outbox gauges plus one alert each time the depth crosses ``warn_ratio * max_pending``.

    It also turns the outbox's degraded state into the ``lineguard_outbox_degraded`` gauge and a
    pair of alerts: ``outbox_degraded`` (an alarm) when verdicts stop being stored and
    ``outbox_recovered`` (``ok``) when they are stored again.
    """

    def __init__(self, outbox: Outbox, metrics: Metrics, warn_ratio: float, alert: AlertSink) -> None:
        self._outbox = outbox
        self._metrics = metrics
        self._alert = alert
        self.threshold = max(1, int(warn_ratio * outbox.max_pending))
        self._rearm_below = max(0, int(self.threshold * 0.9))  # hysteresis: no alert storm at the edge
        self._alerted = False
        self._degraded_alerted = False
        self._next_age = 0.0

    def check(self) -> int:
        self._check_degraded()
        depth = self._outbox.depth()
        self._metrics.outbox_depth.set(depth)
        now = time.monotonic()
        if now >= self._next_age or depth == 0:
            self._metrics.outbox_oldest_age.set(self._outbox.oldest_age_s())
            self._next_age = now + 1.0
        if depth >= self.threshold and not self._alerted:
            self._alerted = True
            event(
                logging.WARNING,
                "outbox_near_full",
                path=self._outbox.path,
                depth=depth,
                max_pending=self._outbox.max_pending,
                fix="check the broker; at max_pending new units are refused",
            )
            self._alert(
                "outbox_near_full",
                {
                    "depth": depth,
                    "max_pending": self._outbox.max_pending,
                    "threshold": self.threshold,
                    "oldest_age_s": round(self._outbox.oldest_age_s(), 3),
                },
            )
        elif depth < self._rearm_below:
            self._alerted = False
        return depth

    def _check_degraded(self) -> None:
        why = self._outbox.degraded
        self._metrics.outbox_degraded.set(0 if why is None else 1)
        if why is not None and not self._degraded_alerted:
            self._degraded_alerted = True
            message = f"verdicts are published but not stored (durable=false): {why}"
            self._alert(
                "outbox_degraded",
                {
                    "level": "alarm",
                    "signal": "outbox",
                    "message": message[:500],
                    "path": str(self._outbox.path),
                },
            )
        elif why is None and self._degraded_alerted:
            self._degraded_alerted = False
            since = self._outbox.degraded_since
            self._alert(
                "outbox_recovered",
                {
                    "level": "ok",
                    "signal": "outbox",
                    "message": "verdicts are stored again",
                    "path": str(self._outbox.path),
                    "degraded_s": round(time.time() - since, 1) if since else 0.0,
                },
            )


class JsonlDelivery:
    """Drains the outbox into a JSON-lines file, one verdict per line in ``seq`` order.

    A row is acked only after the lines are fsynced. On start a torn last line (a crash mid-write)
    is cut off and rows already in the file are acked without writing them again, so the file
    holds each ``seq`` exactly once.
    """

    def __init__(self, path: Path, outbox: Outbox, metrics: Metrics, *, warn_ratio: float = 0.8) -> None:
        self.path = path
        self._outbox = outbox
        self._metrics = metrics
        self._watch = OutboxWatch(outbox, metrics, warn_ratio, self.publish_alert)
        self._wakeup = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: str | None = None
        self._written_seq = 0
        self._good_size = 0
        self._recovered = False
        self._status: dict[str, object] = {}

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="lineguard-jsonl", daemon=True)
        self._thread.start()
        self._wakeup.set()

    def wake(self) -> None:
        self._wakeup.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        if self._thread is None:
            return
        self._stopping.set()
        self._wakeup.set()
        self._thread.join(timeout_s)
        self._thread = None

    def readiness(self) -> tuple[bool, str]:
        error = self._error
        return (error is None, error or "")

    def publish_alert(self, kind: str, detail: dict[str, object]) -> None:
        self._metrics.alerts.labels(kind=kind).inc()
        event(logging.WARNING, "alert", kind=kind, detail=detail)

    def publish_status(self, status: dict[str, object]) -> None:
        self._status = dict(status)

    def _run(self) -> None:
        while True:
            self._wakeup.wait(0.5)
            self._wakeup.clear()
            try:
                self._watch.check()
                while self._drain_once():
                    pass
                self._outbox.sync()
            except Exception:  # the sink must outlive any one bad write
                event(
                    logging.ERROR, "jsonl_delivery_failed", exc_info=True, path=self.path, action="retrying"
                )
            if self._stopping.is_set():
                return

    def _drain_once(self) -> bool:
        if not self._recovered:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._written_seq, self._good_size = _recover(self.path)
            except OSError as exc:
                self._fail(exc)
                return False
            self._recovered = True
        rows = self._outbox.pending(limit=500)
        if not rows:
            return False
        # Rows with seq <= _written_seq reached the file before a crash lost their ack: ack only.
        fresh = [r for r in rows if r.seq > self._written_seq]
        if fresh:
            data = "".join(r.payload + "\n" for r in fresh).encode()
            try:
                with self.path.open("ab") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
            except OSError as exc:
                self._fail(exc)
                return False
            self._good_size += len(data)
            self._written_seq = fresh[-1].seq
            self._metrics.published.inc(len(fresh))
            if self._error is not None:
                event(logging.INFO, "jsonl_delivery_resumed", path=self.path)
                self._error = None
        self._outbox.ack_many(r.seq for r in rows)
        record_acks(self._metrics, fresh, time.time())
        self._watch.check()
        return True

    def _fail(self, exc: OSError) -> None:
        reason = f"cannot write verdicts to {self.path}: {exc.strerror or exc}; they stay in the outbox"
        if reason != self._error:
            event(logging.ERROR, "jsonl_write_failed", why=reason)
        self._error = reason
        if self._recovered:
            with contextlib.suppress(OSError):  # never leave a torn line for the next write to extend
                os.truncate(self.path, self._good_size)
        self._stopping.wait(1.0)


def _recover(path: Path) -> tuple[int, int]:
    """Cut a torn last line off ``path``; return the last ``seq`` written and the file size."""
    if not path.exists():
        return 0, 0
    size = path.stat().st_size
    with path.open("rb+") as fh:
        tail_start = max(0, size - 65536)
        fh.seek(tail_start)
        tail = fh.read()
        end = tail.rfind(b"\n")
        good = tail_start + end + 1 if end >= 0 else 0
        if good != size:
            event(logging.WARNING, "jsonl_torn_line_cut", path=path, bytes=size - good)
            fh.truncate(good)
        lines = tail[: end + 1].splitlines() if end >= 0 else []
    for line in reversed(lines):
        try:
            seq = json.loads(line).get("seq")
        except ValueError:
            continue
        if isinstance(seq, int):
            return seq, good
    return 0, good
