"""Fault: the broker stays away until the outbox nears its bound: alert, metric, nothing dropped."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.mosquitto import Broker
from support.mqtt import DeliveryCounts, Subscriber, add_verdicts, edge_config, wait_until

from lineguard.edge.mqtt_delivery import MqttDelivery
from lineguard.edge.outbox import Outbox, OutboxFullError
from lineguard.monitoring.metrics import Metrics

MAX_PENDING = 50  # warn_ratio 0.8 -> alert at 40


@pytest.mark.slow
def test_outbox_near_bound_alerts_once_and_loses_nothing(broker: Broker, tmp_path: Path) -> None:
    prefix = "lineguard/line1/station1/"
    verdicts = Subscriber(broker.host, broker.port, prefix + "verdict").start()
    alerts = Subscriber(broker.host, broker.port, prefix + "alert").start()
    broker.stop()
    outbox = Outbox(tmp_path / "outbox.db", max_pending=MAX_PENDING)
    metrics = Metrics()
    delivery = MqttDelivery(edge_config(broker.port, tmp_path), outbox, metrics)
    delivery.start()

    def sample(name: str, **labels: str) -> float:
        return metrics.registry.get_sample_value(name, labels) or 0.0

    try:
        sent: list[int] = []
        for _ in range(MAX_PENDING):
            sent += add_verdicts(outbox, 1)
            delivery.wake()
        with pytest.raises(OutboxFullError, match="max_pending=50"):
            add_verdicts(outbox, 1)  # refused loudly, never by dropping the oldest
        wait_until(lambda: sample("lineguard_alerts_total", kind="outbox_near_full") == 1, 5, "the alert")
        wait_until(lambda: sample("lineguard_outbox_pending") == MAX_PENDING, 5, "the depth gauge")
        assert outbox.depth() == MAX_PENDING
        broker.start()
        verdicts.wait_for_seqs(set(sent), timeout=30)
        wait_until(lambda: alerts.payloads(), 10, "the alert to reach the broker")
        wait_until(lambda: outbox.depth() == 0, 10, "the outbox to empty")
        wait_until(lambda: sample("lineguard_outbox_pending") == 0, 5, "the depth gauge to fall")
    finally:
        delivery.stop()
        verdicts.stop()
        alerts.stop()
        outbox.close()
    counts = DeliveryCounts(sent, verdicts.seqs())
    print(f"FAULT outbox_bound: {counts} alerts={len(alerts.payloads())}")
    assert counts.lost == []
    assert counts.first_seen == sent
    [alert] = alerts.payloads()
    assert alert["kind"] == "outbox_near_full"
    assert alert["details"]["max_pending"] == MAX_PENDING
    assert alert["details"]["depth"] >= 40
