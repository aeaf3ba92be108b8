"""The broker ACL shipped in deploy/ gives each identity exactly the topics the trust model names.

A real Mosquitto runs with ``deploy/mosquitto/acl`` as is; every identity tries to publish on
every kind of topic, and a read-everything monitor shows which messages the broker let through.
Publishing on ``…/model`` decides what a line runs, so only the registry may.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from support.mosquitto import Broker
from support.mqtt import Subscriber, subscribed, wait_until
from support.tls import password_file

ACL = Path(__file__).parents[1] / "deploy" / "mosquitto" / "acl"
USERS = ("station1", "station2", "registry", "controller", "monitor")
KINDS = ("verdict", "result", "status", "alert", "trigger", "feedback", "control", "model", "model/shadow")
FOLLOWED = "lineguard/models/signal/production"  # what stations with registry.follow: signal read

# identity -> the topics of line1's station1 it may publish on.
MAY_PUBLISH = {
    "station1": {"verdict", "result", "status", "alert"},
    "station2": set(),  # another station's credential reaches nothing of station1's
    "registry": {"model", "model/shadow", "followed"},
    "controller": {"trigger", "feedback", "control"},
    "monitor": set(),
}


def _client(port: int, user: str) -> mqtt.Client:
    """A connected MQTT 5 client of ``user``; its QoS 1 publishes wait for the broker's answer."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"{user}-{uuid.uuid4().hex[:6]}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    client.username_pw_set(user, f"{user}-pw")
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


@pytest.fixture(scope="module")
def acl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    work = tmp_path_factory.mktemp("acl-broker")
    passwords = password_file(work / "passwd", {u: f"{u}-pw" for u in USERS})
    extra = f"allow_anonymous false\npassword_file {passwords}\nacl_file {ACL}\n"
    broker = Broker(work / "broker", extra_conf=extra).start()
    yield broker
    broker.stop()


@pytest.mark.parametrize("user", USERS)
def test_each_identity_publishes_only_where_the_trust_model_allows(acl_broker: Broker, user: str) -> None:
    monitor = Subscriber(
        acl_broker.host, acl_broker.port, "lineguard/#", username="monitor", password="monitor-pw"
    ).start()
    publisher = _client(acl_broker.port, user)
    marker = _client(acl_broker.port, "controller")
    tag = uuid.uuid4().hex
    try:
        for kind in KINDS:
            publisher.publish(f"lineguard/line1/station1/{kind}", f"{tag}:{kind}", qos=1).wait_for_publish(5)
        publisher.publish(FOLLOWED, f"{tag}:followed", qos=1).wait_for_publish(5)
        # Mosquitto hands a message to subscribers before it acknowledges it, so once a later
        # marker arrives, nothing the identity sent can still be on its way.
        marker.publish("lineguard/line1/station1/trigger", f"end-{tag}", qos=1).wait_for_publish(5)
        wait_until(lambda: any(p == f"end-{tag}".encode() for _, p, _ in monitor.messages), 10, "the marker")
        arrived = {p.decode().split(":", 1)[1] for _, p, _ in monitor.messages if p.startswith(tag.encode())}
    finally:
        for client in (publisher, marker):
            client.loop_stop()
            client.disconnect()
        monitor.stop()
    assert arrived == MAY_PUBLISH[user]


def test_a_station_reads_only_its_own_commands(acl_broker: Broker) -> None:
    own = Subscriber(
        acl_broker.host,
        acl_broker.port,
        "lineguard/line1/+/trigger",
        username="station1",
        password="station1-pw",
    ).start()
    controller = _client(acl_broker.port, "controller")
    try:
        for station in ("station2", "station1"):  # station1's arrives last: station2's had its chance
            controller.publish(f"lineguard/line1/{station}/trigger", station, qos=1).wait_for_publish(5)
        wait_until(lambda: len(own.messages) >= 1, 10, "station1's trigger")
        seen = [topic for topic, _, _ in own.messages]
    finally:
        controller.loop_stop()
        controller.disconnect()
        own.stop()
    assert seen == ["lineguard/line1/station1/trigger"]


def test_a_station_reads_the_production_model_it_follows_by_configuration(acl_broker: Broker) -> None:
    station = Subscriber(
        acl_broker.host, acl_broker.port, FOLLOWED, username="station2", password="station2-pw"
    ).start()
    registry = _client(acl_broker.port, "registry")
    try:
        registry.publish(FOLLOWED, "v2", qos=1, retain=True).wait_for_publish(5)
        wait_until(lambda: len(station.messages) >= 1, 10, "the followed model")
    finally:
        registry.publish(FOLLOWED, b"", qos=1, retain=True).wait_for_publish(5)  # clear the retained one
        registry.loop_stop()
        registry.disconnect()
        station.stop()
    assert [(t, p) for t, p, _ in station.messages][:1] == [(FOLLOWED, b"v2")]


def test_a_controllers_retained_pause_reaches_its_station_which_answers_on_result(acl_broker: Broker) -> None:
    control = "lineguard/line1/station1/control"
    controller = _client(acl_broker.port, "controller")
    station = _client(acl_broker.port, "station1")
    try:
        controller.publish(control, b'{"inspection": "paused"}', qos=1, retain=True).wait_for_publish(5)
        station.publish(control, b'{"inspection": "running"}', qos=1, retain=True).wait_for_publish(5)
        with (  # a station (re)connecting later still gets the controller's state
            subscribed(
                acl_broker.host, acl_broker.port, control, username="station1", password="station1-pw"
            ) as late,
            subscribed(
                acl_broker.host,
                acl_broker.port,
                "lineguard/line1/station1/result",
                username="controller",
                password="controller-pw",
            ) as results,
        ):
            wait_until(lambda: len(late.messages) >= 1, 10, "the retained control message")
            station.publish("lineguard/line1/station1/result", b"PASS,1,A-1", qos=1).wait_for_publish(5)
            wait_until(lambda: len(results.messages) >= 1, 10, "the compact result")
    finally:
        controller.publish(control, b"", qos=1, retain=True).wait_for_publish(5)
        for client in (controller, station):
            client.loop_stop()
            client.disconnect()
    assert [(p, retained) for _, p, retained in late.messages] == [(b'{"inspection": "paused"}', True)]
    assert [p for _, p, _ in results.messages] == [b"PASS,1,A-1"]


def test_the_registry_reads_what_a_canary_rollout_watches(acl_broker: Broker) -> None:
    """Verdicts and alerts of a station, feedback of a controller: the canary's guard rails."""
    watcher = Subscriber(
        acl_broker.host, acl_broker.port, "lineguard/+/+/+", username="registry", password="registry-pw"
    ).start()
    station = _client(acl_broker.port, "station1")
    controller = _client(acl_broker.port, "controller")
    try:
        for kind in ("verdict", "alert", "status"):
            station.publish(f"lineguard/line1/station1/{kind}", kind, qos=1).wait_for_publish(5)
        controller.publish("lineguard/line1/station1/feedback", "feedback", qos=1).wait_for_publish(5)
        wait_until(lambda: len(watcher.messages) >= 4, 10, "what the registry watches")
        seen = {topic.rsplit("/", 1)[1] for topic, _, _ in watcher.messages}
    finally:
        for client in (station, controller):
            client.loop_stop()
            client.disconnect()
        watcher.stop()
    assert seen == {"verdict", "alert", "status", "feedback"}
