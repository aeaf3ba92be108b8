"""End-to-end leg of the latency benchmark: verdict committed -> received by an MQTT subscriber.

The product path is timed, not a stand-in: each unit's verdict is committed to a real SQLite
``Outbox`` (with or without fsync), the real ``MqttDelivery`` drain thread publishes it at QoS 1,
and a paho subscriber (QoS 1, its own connection) stamps its arrival on the same
``perf_counter`` clock the inspection loop uses. Each probe uses its own station id, so a run on
a shared broker neither sees nor leaves anyone else's verdicts.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from lineguard.config import LineguardConfig
from lineguard.edge import MqttDelivery, Outbox
from lineguard.errors import DeliveryError
from lineguard.inference import Decision
from lineguard.messages import ModelCard, ModelRef, Verdict
from lineguard.monitoring import Metrics

__all__ = ["MqttProbe", "broker_answers"]


def broker_answers(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """Whether something accepts TCP connections at ``host:port``."""
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError:
        return False
    return True


class MqttProbe:
    """One outbox + ``MqttDelivery`` + QoS 1 subscriber; ``send`` returns commit and arrival times."""

    def __init__(
        self, host: str, port: int, workdir: Path, *, durable: bool, card: ModelCard | None = None
    ) -> None:
        self.label = "fsync" if durable else "no_fsync"
        self.lost = 0
        station = f"bench-{os.getpid()}-{uuid.uuid4().hex[:8]}-{self.label.replace('_', '')}"
        self._ref = ModelRef(name=card.name, version=card.version, sha256=card.sha256) if card else None
        self.outbox = Outbox(workdir / f"outbox-{station}.db", durable=durable)
        cfg = LineguardConfig.model_validate(
            {
                "station": {"line": "bench", "station": station},
                "mqtt": {"host": host, "port": port, "client_id": station, "session_expiry_s": 0},
            }
        )
        self.delivery = MqttDelivery(cfg, self.outbox, Metrics())
        self._topic = self.delivery.topics["verdict"]
        self._host, self._port = host, port
        self._arrived: dict[int, float] = {}
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self._sub = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{station}-sub",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self._sub.on_connect = lambda client, *_: client.subscribe(self._topic, qos=1)
        self._sub.on_subscribe = lambda *_: self._subscribed.set()
        self._sub.on_message = self._on_message

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        seq = int(json.loads(msg.payload)["seq"])
        with self._cond:
            self._arrived.setdefault(seq, now)
            self._cond.notify_all()

    def start(self, timeout_s: float = 10.0) -> MqttProbe:
        """Connect the subscriber and the delivery; ``DeliveryError`` if either is not up in time."""
        addr = f"{self._host}:{self._port}"
        try:
            self._sub.connect(self._host, self._port)
        except OSError as exc:
            raise DeliveryError(f"MQTT subscriber could not connect to {addr}: {exc}") from None
        self._sub.loop_start()
        if not self._subscribed.wait(timeout_s):
            self.close()
            raise DeliveryError(f"no SUBACK from broker {addr} in {timeout_s:.0f} s; is it an MQTT broker?")
        self.delivery.start()
        deadline = time.monotonic() + timeout_s
        while not self.delivery.readiness()[0]:
            if time.monotonic() > deadline:
                reason = self.delivery.readiness()[1]
                self.close()
                raise DeliveryError(f"MqttDelivery not ready after {timeout_s:.0f} s: {reason}")
            time.sleep(0.01)
        return self

    def send(
        self, decision: Decision, captured_at: datetime, latency_s: float, *, timeout_s: float = 5.0
    ) -> tuple[float, float | None]:
        """Commit the unit's verdict and wake the drain thread; wait for the subscriber's copy.

        Returns (perf_counter when ``add`` + ``wake`` returned, perf_counter of arrival or None if
        it did not arrive within ``timeout_s``). The drain thread fsyncs the outbox after the
        publish; that is made sure of after the arrival, so it never runs into the next unit's timings.
        """

        def make(seq: int) -> Verdict:
            return Verdict(
                seq=seq,
                unit_id=f"u{seq}",
                line="bench",
                station=self._topic.split("/")[2],
                verdict=decision.verdict,
                reason=decision.reason,
                defects=decision.defects,
                model=self._ref,
                thresholds="bench",
                captured_at=captured_at,
                decided_at=captured_at + timedelta(seconds=latency_s),
                latency_ms=latency_s * 1e3,
            )

        seq = self.outbox.add(make).seq
        self.delivery.wake()
        committed = time.perf_counter()
        with self._cond:
            arrived = self._cond.wait_for(lambda: seq in self._arrived, timeout_s)
            received = self._arrived.pop(seq) if arrived else None
        if not arrived:
            self.lost += 1
        self.outbox.sync()  # a no-op when the drain thread got there first
        return committed, received

    def close(self) -> None:
        self.delivery.stop(timeout_s=2.0)
        self._sub.disconnect()
        self._sub.loop_stop()
        self.outbox.close()
