"""``lineguard verdicts watch``: print a station's live verdicts, each ``(station, seq)`` once.

The tool a line controller's engineer (and a test) uses to see what the edge publishes. It
subscribes at QoS 1 to ``lineguard/<line>/<station>/verdict``; with ``--client-id`` the broker
keeps a persistent session, so verdicts published while the watcher was away arrive on the next
run. Delivery is at least once, so the watcher drops repeats by ``(station, seq)`` as every
consumer must. paho is imported inside the command so ``lineguard --help`` stays light.
"""

from __future__ import annotations

import json
import queue
import time
import uuid
from pathlib import Path
from typing import Any

import click

from lineguard.errors import DeliveryError

__all__ = ["VerdictDeduper", "format_verdict", "verdicts"]

_SESSION_EXPIRY_S = 86_400


class VerdictDeduper:
    """Remembers which ``(station, seq)`` were seen; memory stays bounded on a long watch."""

    def __init__(self, keep: int = 10_000) -> None:
        self.keep = keep
        self._seen: dict[str, set[int]] = {}
        self._top: dict[str, int] = {}
        self.duplicates = 0

    def first_time(self, station: str, seq: int) -> bool:
        seen = self._seen.setdefault(station, set())
        top = self._top.get(station, 0)
        if seq in seen or seq <= top - self.keep:  # far below the newest: a very late repeat
            self.duplicates += 1
            return False
        seen.add(seq)
        if seq > top:
            self._top[station] = seq
            if len(seen) > 2 * self.keep:
                floor = seq - self.keep
                self._seen[station] = {s for s in seen if s > floor}
        return True


def format_verdict(verdict: dict[str, Any]) -> str:
    """``seq unit_id verdict reason latency`` on one line."""
    return (
        f"{verdict['seq']:>8}  {verdict['unit_id']:<16} {verdict['verdict']:<11} "
        f"{verdict['reason']:<13} {float(verdict['latency_ms']):8.1f} ms"
    )


@click.group()
def verdicts() -> None:
    """Watch the verdicts stations publish on MQTT."""


@verdicts.command()
@click.option("--station", required=True, help="Station id (topic level).")
@click.option("--line", default="+", show_default=True, help="Line id; + means any line.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=1883, show_default=True)
@click.option("--count", type=click.IntRange(min=1), default=None, help="Exit after this many verdicts.")
@click.option("--json", "as_json", is_flag=True, help="Print each verdict's JSON instead of a summary.")
@click.option(
    "--client-id",
    default=None,
    help="Persistent session under this id: verdicts sent while away arrive on the next watch.",
)
@click.option("--username", default=None)
@click.option("--password-file", type=click.Path(path_type=Path, dir_okay=False), default=None)
@click.option("--ca-file", type=click.Path(path_type=Path, dir_okay=False), default=None, help="Use TLS.")
@click.option(
    "--timeout", type=click.FloatRange(min=0, min_open=True), default=None, help="Give up after S s."
)
def watch(
    station: str,
    line: str,
    host: str,
    port: int,
    count: int | None,
    as_json: bool,
    client_id: str | None,
    username: str | None,
    password_file: Path | None,
    ca_file: Path | None,
    timeout: float | None,
) -> None:
    """Print live verdicts of STATION: seq, unit id, verdict, reason, latency."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import MQTTProtocolVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from lineguard.mqtt_link import LinkSettings, make_client, make_ssl_context
    from lineguard.secrets import read_secret

    topic = f"lineguard/{line}/{station}/verdict"
    inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
    password = None
    if username is not None and password_file is not None:
        password = read_secret(password_file, "--password-file")
    link = LinkSettings(
        host=host,
        port=port,
        protocol=MQTTProtocolVersion.MQTTv5,
        client_id=client_id or f"lineguard-watch-{uuid.uuid4().hex[:8]}",
        keepalive_s=60,
        username=username,
        password=password,
        ssl_context=None if ca_file is None else make_ssl_context(ca_file, None, None),
        reconnect_max_s=10,
        session_expiry_s=_SESSION_EXPIRY_S if client_id else 0,
    )
    client = make_client(link)

    def on_connect(c: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            inbox.put(("refused", str(rc)))
        else:
            c.subscribe(topic, qos=1)

    client.on_connect = on_connect
    client.on_message = lambda c, u, msg: inbox.put(("message", bytes(msg.payload)))
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = link.session_expiry_s
    try:
        client.connect(host, port, clean_start=client_id is None, properties=props)
    except OSError as exc:
        raise DeliveryError(
            f"cannot reach broker {host}:{port}: {exc.strerror or exc}; check --host/--port and that it runs"
        ) from exc
    client.loop_start()
    dedup = VerdictDeduper()
    shown = 0
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while count is None or shown < count:
            wait = 0.5 if deadline is None else deadline - time.monotonic()
            if wait <= 0:
                raise DeliveryError(
                    f"received {shown} of {count or 'any'} verdicts on {topic} within {timeout} s"
                )
            try:
                kind, value = inbox.get(timeout=min(wait, 0.5))
            except queue.Empty:
                continue
            if kind == "refused":
                raise DeliveryError(f"broker {host}:{port} refused the connection: {value}; check --username")
            shown += _show(value, dedup, as_json)
    except KeyboardInterrupt:
        pass
    finally:
        client.disconnect()
        client.loop_stop()


def _show(payload: bytes, dedup: VerdictDeduper, as_json: bool) -> int:
    try:
        verdict = json.loads(payload)
        station, seq = str(verdict["station"]), int(verdict["seq"])
    except (ValueError, KeyError, TypeError) as exc:
        click.echo(f"warning: skipped a message that is not a verdict ({exc})", err=True)
        return 0
    if not dedup.first_time(station, seq):
        return 0
    click.echo(json.dumps(verdict, separators=(",", ":")) if as_json else format_verdict(verdict))
    return 1
