"""Test peers for verdict delivery: a persistent QoS 1 subscriber, verdict builders, configs.

``Subscriber`` plays a line controller: an MQTT 5 client with a persistent session that records
every message in arrival order (duplicates included) and reconnects by itself when a fault test
restarts the broker, so the test can count sent, received, duplicates and lost.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from lineguard.config import LineguardConfig
from lineguard.edge.delivery_factory import make_delivery
from lineguard.edge.mqtt_delivery import MqttDelivery
from lineguard.edge.outbox import Outbox
from lineguard.messages import Reason, Verdict, VerdictKind, utc_now
from lineguard.monitoring.metrics import Metrics

__all__ = [
    "DeliveryCounts",
    "Subscriber",
    "add_verdicts",
    "edge_config",
    "make_verdict",
    "running_delivery",
    "subscribed",
    "wait_until",
]


def make_verdict(seq: int, *, line: str = "line1", station: str = "station1") -> Verdict:
    """A PASS verdict for unit ``u<seq>`` captured 5 ms ago."""
    decided = utc_now()
    return Verdict(
        seq=seq,
        unit_id=f"u{seq:05d}",
        line=line,
        station=station,
        verdict=VerdictKind.PASS,
        reason=Reason.NO_DEFECT,
        model=None,
        thresholds="test",
        captured_at=decided - timedelta(milliseconds=5),
        decided_at=decided,
        latency_ms=5.0,
    )


def add_verdicts(outbox: Outbox, count: int, **kw: str) -> list[int]:
    """Commit ``count`` verdicts; return their seq numbers."""
    return [outbox.add(lambda seq: make_verdict(seq, **kw)).seq for _ in range(count)]


def edge_config(port: int, data_dir: Path, **mqtt: Any) -> LineguardConfig:
    """A station config pointing at a test broker, with fast reconnects."""
    settings: dict[str, Any] = {"port": port, "reconnect_max_s": 1.0, **mqtt}
    return LineguardConfig.model_validate({"mqtt": settings, "station": {"data_dir": str(data_dir)}})


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


class DeliveryCounts:
    """Sent / received / duplicates / lost of one fault test, for its assertion message."""

    def __init__(self, sent: list[int], received: list[int]) -> None:
        self.sent = sent
        self.received = received
        seen: set[int] = set()
        self.first_seen: list[int] = []
        for seq in received:
            if seq not in seen:
                seen.add(seq)
                self.first_seen.append(seq)
        self.duplicates = len(received) - len(self.first_seen)
        self.lost = sorted(set(sent) - seen)

    def __str__(self) -> str:
        return (
            f"sent={len(self.sent)} received={len(self.received)} unique={len(self.first_seen)} "
            f"duplicates={self.duplicates} lost={len(self.lost)}"
        )


class Subscriber:
    """Persistent-session QoS 1 subscriber recording payloads of one topic filter."""

    def __init__(
        self,
        host: str,
        port: int,
        topic: str,
        *,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.topic = topic
        self.messages: list[tuple[str, bytes, bool]] = []  # topic, payload, retained
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"test-sub-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.reconnect_delay_set(1, 1)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        self.client.connect_async(host, port, clean_start=False, properties=props)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if not rc.is_failure:
            client.subscribe(self.topic, qos=1)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def start(self, timeout: float = 10.0) -> Subscriber:
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            raise TimeoutError(f"subscriber did not subscribe to {self.topic}")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def payloads(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(p) for _, p, _ in self.messages if p]

    def seqs(self) -> list[int]:
        return [int(p["seq"]) for p in self.payloads()]

    def wait_for_seqs(self, expected: set[int], timeout: float) -> None:
        wait_until(lambda: expected <= set(self.seqs()), timeout, f"{len(expected)} verdicts")


@contextmanager
def subscribed(host: str, port: int, topic: str, **kw: Any) -> Iterator[Subscriber]:
    sub = Subscriber(host, port, topic, **kw).start()
    try:
        yield sub
    finally:
        sub.stop()


@contextmanager
def running_delivery(port: int, data_dir: Path, **handlers: Any) -> Iterator[MqttDelivery]:
    """The station's MQTT delivery on a test broker, connected; ``handlers`` are its ``on_*`` callbacks."""
    outbox = Outbox(data_dir / "outbox.db")
    made = make_delivery(edge_config(port, data_dir), outbox, Metrics(), **handlers)
    assert isinstance(made, MqttDelivery)
    made.start()
    try:
        wait_until(lambda: made.readiness()[0], 10, "the delivery to connect")
        yield made
    finally:
        made.stop()
        outbox.close()
