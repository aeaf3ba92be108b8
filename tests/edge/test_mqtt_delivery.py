"""MqttDelivery against a real Mosquitto: verdicts, status, triggers, feedback, desired model."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.publish as publish
import pytest
from support.contracts import assert_matches_schema, daemon_status
from support.mosquitto import Broker
from support.mqtt import Subscriber, add_verdicts, edge_config, subscribed, wait_until

from lineguard.edge.control import DesiredModel, Feedback, Trigger
from lineguard.edge.delivery_factory import make_delivery
from lineguard.edge.mqtt_delivery import MqttDelivery
from lineguard.edge.outbox import Outbox
from lineguard.messages import RESULT_PATTERN
from lineguard.monitoring.metrics import Metrics

PREFIX = "lineguard/line1/station1/"


class Handlers:
    def __init__(self) -> None:
        self.triggers: list[Trigger] = []
        self.feedback: list[Feedback] = []
        self.models: list[DesiredModel] = []


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    box = Outbox(tmp_path / "outbox.db")
    yield box
    box.close()


@pytest.fixture
def handlers() -> Handlers:
    return Handlers()


@pytest.fixture
def delivery(broker: Broker, outbox: Outbox, tmp_path: Path, handlers: Handlers) -> Iterator[MqttDelivery]:
    cfg = edge_config(broker.port, tmp_path)
    made = make_delivery(
        cfg,
        outbox,
        Metrics(),
        on_trigger=handlers.triggers.append,
        on_feedback=handlers.feedback.append,
        on_model=handlers.models.append,
    )
    assert isinstance(made, MqttDelivery)
    made.start()
    wait_until(lambda: made.readiness()[0], 10, "the delivery to connect")
    yield made
    made.stop()


def metric(delivery: MqttDelivery, name: str, **labels: str) -> float:
    value = delivery._metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_verdicts_published_in_seq_order_and_removed_on_ack(
    broker: Broker, outbox: Outbox, delivery: MqttDelivery
) -> None:
    with subscribed(broker.host, broker.port, PREFIX + "verdict") as sub:
        sent = add_verdicts(outbox, 30)
        delivery.wake()
        sub.wait_for_seqs(set(sent), timeout=10)
        wait_until(lambda: outbox.depth() == 0, 5, "the outbox to empty")
        wait_until(lambda: outbox.synced_seq == sent[-1], 5, "the drain thread to fsync the outbox")
    assert sub.seqs() == sent
    assert all(retained is False for _, _, retained in sub.messages)
    assert metric(delivery, "lineguard_verdicts_acknowledged_total") == 30
    assert metric(delivery, "lineguard_verdicts_published_total") == 30
    assert metric(delivery, "lineguard_broker_up") == 1


def test_status_is_retained_online_then_offline_after_stop(
    broker: Broker, outbox: Outbox, tmp_path: Path
) -> None:
    delivery = MqttDelivery(edge_config(broker.port, tmp_path), outbox, Metrics())
    delivery.start()
    wait_until(lambda: delivery.readiness()[0], 10, "the delivery to connect")
    delivery.publish_status(daemon_status())
    delivery.stop()
    # A late subscriber still sees the station's state: it is retained.
    with subscribed(broker.host, broker.port, PREFIX + "status") as late:
        wait_until(lambda: late.payloads(), 5, "the retained status")
    assert late.payloads()[-1]["state"] == "offline"
    assert late.messages[-1][2] is True


def test_status_refresh_carries_the_daemons_fields(broker: Broker, delivery: MqttDelivery) -> None:
    with subscribed(broker.host, broker.port, PREFIX + "status") as sub:
        delivery.publish_status(daemon_status())
        wait_until(lambda: any(p.get("fps") == 9.5 for p in sub.payloads()), 5, "the status refresh")
    status = sub.payloads()[-1]
    assert status["state"] == "online"
    assert status["model"] == daemon_status()["model"]
    assert status["schema"] == "lineguard.status/1"
    assert_matches_schema("status", status)


def test_status_outside_the_contract_is_not_published(broker: Broker, delivery: MqttDelivery) -> None:
    with subscribed(broker.host, broker.port, PREFIX + "status") as sub:
        delivery.publish_status(daemon_status(fps=9.5))
        delivery.publish_status(daemon_status(fps=7.0, camera="up"))  # not a camera health record
        delivery.publish_status(daemon_status(fps=8.0))
        wait_until(lambda: any(p.get("fps") == 8.0 for p in sub.payloads()), 5, "the status refresh")
    assert all(p.get("fps") != 7.0 for p in sub.payloads())


@pytest.mark.parametrize(
    ("payload", "reason_part"),
    [
        (b"", "invalid trigger"),
        (b"A1\n", "invalid trigger"),  # a plain-text unit id must be the id alone
        (b"\xff\xfe", "invalid trigger"),
        (b'{"unit_id": ""}', "unit_id"),
        (b'{"unit_id": "A1", "speed": 3}', "speed: unknown key"),
        (b'{"unit_id": "A1", "ts": "yesterday"}', "ts"),
    ],
)
def test_malformed_trigger_is_answered_on_alert_and_the_edge_goes_on(
    broker: Broker, delivery: MqttDelivery, handlers: Handlers, payload: bytes, reason_part: str
) -> None:
    with subscribed(broker.host, broker.port, PREFIX + "alert") as alerts:
        publish.single(PREFIX + "trigger", payload, qos=1, hostname=broker.host, port=broker.port)
        wait_until(lambda: alerts.payloads(), 5, "the alert")
        publish.single(
            PREFIX + "trigger", b'{"unit_id": "A2"}', qos=1, hostname=broker.host, port=broker.port
        )
        wait_until(lambda: handlers.triggers, 5, "the valid trigger")
    alert = alerts.payloads()[0]
    assert alert["kind"] == "invalid_trigger"
    assert reason_part in alert["details"]["reason"]
    assert [t.unit_id for t in handlers.triggers] == ["A2"]
    assert metric(delivery, "lineguard_alerts_total", kind="invalid_trigger") == 1


def test_plain_text_and_repeated_triggers_reach_the_station_which_answers_repeats(
    broker: Broker, delivery: MqttDelivery, handlers: Handlers
) -> None:
    for body in (b"A1", b'{"unit_id": "A2"}', b"A1", b"4711"):
        publish.single(PREFIX + "trigger", body, qos=1, hostname=broker.host, port=broker.port)
    wait_until(lambda: len(handlers.triggers) == 4, 5, "four triggers")
    assert [t.unit_id for t in handlers.triggers] == ["A1", "A2", "A1", "4711"]


def test_compact_result_is_published_beside_each_verdict_and_acked_with_it(
    broker: Broker, outbox: Outbox, tmp_path: Path
) -> None:
    delivery = MqttDelivery(edge_config(broker.port, tmp_path, result_topic=True), outbox, Metrics())
    with (
        subscribed(broker.host, broker.port, PREFIX + "verdict") as verdicts,
        subscribed(broker.host, broker.port, PREFIX + "result") as results,
    ):
        sent = add_verdicts(outbox, 5)
        delivery.start()
        try:
            verdicts.wait_for_seqs(set(sent), timeout=10)
            wait_until(lambda: len(results.messages) >= 5, 10, "five compact results")
            wait_until(lambda: outbox.depth() == 0, 5, "the outbox to empty")
        finally:
            delivery.stop()
    lines = [payload.decode() for _, payload, _ in results.messages]
    assert lines == [f"PASS,{seq},u{seq:05d}" for seq in sent]
    assert all(RESULT_PATTERN.fullmatch(line) for line in lines)


def test_feedback_counts_escapes_and_overkills(
    broker: Broker, delivery: MqttDelivery, handlers: Handlers
) -> None:
    outcomes = ["escape", "overkill", "overkill", "confirmed"]
    msgs = [
        {"topic": PREFIX + "feedback", "payload": json.dumps({"unit_id": f"u{i}", "outcome": o}), "qos": 1}
        for i, o in enumerate(outcomes)
    ]
    msgs.append({"topic": PREFIX + "feedback", "payload": '{"unit_id": "u9", "outcome": "maybe"}', "qos": 1})
    publish.multiple(msgs, hostname=broker.host, port=broker.port)  # type: ignore[arg-type]
    wait_until(lambda: len(handlers.feedback) == 4, 5, "four feedback messages")
    wait_until(lambda: metric(delivery, "lineguard_alerts_total", kind="invalid_feedback") == 1, 5, "alert")
    assert metric(delivery, "lineguard_feedback_total", outcome="escape") == 1
    assert metric(delivery, "lineguard_feedback_total", outcome="overkill") == 2
    assert metric(delivery, "lineguard_feedback_total", outcome="confirmed") == 1


def test_retained_desired_model_reaches_the_handler_on_connect(
    broker: Broker, outbox: Outbox, tmp_path: Path
) -> None:
    desired = {"name": "scratch", "version": "2.0.0", "sha256": "a" * 64, "url": "http://registry/m/2.0.0"}
    publish.single(
        PREFIX + "model", json.dumps(desired), qos=1, retain=True, hostname=broker.host, port=broker.port
    )
    got: list[DesiredModel] = []
    arrived = threading.Event()
    delivery = MqttDelivery(
        edge_config(broker.port, tmp_path),
        outbox,
        Metrics(),
        on_model=lambda m: got.append(m) or arrived.set(),  # type: ignore[func-returns-value]
    )
    delivery.start()
    try:
        assert arrived.wait(10)
    finally:
        delivery.stop()
    assert got[0].version == "2.0.0"
    assert got[0].sha256 == "a" * 64


def test_mqtt_311_station_delivers_too(broker: Broker, outbox: Outbox, tmp_path: Path) -> None:
    delivery = MqttDelivery(edge_config(broker.port, tmp_path, protocol="3.1.1"), outbox, Metrics())
    with subscribed(broker.host, broker.port, PREFIX + "verdict") as sub:
        sent = add_verdicts(outbox, 5)
        delivery.start()
        try:
            sub.wait_for_seqs(set(sent), timeout=10)
            wait_until(lambda: outbox.depth() == 0, 5, "the outbox to empty")
        finally:
            delivery.stop()
    assert sub.seqs() == sent


def test_stop_flushes_what_the_broker_can_take(broker: Broker, outbox: Outbox, tmp_path: Path) -> None:
    delivery = MqttDelivery(edge_config(broker.port, tmp_path), outbox, Metrics())
    delivery.start()
    wait_until(lambda: delivery.readiness()[0], 10, "the delivery to connect")
    add_verdicts(outbox, 200)
    delivery.wake()
    delivery.stop(timeout_s=10)
    assert outbox.depth() == 0


def test_subscriber_sees_station_in_topic(broker: Broker, outbox: Outbox, tmp_path: Path) -> None:
    cfg = edge_config(broker.port, tmp_path)
    cfg.station.line, cfg.station.station = "L7", "S3"
    delivery = MqttDelivery(cfg, outbox, Metrics())
    sub = Subscriber(broker.host, broker.port, "lineguard/L7/S3/verdict").start()
    try:
        sent = add_verdicts(outbox, 3, line="L7", station="S3")
        delivery.start()
        sub.wait_for_seqs(set(sent), timeout=10)
    finally:
        delivery.stop()
        sub.stop()
    assert {p["station"] for p in sub.payloads()} == {"S3"}
