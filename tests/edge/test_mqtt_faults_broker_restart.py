"""Fault: the broker stops at unit 100 of 500 and comes back 5 s later; nothing is lost.

The broker is frozen (SIGSTOP) a few units before it stops, so verdicts are on the wire without a
PUBACK when it goes: they must be replayed with the same seq once it is back.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from support.mosquitto import Broker
from support.mqtt import DeliveryCounts, Subscriber, add_verdicts, edge_config, wait_until

from lineguard.edge.mqtt_delivery import MqttDelivery
from lineguard.edge.outbox import Outbox
from lineguard.monitoring.metrics import Metrics

UNITS, FREEZE_AT, STOP_AT, DOWN_S = 500, 90, 100, 5.0


@pytest.mark.slow
def test_verdicts_replayed_in_order_after_broker_restart(broker: Broker, tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    metrics = Metrics()
    delivery = MqttDelivery(edge_config(broker.port, tmp_path), outbox, metrics)
    sub = Subscriber(broker.host, broker.port, "lineguard/line1/station1/verdict").start()
    delivery.start()
    sent: list[int] = []
    down_reason = ""
    try:
        wait_until(lambda: delivery.readiness()[0], 10, "the delivery to connect")
        stopped_at = 0.0
        for unit in range(UNITS):
            if unit == FREEZE_AT and broker._proc is not None:
                os.kill(broker._proc.pid, signal.SIGSTOP)  # PUBACKs stop; publishes pile up in flight
            if unit == STOP_AT and broker._proc is not None:
                os.kill(broker._proc.pid, signal.SIGTERM)
                os.kill(broker._proc.pid, signal.SIGCONT)  # it exits (saving its sessions) unread
                broker.stop()
                stopped_at = time.monotonic()
            if stopped_at and not broker.running and time.monotonic() - stopped_at >= DOWN_S:
                down_reason = delivery.readiness()[1]
                broker.start()
            sent += add_verdicts(outbox, 1)
            delivery.wake()
            time.sleep(0.015)  # ~65 units/s: the outage spans about 330 units
        if not broker.running:
            down_reason = delivery.readiness()[1]
            broker.start()
        sub.wait_for_seqs(set(sent), timeout=30)
        wait_until(lambda: outbox.depth() == 0, 10, "the outbox to empty")
    finally:
        delivery.stop()
        sub.stop()
        outbox.close()
    counts = DeliveryCounts(sent, sub.seqs())
    replayed = metrics.registry.get_sample_value("lineguard_verdicts_replayed_total")
    print(f"FAULT broker_restart: {counts} replayed={replayed}")
    assert counts.lost == []
    assert counts.first_seen == sorted(sent) == list(range(1, UNITS + 1))
    assert "refused the TCP connection" in down_reason
    assert replayed is not None and replayed > 0  # the cut verdicts went again, same seq
