"""Verdicts to MQTT at QoS 1 with nothing lost: outbox in, broker PUBACK out, replay on reconnect.

One drain thread owns publishing. It reads ``Outbox.pending()`` in ``seq`` order, keeps at most
``window`` verdicts in flight, maps each paho message id to its ``seq`` and acks the outbox row
only when paho reports the PUBACK for that id (and, on MQTT 5, a success reason code). paho's own
in-memory copies are dropped at every (re)connect: the outbox is the one source of truth, so after
a reconnect or a restart everything unacknowledged is replayed in ``seq`` order. paho's network
thread only queues events for the drain thread; ``outbox.ack`` runs on the drain thread so the
SQLite write never stalls the network loop and no lock is taken inside paho's callbacks. The
client also keeps the retained ``…/status`` (LWT ``offline``), sends alerts, and validates the
triggers, feedback, control and desired-model messages it subscribes to. Right after each
publish round the drain thread fsyncs the outbox (``Outbox.sync``), off the inspection path.
With ``mqtt.result_topic`` each outbox row is also published on ``…/result`` in its compact form
(``compact_result``), and the row is acked only when both PUBACKs came: the compact result has
the verdict's guarantees (at least once, replayed in ``seq`` order, deduplicated by ``seq``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from lineguard.config import LineguardConfig
from lineguard.edge.control import ControlInbox, DesiredModel, Feedback, InspectionControl, Trigger
from lineguard.edge.delivery import OutboxWatch, record_acks
from lineguard.edge.outbox import Outbox, PendingVerdict
from lineguard.logs import Events
from lineguard.messages import StationStatus, compact_result, utc_now
from lineguard.monitoring import Metrics, build_alert
from lineguard.mqtt_link import LinkSettings, diagnose, link_settings, make_client

__all__ = ["MqttDelivery"]

event = Events(__name__)

_Event = tuple[Any, ...]
# Unacked publishes paho puts on the wire at once; Mosquitto accepts 20 (its default receive maximum).
_PAHO_INFLIGHT = 20


class MqttDelivery:
    """Publishes the outbox to ``<prefix>verdict`` and serves the station's control topics."""

    def __init__(
        self,
        cfg: LineguardConfig,
        outbox: Outbox,
        metrics: Metrics,
        *,
        on_trigger: Callable[[Trigger], object] | None = None,
        on_feedback: Callable[[Feedback], object] | None = None,
        on_model: Callable[[DesiredModel], object] | None = None,
        on_control: Callable[[InspectionControl], object] | None = None,
        window: int = 100,
    ) -> None:
        self._settings: LinkSettings = link_settings(cfg)  # ConfigError on unreadable files
        self._outbox = outbox
        self._metrics = metrics
        self._window = max(1, window)
        self._line, self._station = cfg.station.line, cfg.station.station
        prefix = cfg.topic_prefix
        kinds = ("verdict", "result", "status", "trigger", "model", "alert", "feedback", "control")
        self.topics = {k: prefix + k for k in kinds}
        self._result = cfg.mqtt.result_topic
        self._addr = f"{cfg.mqtt.host}:{cfg.mqtt.port}"
        self._watch = OutboxWatch(outbox, metrics, cfg.outbox.warn_ratio, self.publish_alert)
        self._inbox = ControlInbox(
            prefix,
            self.publish_alert,
            metrics,
            on_trigger=on_trigger,
            on_feedback=on_feedback,
            on_model=on_model,
            on_control=on_control,
            follow=cfg.registry.follow,
        )
        # State shared with paho's network thread: plain attributes written by one side only.
        self._events: queue.SimpleQueue[_Event] = queue.SimpleQueue()
        self._wakeup = threading.Event()
        self._connected = False
        self._link_epoch = 0
        self._got_connack = False
        self._status = StationStatus(state="online", line=self._line, station=self._station)
        self._alerts_unsent: deque[bytes] = deque(maxlen=100)
        self._alerts_lock = threading.Lock()
        # State of the drain thread only.
        self._inflight: dict[int, PendingVerdict] = {}  # paho mid -> row
        self._inflight_seqs: dict[int, int] = {}  # seq -> PUBACKs still awaited (verdict, result)
        self._cursor = 0
        self._drain_epoch = 0
        self._high_water = outbox.last_seq if outbox.depth() else 0  # rows left by an earlier run
        self._reason = f"not connected to broker {self._addr} yet"
        self._retry_at: float | None = None
        self._stop = threading.Event()
        self._stop_deadline = 0.0
        self._thread: threading.Thread | None = None
        self._client = self._make_client()

    # -- the Delivery protocol -------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        s = self._settings
        self._metrics.broker_up.set(0)
        clean_start: bool | Literal[3] = mqtt.MQTT_CLEAN_START_FIRST_ONLY
        props = None
        if s.protocol is MQTTProtocolVersion.MQTTv5:
            clean_start = False
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = s.session_expiry_s
        self._client.connect_async(
            s.host, s.port, keepalive=s.keepalive_s, clean_start=clean_start, properties=props
        )
        self._client.loop_start()
        self._thread = threading.Thread(target=self._run, name="lineguard-mqtt-drain", daemon=True)
        self._thread.start()
        event(
            logging.INFO,
            "mqtt_started",
            broker=self._addr,
            topic=self.topics["verdict"],
            client_id=s.client_id,
        )

    def wake(self) -> None:
        self._wakeup.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        if self._thread is None:
            return
        self._stop_deadline = time.monotonic() + timeout_s
        self._stop.set()
        self._wakeup.set()
        self._thread.join(timeout_s + 1.0)
        self._thread = None
        if self._connected:
            info = self._client.publish(self.topics["status"], self._status_payload("offline"), 1, True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(1.0)
        self._client.disconnect()
        self._client.loop_stop()
        self._connected = False
        self._metrics.broker_up.set(0)
        left = self._outbox.depth()
        if left:
            event(logging.WARNING, "mqtt_stopped_with_backlog", pending=left, sent="on the next start")

    def readiness(self) -> tuple[bool, str]:
        if self._connected and self._retry_at is None:
            return True, ""
        return False, self._reason

    def publish_alert(self, kind: str, detail: dict[str, object]) -> None:
        try:
            self._metrics.alerts.labels(kind=kind).inc()
            alert = build_alert(kind, detail, line=self._line, station=self._station)
            payload = alert.to_json().encode()
            event(
                logging.WARNING, "alert", kind=kind, message=alert.message, detail=json.dumps(alert.details)
            )
            with self._alerts_lock:
                if not self._connected:
                    self._alerts_unsent.append(payload)  # sent on (re)connect
                    return
            self._client.publish(self.topics["alert"], payload, qos=1)
        except Exception:  # an alert must never take the caller down
            event(logging.ERROR, "alert_not_sent", kind=kind, exc_info=True)

    def publish_status(self, status: dict[str, object]) -> None:
        try:
            self._status = StationStatus.online(self._line, self._station, status)  # the contract
            if self._connected:
                self._client.publish(self.topics["status"], self._status_payload("online"), 1, True)
        except Exception:
            event(logging.ERROR, "status_not_published", exc_info=True)

    # -- paho callbacks (network thread): queue and wake, never block ---------------------------
    def _make_client(self) -> mqtt.Client:
        client = make_client(self._settings, persistent=True)
        client.max_inflight_messages_set(_PAHO_INFLIGHT)
        client.will_set(self.topics["status"], self._status_payload("offline"), qos=1, retain=True)
        client.on_pre_connect = self._on_pre_connect
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _post(self, *event: Any) -> None:
        self._events.put(event)
        self._wakeup.set()

    def _on_pre_connect(self, client: mqtt.Client, userdata: Any) -> None:
        self._got_connack = False

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        rc: ReasonCode,
        props: Properties | None,
    ) -> None:
        self._got_connack = True
        if rc.is_failure:
            self._post("refused", str(rc))
            return
        dropped = client.drop_out_messages()  # the outbox replays verdicts; alerts are re-sent
        client.subscribe([(topic, 1) for topic in self._inbox.topics])
        client.publish(self.topics["status"], self._status_payload("online"), 1, True)
        with self._alerts_lock:
            resend = [m.payload for m in dropped if m.topic == self.topics["alert"]]
            pending = resend + list(self._alerts_unsent)
            self._alerts_unsent.clear()
            for payload in pending:
                client.publish(self.topics["alert"], payload, qos=1)
            self._link_epoch += 1
            self._connected = True
        self._post("connected", self._link_epoch, bool(flags.session_present))

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._post("connect_failed")

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        rc: ReasonCode,
        props: Properties | None,
    ) -> None:
        with self._alerts_lock:
            self._connected = False
        self._post("disconnected", str(rc), self._got_connack)

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, rc: ReasonCode, props: Properties
    ) -> None:
        self._post("ack", mid, rc.is_failure, str(rc))

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self._inbox.handle(msg.topic, bytes(msg.payload), retained=bool(msg.retain))
        except Exception:  # a handler's bug must not stop the network loop
            event(logging.ERROR, "message_handler_failed", topic=msg.topic, exc_info=True)

    # -- the drain thread ------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            self._wakeup.wait(0.5)
            self._wakeup.clear()
            try:
                self._handle_events()
                self._watch.check()
                self._retry_refused()
                self._fill_window()
                self._outbox.sync()  # after the publish, so the fsync never delays it
            except Exception:  # the drain thread must outlive any one failure
                event(logging.ERROR, "delivery_loop_failed", then="continuing", exc_info=True)
                self._stop.wait(0.5)
            if self._stop.is_set() and self._flushed_or_late():
                return

    def _flushed_or_late(self) -> bool:
        if not self._connected or time.monotonic() >= self._stop_deadline:
            return True
        return not self._inflight and self._outbox.depth() == 0

    def _handle_events(self) -> None:
        acked: list[PendingVerdict] = []
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            kind = event[0]
            if kind == "ack":
                entry = self._inflight.pop(event[1], None)
                if entry is None or entry.seq not in self._inflight_seqs:
                    continue  # an alert or status, a verdict of an earlier connection, or refused
                if event[2]:
                    del self._inflight_seqs[entry.seq]
                    self._refused(entry, event[3])
                    continue
                self._inflight_seqs[entry.seq] -= 1
                if not self._inflight_seqs[entry.seq]:
                    del self._inflight_seqs[entry.seq]
                    acked.append(entry)
            elif kind == "connected":
                self._on_link_up(event[1], event[2])
            elif kind == "disconnected":
                self._on_link_down(event[1], event[2])
            elif kind == "refused":
                hint = "check mqtt.username, mqtt.password_file and the broker's ACL"
                self._down(f"broker {self._addr} refused the connection: {event[1]} ({hint})")
            elif kind == "connect_failed":
                self._down(diagnose(self._settings, connack_missing=False))
        if acked:
            self._outbox.ack_many(r.seq for r in acked)
            record_acks(self._metrics, acked, time.time())

    def _on_link_up(self, epoch: int, session_present: bool) -> None:
        self._inflight.clear()
        self._inflight_seqs.clear()
        self._cursor = 0
        self._drain_epoch = epoch
        self._metrics.broker_up.set(1)
        depth = self._outbox.depth()
        event(
            logging.INFO, "mqtt_connected", broker=self._addr, session_present=session_present, pending=depth
        )
        self._reason = ""

    def _on_link_down(self, rc: str, got_connack: bool) -> None:
        self._metrics.broker_up.set(0)
        if self._reason == "" and got_connack:
            self._down(f"lost the connection to broker {self._addr}: {rc}; reconnecting")
        elif not got_connack:
            self._down(diagnose(self._settings, connack_missing=True))

    def _down(self, reason: str) -> None:
        self._metrics.broker_up.set(0)
        if reason != self._reason:
            event(logging.ERROR, "mqtt_down", reason=reason, pending=self._outbox.depth())
            self._reason = reason

    def _refused(self, row: PendingVerdict, rc: str) -> None:
        """A PUBACK with a failure code (e.g. an ACL): keep the row, pause, retry from it later."""
        if self._retry_at is None:  # one log line and alert per retry round, not per verdict
            event(
                logging.ERROR,
                "verdict_refused",
                broker=self._addr,
                seq=row.seq,
                reason=rc,
                kept="in the outbox",
            )
            self.publish_alert("verdict_refused", {"seq": row.seq, "reason": rc})
            topics = self.topics["verdict"] + (f" or {self.topics['result']}" if self._result else "")
            self._reason = f"broker {self._addr} refuses verdicts on {topics}: {rc}"
        self._cursor = min(self._cursor, row.seq - 1)
        self._retry_at = time.monotonic() + self._settings.reconnect_max_s

    def _retry_refused(self) -> None:
        if self._retry_at is not None and time.monotonic() >= self._retry_at:
            self._retry_at = None
            self._reason = ""

    def _fill_window(self) -> None:
        if self._retry_at is not None or not self._connected or self._drain_epoch != self._link_epoch:
            return
        room = self._window - len(self._inflight_seqs)
        if room <= 0:
            return
        for row in self._outbox.pending(after_seq=self._cursor, limit=room + len(self._inflight_seqs)):
            if len(self._inflight_seqs) >= self._window or not self._connected:
                break
            if row.seq in self._inflight_seqs:
                continue
            mids = self._publish_row(row)
            if not mids:
                break
            for mid in mids:
                self._inflight[mid] = row
            self._inflight_seqs[row.seq] = len(mids)
            self._cursor = max(self._cursor, row.seq)
            self._metrics.published.inc()
            if row.seq <= self._high_water:
                self._metrics.replayed.inc()
            self._high_water = max(self._high_water, row.seq)

    def _publish_row(self, row: PendingVerdict) -> list[int]:
        """Queue the row's verdict (and compact result); their message ids, none when paho refused."""
        messages = [(self.topics["verdict"], row.payload)]
        if self._result:
            fields = json.loads(row.payload)
            text = compact_result(fields["verdict"], row.seq, fields["unit_id"])
            messages.append((self.topics["result"], text))
        mids = []
        for topic, payload in messages:
            info = self._client.publish(topic, payload, qos=1)
            if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                event(logging.ERROR, "verdict_not_queued", seq=row.seq, reason=mqtt.error_string(info.rc))
                return []
            mids.append(info.mid)
        return mids

    def _status_payload(self, state: str) -> bytes:
        """``online`` repeats the last status given, stamped now; ``offline`` is the last will."""
        if state == "online":
            return self._status.model_copy(update={"ts": utc_now()}).to_json().encode()
        return StationStatus.offline(self._line, self._station).to_json().encode()
