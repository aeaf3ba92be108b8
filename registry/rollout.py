"""Rollout: tell each station that follows a model which version to run, by a retained MQTT message.

On promotion to production (and on rollback) the registry publishes ``lineguard/<line>/<station>/model``
(QoS 1, retained, schema ``lineguard.model/1``: name, version, sha256, url) for every station that
follows the model in the registry (``lineguard registry follow``), and the same message on
``lineguard/models/<name>/production`` for stations that follow it by configuration
(``registry.follow``), and waits until the broker acknowledged each one; a station that connects
later gets the retained message at once. The URL is either ``file://<root>/blobs/<sha256>`` (one
machine) or ``<public_url>/v1/artifacts/<sha256>`` served by ``lineguard registry serve`` with a
token. The model card sits beside it by the same rule (``…/cards/<name>/<version>.json``),
``lineguard.messages.card_url_for``, which the station applies to find it.

With a signing key (``registry.signing_key``) every published message carries a signed
``Release`` covering the ONNX sha256 and the exact bytes of the card file the registry serves;
stations that pin the registry's public key refuse anything else. Without one the message goes
out unsigned (development only: a production station refuses it).
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lineguard.config import MqttConfig
from lineguard.errors import DeliveryError
from lineguard.messages import MODEL_MESSAGE_SCHEMA, DesiredModel, follow_topic
from lineguard.registry.store import ModelVersion, Registry, StationFollow
from lineguard.releases import Signer

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

__all__ = [
    "MODEL_MESSAGE_SCHEMA",
    "Announcement",
    "artifact_url",
    "desired_payload",
    "publish_model",
    "registry_client",
]


def artifact_url(registry: Registry, sha256: str, public_url: str = "") -> str:
    """Where a station fetches the ONNX blob: the artifact server, or the file on this machine."""
    if public_url:
        return f"{public_url.rstrip('/')}/v1/artifacts/{sha256}"
    return registry.blob_path(sha256).resolve().as_uri()


def desired_payload(
    registry: Registry, mv: ModelVersion, public_url: str = "", signer: Signer | None = None
) -> str:
    """The retained ``…/model`` JSON for ``mv``: the station parses it with the same ``DesiredModel``.

    ``signer`` signs a production release of the card file's bytes as they are served.
    """
    # the URL names files of the local folder (model and variants; fetched from an MLflow back-end)
    registry.model_dir(mv.name, mv.version)
    release, signature = None, None
    if signer is not None:
        release, signature = signer.release(
            name=mv.name,
            version=mv.version,
            stage="production",
            sha256=mv.sha256,
            card=registry.card_path(mv.name, mv.version).read_bytes(),
        )
    return DesiredModel(
        name=mv.name,
        version=mv.version,
        sha256=mv.sha256,
        url=artifact_url(registry, mv.sha256, public_url),
        release=release,
        signature=signature,
    ).to_json()


@dataclass(frozen=True)
class Announcement:
    topic: str
    payload: str


def registry_client(cfg: MqttConfig) -> mqtt.Client:
    """The station's link (same TLS, password rule, protocol) under a client id of our own, so a
    rollout never takes over a station's session."""
    from lineguard.mqtt_link import make_client, settings_for

    client_id = f"lineguard-registry-{uuid.uuid4().hex[:8]}"
    return make_client(settings_for(cfg, client_id), client_id=client_id)


def publish_model(
    registry: Registry,
    name: str,
    mqtt_cfg: MqttConfig,
    *,
    public_url: str = "",
    stations: list[StationFollow] | None = None,
    timeout_s: float = 10.0,
    signer: Signer | None = None,
) -> list[Announcement]:
    """Publish the production version of ``name`` to every following station; wait for the acks.

    ``signer`` (the registry's key) signs the release each station verifies before it swaps.

    Raises ``DeliveryError`` when the broker is unreachable or does not acknowledge in time; the
    registry change itself is already committed, so rerunning the publish is safe (retained).
    """
    mv = registry.production(name)
    if mv is None:
        raise DeliveryError(f"{name} has no production version to roll out")
    targets = registry.stations(name) if stations is None else stations
    topics = [f"lineguard/{st.line}/{st.station}/model" for st in targets]
    if stations is None:  # a full rollout also tells every station that follows ``name`` by config
        topics.append(follow_topic(name))
    if not topics:
        return []
    payload = desired_payload(registry, mv, public_url, signer)
    client = registry_client(mqtt_cfg)
    connected = threading.Event()
    refused: list[str] = []

    def on_connect(_c: mqtt.Client, _u: object, _f: object, reason: object, _p: object = None) -> None:
        if getattr(reason, "is_failure", False):
            refused.append(str(reason))
        connected.set()

    client.on_connect = on_connect
    where = f"{mqtt_cfg.host}:{mqtt_cfg.port}"
    try:
        client.connect(mqtt_cfg.host, mqtt_cfg.port, keepalive=mqtt_cfg.keepalive_s)
    except OSError as exc:
        raise DeliveryError(
            f"cannot reach the MQTT broker at {where}: {exc}; rerun 'lineguard registry publish {name}'"
        ) from exc
    client.loop_start()
    sent: list[Announcement] = []
    try:
        if not connected.wait(timeout_s) or refused:
            raise DeliveryError(
                f"MQTT broker at {where} did not accept the connection: {refused or 'timeout'}"
            )
        for topic in topics:
            info = client.publish(topic, payload, qos=1, retain=True)
            info.wait_for_publish(timeout=timeout_s)
            if not info.is_published():
                raise DeliveryError(f"broker at {where} did not acknowledge {topic} within {timeout_s:.0f} s")
            sent.append(Announcement(topic, payload))
    finally:
        client.disconnect()
        client.loop_stop()
    registry.record(
        name,
        mv.version,
        "rollout",
        why=", ".join(a.topic for a in sent),
        detail={"payload": json.loads(payload)},
    )
    return sent
