"""A megabyte of garbage on …/trigger over a real Mosquitto: a small alert, a short log line."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.publish as publish
import pytest
from support.mosquitto import Broker
from support.mqtt import running_delivery, subscribed, wait_until

from lineguard.edge.control import Trigger
from lineguard.edge.mqtt_delivery import MqttDelivery

PREFIX = "lineguard/line1/station1/"


@pytest.fixture
def triggers() -> list[Trigger]:
    return []


@pytest.fixture
def delivery(broker: Broker, tmp_path: Path, triggers: list[Trigger]) -> Iterator[MqttDelivery]:
    with running_delivery(broker.port, tmp_path, on_trigger=triggers.append) as made:
        yield made


def test_megabyte_trigger_gives_a_small_alert_and_log_line(
    broker: Broker, delivery: MqttDelivery, triggers: list[Trigger], caplog: pytest.LogCaptureFixture
) -> None:
    huge = json.dumps({"unit_id": "x" * 1_000_000}).encode()
    caplog.set_level(logging.WARNING)
    with subscribed(broker.host, broker.port, PREFIX + "alert") as alerts:
        for payload in (huge, b'{"unit_id": "A2"}'):
            publish.single(PREFIX + "trigger", payload, qos=1, hostname=broker.host, port=broker.port)
        wait_until(lambda: triggers and alerts.payloads(), 10, "the alert and the valid trigger after it")
    alert = alerts.payloads()[0]
    assert alert["kind"] == "invalid_trigger"
    assert "byte limit" in alert["details"]["reason"]
    assert alert["details"]["payload_bytes"] == len(huge)
    assert len(json.dumps(alert)) < 4096
    assert [t.unit_id for t in triggers] == ["A2"]
    logged = [r.getMessage() for r in caplog.records if "invalid_trigger" in r.getMessage()]
    assert logged and all(len(line) < 4096 for line in logged)
