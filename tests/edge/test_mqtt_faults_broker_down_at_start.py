"""Fault: the broker is down when the station starts; verdicts queue and go out when it is up."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from support.mosquitto import Broker
from support.mqtt import DeliveryCounts, Subscriber, add_verdicts, edge_config, wait_until

from lineguard.edge.mqtt_delivery import MqttDelivery
from lineguard.edge.outbox import Outbox
from lineguard.monitoring.metrics import Metrics


@pytest.mark.slow
def test_verdicts_queue_while_broker_down_at_startup(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The controller's persistent session exists before the outage, as on a running line.
    sub = Subscriber(broker.host, broker.port, "lineguard/line1/station1/verdict").start()
    broker.stop()
    outbox = Outbox(tmp_path / "outbox.db")
    metrics = Metrics()
    delivery = MqttDelivery(edge_config(broker.port, tmp_path), outbox, metrics)
    caplog.set_level(logging.ERROR, logger="lineguard.edge.mqtt_delivery")
    delivery.start()
    try:
        sent = add_verdicts(outbox, 60)
        delivery.wake()
        wait_until(lambda: "refused" in delivery.readiness()[1], 10, "a readiness reason")
        ready, reason = delivery.readiness()
        assert not ready
        assert f"127.0.0.1:{broker.port}" in reason
        assert outbox.depth() == 60
        wait_until(
            lambda: metrics.registry.get_sample_value("lineguard_outbox_pending") == 60, 5, "the outbox gauge"
        )
        broker.start()
        sub.wait_for_seqs(set(sent), timeout=30)
        wait_until(lambda: outbox.depth() == 0, 10, "the outbox to empty")
        assert delivery.readiness() == (True, "")
    finally:
        delivery.stop()
        sub.stop()
        outbox.close()
    counts = DeliveryCounts(sent, sub.seqs())
    print(f"FAULT broker_down_at_start: {counts}")
    assert counts.lost == []
    assert counts.first_seen == sent
    assert any("refused the TCP connection" in r.getMessage() for r in caplog.records)
