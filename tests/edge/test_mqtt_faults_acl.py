"""Fault: the broker's ACL refuses the verdict topic. Rows stay, readiness says why, then they go."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from support.mosquitto import Broker
from support.mqtt import DeliveryCounts, Subscriber, add_verdicts, edge_config, wait_until
from support.tls import password_file

from lineguard.edge.mqtt_delivery import MqttDelivery
from lineguard.edge.outbox import Outbox
from lineguard.monitoring.metrics import Metrics

PREFIX = "lineguard/line1/station1/"


@pytest.mark.slow
def test_refused_puback_keeps_verdicts_until_the_acl_allows_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    passwords = password_file(tmp_path / "passwd", {"edge": "edge-Pa55", "ctl": "ctl-Pa55"})
    acl = tmp_path / "acl"
    acl.write_text(
        f"user edge\ntopic readwrite {PREFIX}status\ntopic readwrite {PREFIX}alert\nuser ctl\ntopic read #\n"
    )
    extra = f"allow_anonymous false\npassword_file {passwords}\nacl_file {acl}\n"
    broker = Broker(tmp_path / "broker", extra_conf=extra).start()
    secret = tmp_path / "secret"
    secret.write_text("edge-Pa55")
    outbox = Outbox(tmp_path / "outbox.db")
    cfg = edge_config(broker.port, tmp_path, username="edge", password_file=str(secret))
    delivery = MqttDelivery(cfg, outbox, Metrics())
    sub = Subscriber(
        broker.host, broker.port, PREFIX + "verdict", username="ctl", password="ctl-Pa55"
    ).start()
    caplog.set_level(logging.ERROR, logger="lineguard.edge.mqtt_delivery")

    def refusals() -> int:
        return sum(getattr(r, "event", None) == "verdict_refused" for r in caplog.records)

    delivery.start()
    try:
        sent = add_verdicts(outbox, 10)
        delivery.wake()
        wait_until(lambda: "refuses verdicts" in delivery.readiness()[1], 10, "the refusal")
        assert "Not authorized" in delivery.readiness()[1]
        # A second refused round shows the retry keeps the rows rather than dropping them.
        wait_until(lambda: refusals() >= 2, 10, "a second refused retry round")
        assert outbox.depth() == 10
        assert sub.seqs() == []
        # The plant fixes the ACL; the broker reloads it on SIGHUP and the next retry goes through.
        acl.write_text(f"user edge\ntopic readwrite {PREFIX}#\nuser ctl\ntopic read #\n")
        assert broker._proc is not None
        broker._proc.send_signal(1)
        sub.wait_for_seqs(set(sent), timeout=15)
        wait_until(lambda: outbox.depth() == 0, 10, "the outbox to empty")
    finally:
        delivery.stop()
        sub.stop()
        broker.stop()
        outbox.close()
    counts = DeliveryCounts(sent, sub.seqs())
    print(f"FAULT acl: {counts}")
    assert counts.lost == []
    assert counts.first_seen == sent
    assert 2 <= refusals() <= 4  # one line per retry round, not one per verdict


def test_a_refused_compact_result_keeps_its_verdicts_row_until_both_are_accepted(tmp_path: Path) -> None:
    passwords = password_file(tmp_path / "passwd", {"edge": "edge-Pa55"})
    acl = tmp_path / "acl"
    acl.write_text(f"user edge\ntopic readwrite {PREFIX}verdict\ntopic readwrite {PREFIX}status\n")
    extra = f"allow_anonymous false\npassword_file {passwords}\nacl_file {acl}\n"
    broker = Broker(tmp_path / "broker", extra_conf=extra).start()
    secret = tmp_path / "secret"
    secret.write_text("edge-Pa55")
    outbox = Outbox(tmp_path / "outbox.db")
    cfg = edge_config(broker.port, tmp_path, username="edge", password_file=str(secret), result_topic=True)
    delivery = MqttDelivery(cfg, outbox, Metrics())
    delivery.start()
    try:
        add_verdicts(outbox, 3)
        delivery.wake()
        wait_until(lambda: "refuses verdicts" in delivery.readiness()[1], 10, "the refusal")
        assert PREFIX + "result" in delivery.readiness()[1]
        assert outbox.depth() == 3  # the verdict went through, the result did not: the row stays
        acl.write_text(f"user edge\ntopic readwrite {PREFIX}#\n")
        assert broker._proc is not None
        broker._proc.send_signal(1)
        wait_until(lambda: outbox.depth() == 0, 15, "the outbox to empty")
    finally:
        delivery.stop()
        broker.stop()
        outbox.close()
