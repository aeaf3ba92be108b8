"""An alert stays a few kB whatever its raiser passes: on the wire, and in the station's log.

A 1 MB invalid trigger, a file read by mistake or a deep structure must not become a 2 MB alert
or a 1 MB log line (issue #16); the numbers behind an ordinary alert come through unchanged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.mosquitto import Broker
from support.mqtt import running_delivery, subscribed, wait_until

from lineguard.edge.mqtt_delivery import MqttDelivery
from lineguard.messages import MAX_ALERT_BYTES, build_alert

PREFIX = "lineguard/line1/station1/"
HUGE = "A" * 1_000_000


def test_an_ordinary_alert_is_unchanged() -> None:
    detail = {"message": "camera cam0 gives no frames", "source": "cam0", "seconds": 12.5, "n": [1, 2]}
    alert = build_alert("camera_down", detail)
    assert alert.message == "camera cam0 gives no frames"
    assert alert.details == {"source": "cam0", "seconds": 12.5, "n": [1, 2]}


@pytest.mark.parametrize(
    "detail",
    [
        {"reason": HUGE},
        {"message": HUGE, "payload": HUGE},
        {f"key{i}": "x" * 900 for i in range(500)},
        {"nested": [[[[[[HUGE]]]]]], "rows": list(range(100_000))},
        {"control": "\x00" * 1_000_000, "message": "\x01" * 1_000_000, "signal": "\x02" * 10_000},
    ],
    ids=["long-string", "long-message", "many-keys", "deep-and-long", "escaped-chars"],
)
def test_any_detail_gives_an_alert_under_the_bound(detail: dict[str, Any]) -> None:
    alert = build_alert("invalid_trigger", detail, line="line1", station="station1")
    payload = alert.to_json().encode()
    assert len(payload) <= MAX_ALERT_BYTES
    assert "truncated" in payload.decode()
    assert json.loads(payload)["kind"] == "invalid_trigger"


def test_a_long_value_keeps_its_start_and_is_marked() -> None:
    alert = build_alert("invalid_trigger", {"reason": "unit_id: " + HUGE})
    reason = alert.details["reason"]
    assert reason.startswith("unit_id: AAAA") and reason.endswith("[truncated]")
    assert len(reason) <= 1000


@pytest.fixture
def delivery(broker: Broker, tmp_path: Path) -> Iterator[MqttDelivery]:
    handlers = {"on_trigger": lambda _t: None, "on_feedback": lambda _f: None, "on_model": lambda _m: None}
    with running_delivery(broker.port, tmp_path, **handlers) as made:
        yield made


def test_a_huge_alert_is_published_and_logged_bounded(
    broker: Broker, delivery: MqttDelivery, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        subscribed(broker.host, broker.port, PREFIX + "alert") as alerts,
        caplog.at_level(logging.WARNING, logger="lineguard.edge.mqtt_delivery"),
    ):
        delivery.publish_alert("invalid_trigger", {"reason": "bad unit_id", "payload": HUGE})
        wait_until(lambda: alerts.messages, 5, "the alert")
    payload = alerts.messages[0][1]
    assert len(payload) <= MAX_ALERT_BYTES
    assert json.loads(payload)["details"]["reason"] == "bad unit_id"
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("alert ")]
    assert len(logged) == 1 and len(logged[0]) <= MAX_ALERT_BYTES
    assert "bad unit_id" in logged[0] and "[truncated]" in logged[0]
