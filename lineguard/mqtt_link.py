"""How to reach the broker, and why it failed: connection settings, TLS, the client, diagnosis.

Every MQTT connection lineguard opens (the station's delivery, ``doctor``, ``verdicts watch``, the
registry's rollout, the demo) goes through this module, so they share one TLS set-up, one password
rule and one reconnect policy. ``link_settings`` turns the ``mqtt`` config section into what paho
needs, reading the password file and building the TLS context up front, so an unreadable key or
password fails at start-up with its path (``ConfigError``) rather than as a retry loop.
``make_client`` builds the configured paho client. ``diagnose`` runs when paho reports only
"connection failed": it probes the port itself (TCP, then a TLS handshake with the same context)
and returns one sentence for the log and ``/readyz``. Secrets are never part of a message.

paho is the ``edge`` extra: import this module lazily where paho may be missing.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from lineguard.config import LineguardConfig, MqttConfig
from lineguard.errors import ConfigError
from lineguard.secrets import read_secret

__all__ = ["LinkSettings", "diagnose", "link_settings", "make_client", "make_ssl_context", "settings_for"]


@dataclass(frozen=True)
class LinkSettings:
    host: str
    port: int
    protocol: MQTTProtocolVersion
    client_id: str
    keepalive_s: int
    username: str | None
    password: str | None = field(repr=False)
    ssl_context: ssl.SSLContext | None
    reconnect_max_s: float
    session_expiry_s: int

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"


def make_ssl_context(
    ca_file: Path | None, cert_file: Path | None, key_file: Path | None, *, key: str = "mqtt.tls"
) -> ssl.SSLContext:
    """Verify the server (against ``ca_file``, else the system CAs); present a client cert if given.

    The one TLS client set-up: the broker link and the station's model downloads both use it;
    ``key`` names the config key the files come from, so an error says what to fix.
    """
    if (cert_file is None) != (key_file is None):
        raise ConfigError(f"{key} needs both cert_file and key_file for a client certificate, or neither")
    for path in (ca_file, cert_file, key_file):
        if path is not None and not path.is_file():  # ssl's own error does not say which file
            raise ConfigError(f"{key}: file not found: {path}; fix the path")
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
        if cert_file is not None:
            context.load_cert_chain(cert_file, key_file)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"{key}: files cannot be used: {exc}; check they are PEM files") from exc
    return context


def link_settings(cfg: LineguardConfig) -> LinkSettings:
    """The station's link: its ``mqtt`` section, client id ``lineguard-<line>-<station>`` by default."""
    return settings_for(cfg.mqtt, f"lineguard-{cfg.station.line}-{cfg.station.station}")


def settings_for(m: MqttConfig, default_client_id: str) -> LinkSettings:
    """Settings from an ``mqtt`` section; ``default_client_id`` applies when ``mqtt.client_id`` is unset."""
    tls = m.tls
    return LinkSettings(
        host=m.host,
        port=m.port,
        protocol=MQTTProtocolVersion.MQTTv5 if m.protocol == "5" else MQTTProtocolVersion.MQTTv311,
        client_id=m.client_id or default_client_id,
        keepalive_s=m.keepalive_s,
        username=m.username,
        password=None if m.password_file is None else read_secret(m.password_file, "mqtt.password_file"),
        ssl_context=None if tls is None else make_ssl_context(tls.ca_file, tls.cert_file, tls.key_file),
        reconnect_max_s=m.reconnect_max_s,
        session_expiry_s=m.session_expiry_s,
    )


def make_client(
    settings: LinkSettings, *, client_id: str | None = None, persistent: bool = False
) -> mqtt.Client:
    """A paho client with the link's protocol, credentials, TLS context and reconnect back-off.

    ``client_id`` overrides the settings' id (``""`` lets the broker pick one, for one-shot
    probes). ``persistent`` asks an MQTT 3.1.1 broker to keep the session (clean_session=False);
    on MQTT 5 the session is chosen per connect (``clean_start`` plus a session expiry property).
    """
    v5 = settings.protocol is MQTTProtocolVersion.MQTTv5
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=settings.client_id if client_id is None else client_id,
        protocol=settings.protocol,
        clean_session=None if v5 else not persistent,
    )
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    if settings.ssl_context is not None:
        client.tls_set_context(settings.ssl_context)
    cap = max(1, round(settings.reconnect_max_s))  # paho takes whole seconds
    client.reconnect_delay_set(min_delay=1, max_delay=cap)
    return client


def diagnose(settings: LinkSettings, *, connack_missing: bool, timeout_s: float = 2.0) -> str:
    """One sentence on why connecting to the broker fails, found by probing the port."""
    addr = settings.addr
    try:
        sock = socket.create_connection((settings.host, settings.port), timeout=timeout_s)
    except ConnectionRefusedError:
        return f"broker {addr} refused the TCP connection (is the broker running and listening there?)"
    except OSError as exc:
        return f"broker {addr} is unreachable: {exc.strerror or exc}"
    with sock:
        if settings.ssl_context is None:
            if connack_missing and _speaks_tls(sock, settings.host):
                return (
                    f"broker {addr} closed the connection before answering: the port expects TLS "
                    "(set mqtt.tls.ca_file) and plaintext is refused"
                )
            if connack_missing:
                return (
                    f"broker {addr} closed the connection before answering CONNECT "
                    "(wrong port, protocol version or a client id in use?)"
                )
            return f"connecting to broker {addr} failed; retrying"
        try:
            with settings.ssl_context.wrap_socket(sock, server_hostname=settings.host):
                pass
        except ssl.SSLCertVerificationError as exc:
            return (
                f"TLS to broker {addr} failed: certificate verify failed ({exc.verify_message}); "
                "check mqtt.tls.ca_file"
            )
        except ssl.SSLError as exc:
            return f"TLS handshake with broker {addr} failed: {exc.reason or exc} (is it a TLS port?)"
        except OSError as exc:
            return f"TLS handshake with broker {addr} failed: {exc.strerror or exc} (is it a TLS port?)"
    if connack_missing:
        return f"broker {addr} closed the connection before answering CONNECT; check its log"
    return f"connecting to broker {addr} failed; retrying"


def _speaks_tls(sock: socket.socket, host: str) -> bool:
    """True when the peer answers a TLS handshake (we are talking plaintext to a TLS port)."""
    probe = ssl.create_default_context()
    probe.check_hostname = False
    probe.verify_mode = ssl.CERT_NONE
    try:
        with probe.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=True):
            return True
    except (ssl.SSLError, OSError):
        return False
