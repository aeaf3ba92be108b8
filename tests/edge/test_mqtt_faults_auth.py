"""Fault: wrong credentials. The broker refuses, the log and readiness say why, nothing is lost."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from support.mosquitto import Broker
from support.mqtt import add_verdicts, edge_config, wait_until
from support.tls import password_file

from lineguard.edge.mqtt_delivery import MqttDelivery
from lineguard.edge.outbox import Outbox
from lineguard.errors import ConfigError
from lineguard.monitoring.metrics import Metrics

WRONG = "not-the-Pa55word"


@pytest.mark.parametrize("username", ["station1", None], ids=["wrong-password", "anonymous"])
def test_bad_credentials_are_refused_with_a_clear_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, username: str | None
) -> None:
    passwords = password_file(tmp_path / "passwd", {"station1": "right-Pa55word"})
    broker = Broker(tmp_path / "broker", extra_conf=f"allow_anonymous false\npassword_file {passwords}\n")
    broker.start()
    secret = tmp_path / "secret"
    secret.write_text(WRONG)
    mqtt: dict[str, object] = {} if username is None else {"username": username, "password_file": str(secret)}
    outbox = Outbox(tmp_path / "outbox.db")
    delivery = MqttDelivery(edge_config(broker.port, tmp_path, **mqtt), outbox, Metrics())
    caplog.set_level(logging.ERROR, logger="lineguard.edge.mqtt_delivery")
    delivery.start()
    try:
        add_verdicts(outbox, 5)
        delivery.wake()
        wait_until(lambda: "refused the connection" in delivery.readiness()[1], 15, "the refusal")
    finally:
        delivery.stop()
        broker.stop()
    ready, reason = delivery.readiness()
    assert not ready
    assert "Not authorized" in reason or "Bad user name or password" in reason
    assert "mqtt.password_file" in reason
    assert any("refused the connection" in r.getMessage() for r in caplog.records)
    assert WRONG not in caplog.text
    assert outbox.depth() == 5
    outbox.close()


def test_unreadable_password_file_fails_at_construction(tmp_path: Path) -> None:
    cfg = edge_config(1883, tmp_path, username="station1", password_file=str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"mqtt.password_file .*missing cannot be read"):
        MqttDelivery(cfg, Outbox(tmp_path / "outbox.db"), Metrics())
