"""Rollout: promotion and rollback publish the retained ``…/model`` message the stations follow."""

from __future__ import annotations

import hashlib
import json
import queue
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from support.contracts import assert_matches_schema
from support.mosquitto import Broker, free_port

from lineguard.config import MqttConfig
from lineguard.edge.control import parse_control
from lineguard.errors import DeliveryError
from lineguard.messages import DesiredModel, sha256_file
from lineguard.registry import Registry, Stage, publish_model


class Subscriber:
    """A plain MQTT client that records (topic, payload, retain) of what it receives."""

    def __init__(self, broker: Broker, topic: str) -> None:
        self.messages: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex[:6]}")
        self.client.on_message = lambda _c, _u, msg: self.messages.put(
            (msg.topic, bytes(msg.payload), bool(msg.retain))
        )
        subscribed = queue.Queue[int]()
        self.client.on_subscribe = lambda *_a: subscribed.put(1)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.client.subscribe(topic, qos=1)
        subscribed.get(timeout=5)

    def take(self, count: int, timeout: float = 5.0) -> list[tuple[str, bytes, bool]]:
        return [self.messages.get(timeout=timeout) for _ in range(count)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _latest(broker: Broker, topic: str) -> DesiredModel:
    """What a station connecting now would receive on ``topic`` (the retained message)."""
    sub = Subscriber(broker, topic)
    try:
        (_, payload, retained), *_ = sub.take(1)
    finally:
        sub.close()
    assert retained
    return parse_control(DesiredModel, payload)


def _mqtt(broker: Broker) -> MqttConfig:
    return MqttConfig(host=broker.host, port=broker.port)


def test_promotion_publishes_retained_model_to_following_stations(
    registry: Registry, models: dict[str, Path], broker: Broker
) -> None:
    registry.add(models["weak"])
    registry.follow("line1", "st1", "signal")
    registry.follow("line1", "st2", "signal")
    registry.follow("line2", "st9", "other")
    early = Subscriber(broker, "lineguard/+/+/model")
    try:
        registry.promote("signal", "1.0.0", Stage.PRODUCTION)
        sent = publish_model(registry, "signal", _mqtt(broker))
        got = early.take(2)
    finally:
        early.close()
    assert sorted(a.topic for a in sent) == [
        "lineguard/line1/st1/model",
        "lineguard/line1/st2/model",
        "lineguard/models/signal/production",  # for stations that follow it by configuration
    ]
    assert sorted(t for t, _, _ in got) == ["lineguard/line1/st1/model", "lineguard/line1/st2/model"]

    late = _latest(broker, "lineguard/line1/st2/model")  # a station that connects afterwards
    assert (late.name, late.version) == ("signal", "1.0.0")
    blob = Path(urlsplit(late.url).path)
    assert late.url.startswith("file://") and sha256_file(blob) == late.sha256
    for _, payload, _ in got:
        assert_matches_schema("model", payload)
    assert registry.history("signal")[-1].action == "rollout"


def test_rollback_publishes_the_previous_production_version(
    registry: Registry, models: dict[str, Path], broker: Broker
) -> None:
    registry.add(models["weak"])
    registry.add(models["good"])
    registry.follow("line1", "st1", "signal")
    registry.promote("signal", "1.0.0", Stage.PRODUCTION)
    registry.promote("signal", "2.0.0", Stage.PRODUCTION, force=True, why="test")
    publish_model(registry, "signal", _mqtt(broker))
    assert _latest(broker, "lineguard/line1/st1/model").version == "2.0.0"

    registry.rollback("signal", why="alarm")
    publish_model(registry, "signal", _mqtt(broker))
    desired = _latest(broker, "lineguard/line1/st1/model")
    assert (desired.version, desired.sha256) == ("1.0.0", registry.get("signal", "1.0.0").sha256)


def test_public_url_points_stations_at_the_artifact_server(
    registry: Registry, models: dict[str, Path], broker: Broker
) -> None:
    mv = registry.add(models["weak"])
    registry.follow("line1", "st1", "signal")
    registry.promote("signal", "1.0.0", Stage.PRODUCTION)
    ann, _ = publish_model(registry, "signal", _mqtt(broker), public_url="http://reg.local:8081/")
    assert json.loads(ann.payload)["url"] == f"http://reg.local:8081/v1/artifacts/{mv.sha256}"


def test_publish_to_an_unreachable_broker_says_so(registry: Registry, models: dict[str, Path]) -> None:
    registry.add(models["weak"])
    registry.follow("line1", "st1", "signal")
    registry.promote("signal", "1.0.0", Stage.PRODUCTION)
    with pytest.raises(
        DeliveryError, match=r"cannot reach the MQTT broker .*rerun 'lineguard registry publish"
    ):
        publish_model(registry, "signal", MqttConfig(port=free_port()), timeout_s=2)


def test_cli_promote_and_rollback_roll_out_to_the_station(
    models: dict[str, Path], broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lineguard.cli import main

    config = tmp_path / "lineguard.yaml"
    config.write_text(
        f"registry:\n  root: {tmp_path / 'reg'}\nmqtt:\n  host: {broker.host}\n  port: {broker.port}\n"
    )
    base = ["registry", "--config", str(config)]
    for key in ("weak", "good"):
        assert main([*base, "add", str(models[key])]) == 0
    assert main([*base, "follow", "line1/st1", "signal"]) == 0
    assert main([*base, "promote", "signal:1.0.0", "--to", "production"]) == 0
    assert (
        main([*base, "promote", "signal:2.0.0", "--to", "production", "--force", "--reason", "hotfix"]) == 0
    )
    assert _latest(broker, "lineguard/line1/st1/model").version == "2.0.0"
    assert main([*base, "rollback", "signal", "--reason", "alarm"]) == 0
    assert "published lineguard/line1/st1/model (retained)" in capsys.readouterr().out
    assert _latest(broker, "lineguard/line1/st1/model").version == "1.0.0"


def test_cli_keygen_and_signed_rollout_verify_at_the_station(
    models: dict[str, Path], broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lineguard.cli import main
    from lineguard.errors import ConfigError
    from lineguard.releases import load_public_keys, verify_release

    keys = tmp_path / "keys"
    assert main(["registry", "keygen", "--out", str(keys)]) == 0
    private, public = keys / "registry-signing.key", keys / "registry-signing.pub"
    assert private.stat().st_mode & 0o777 == 0o600
    assert main(["registry", "keygen", "--out", str(keys)]) != 0  # never overwrites a key
    config = tmp_path / "lineguard.yaml"
    config.write_text(
        f"registry:\n  root: {tmp_path / 'reg'}\n  signing_key: {private}\n"
        f"mqtt:\n  host: {broker.host}\n  port: {broker.port}\n"
    )
    base = ["registry", "--config", str(config)]
    assert main([*base, "add", str(models["weak"])]) == 0
    assert main([*base, "follow", "line1/st1", "signal"]) == 0
    assert main([*base, "promote", "signal:1.0.0", "--to", "production"]) == 0
    assert "signed by" in capsys.readouterr().out
    desired = _latest(broker, "lineguard/line1/st1/model")
    release = verify_release(desired, load_public_keys([public]))
    card = Registry(tmp_path / "reg").card_path("signal", "1.0.0").read_bytes()
    assert (release.stage, release.sha256) == ("production", desired.sha256)
    assert release.card_sha256 == hashlib.sha256(card).hexdigest()
    with pytest.raises(ConfigError, match=r"registry.public_keys: .* cannot be read"):
        load_public_keys([tmp_path / "missing.pub"])
