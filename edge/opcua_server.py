"""The station's OPC UA server: a mirror of committed verdicts for PLCs, plus a ``Trigger`` method.

The MQTT outbox stays the record; this server only mirrors it. asyncua runs on its own thread
with its own event loop, so the inspection loop never waits for OPC UA: ``publish`` appends the
committed verdict to a bounded queue and wakes that loop (the oldest entries are dropped if the
server is stuck, the record is not affected). A fault in the server (port taken, bad
certificate, an exception while writing) is logged, raised as an ``opcua`` alert and shown in
``/v1/status`` and ``lineguard_opcua_up``; it never stops the station.

Address space, under ``Objects``: one object per station (browse name ``<line>.<station>``, node id
``ns=<namespace>;s=<line>/<station>``), its variables ``…/<Name>`` (``VerdictJson``, ``UnitId``,
``Seq``, ``Verdict``, ``Reason``, ``DecidedAt``, ``PassCount``, ``FailCount``, ``NoDecisionCount``,
``Ready``, ``Status``, ``ModelVersion``) and the method ``Trigger(unit_id) -> (verdict, reason, seq,
verdict_json)``, which goes through the same trigger path as MQTT ``…/trigger`` and ``POST /v1/inspect``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import importlib
import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from lineguard.config import OpcuaConfig
from lineguard.edge.control import Trigger
from lineguard.edge.outbox import OutboxFullError
from lineguard.edge.station import trigger_wait_s
from lineguard.errors import MissingDependencyError
from lineguard.logs import Events
from lineguard.messages import Verdict, VerdictKind, is_unit_id
from lineguard.secrets import read_secret

if TYPE_CHECKING:
    from lineguard.edge.station import Station

__all__ = ["OpcuaServer"]

event = Events("lineguard.edge")

_QUEUE: Final = 256  # verdicts waiting to be mirrored; a stuck server drops the oldest, never blocks
_REFRESH_S: Final = 0.5  # status, model and readiness are refreshed this often
_COUNTS: Final = {"PassCount": "PASS", "FailCount": "FAIL", "NoDecisionCount": "NO_DECISION"}


class OpcuaServer:
    """One station's OPC UA server on its own thread; ``publish`` is safe from any thread."""

    def __init__(self, cfg: OpcuaConfig, station: Station, alert: Callable[[str, dict[str, object]], None]):
        try:
            import asyncua  # noqa: F401
        except ImportError as exc:
            raise MissingDependencyError("asyncua", "opcua") from exc
        quiet = logging.getLogger("asyncua")
        if quiet.level == logging.NOTSET:  # asyncua logs every session and call at INFO
            quiet.setLevel(logging.WARNING)
        self.cfg = cfg
        self._station = station
        self._alert = alert
        # Read now: a missing or empty password file refuses the start in one line.
        self._password = read_secret(cfg.password_file, "opcua.password_file") if cfg.password_file else None
        self._pending: deque[Verdict] = deque(maxlen=_QUEUE)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = threading.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lineguard-opcua", daemon=True)
        self.state = "starting"
        self.detail = ""
        self.endpoint = f"opc.tcp://{cfg.host}:{cfg.port}"

    # -- called from the station's threads ------------------------------------------------
    def start(self, timeout_s: float = 10.0) -> None:
        """Start the server thread and wait until it listens or failed (a failure is not raised)."""
        self._thread.start()
        if not self._started.wait(timeout_s):
            self._fault(f"not listening after {timeout_s:.0f} s")

    def publish(self, verdict: Verdict) -> None:
        """Mirror a committed verdict; returns at once whatever the server is doing."""
        self._pending.append(verdict)
        self._poke()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping.set()
        self._poke()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        if self.state == "running":
            self._set_state("stopped", "")

    def _poke(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is None or wake is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing to mirror to
            loop.call_soon_threadsafe(wake.set)

    def status(self) -> dict[str, Any]:
        """What ``/v1/status`` shows under ``opcua``."""
        return {
            "state": self.state,
            "endpoint": self.endpoint,
            "security": self.cfg.security,
            "detail": self.detail,
        }

    # -- the server's thread ------------------------------------------------------------
    def _set_state(self, state: str, detail: str) -> None:
        self.state, self.detail = state, detail
        self._station.metrics.opcua_up.set(1 if state == "running" else 0)

    def _fault(self, detail: str) -> None:
        if self.state == "failed":
            return
        self._set_state("failed", detail)
        event(logging.ERROR, "opcua_failed", endpoint=self.endpoint, detail=detail)
        self._alert("opcua", {"level": "warning", "detail": detail, "endpoint": self.endpoint})

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except Exception as exc:  # a server fault degrades the station, never stops it
            self._fault(f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
        finally:
            self._started.set()

    async def _serve(self) -> None:
        from asyncua.server.server import Server

        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        users: Any = _UserManager(self.cfg.username, self._password)  # asyncua calls get_user only
        server = Server(user_manager=users)
        await server.init()
        await self._secure(server)
        nodes = await _Nodes.create(server, self.cfg, self._station, self._trigger)
        async with server:
            self._set_state("running", "")
            event(logging.INFO, "opcua_listening", endpoint=self.endpoint, security=self.cfg.security)
            self._started.set()
            while not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), _REFRESH_S)
                self._wake.clear()
                try:
                    await self._mirror(server, nodes)
                except Exception as exc:  # a failed write skips this round; the next verdict tries again
                    event(logging.WARNING, "opcua_write_failed", error=type(exc).__name__)

    async def _secure(self, server: Any) -> None:
        ua = _ua()
        cfg = self.cfg
        station = self._station.cfg.station
        server.set_endpoint(self.endpoint)
        server.set_server_name(f"lineguard {station.line}/{station.station}")
        await server.set_application_uri(f"urn:lineguard:station:{station.line}:{station.station}")
        if cfg.security == "none":
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        else:
            assert cfg.cert_file is not None and cfg.key_file is not None  # the config checks
            await server.load_certificate(str(cfg.cert_file))
            await server.load_private_key(str(cfg.key_file))
            server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
        tokens = [ua.UserNameIdentityToken] if cfg.username else [ua.AnonymousIdentityToken]
        server.set_identity_tokens(tokens)

    async def _mirror(self, server: Any, nodes: _Nodes) -> None:
        while self._pending:
            await nodes.write_verdict(server, self._pending.popleft())
        await nodes.write_station(server, self._station)

    async def _trigger(self, parent: Any, unit_id: Any) -> Any:
        """``Trigger(unit_id)``: the unit's verdict, or a Bad status code (never an exception)."""
        ua = _ua()
        value = getattr(unit_id, "Value", None)
        if not isinstance(value, str) or not is_unit_id(value):
            return ua.StatusCode(ua.StatusCodes.BadInvalidArgument)
        if not self._station.running:
            return ua.StatusCode(ua.StatusCodes.BadInvalidState)
        future: Future[Verdict] = self._station.trigger(Trigger(unit_id=value))
        wait_s = trigger_wait_s(self._station.cfg.camera.watchdog_s)
        try:
            verdict = await asyncio.wait_for(asyncio.wrap_future(future), wait_s)
        except TimeoutError:
            return ua.StatusCode(ua.StatusCodes.BadTimeout)
        except OutboxFullError:
            return ua.StatusCode(ua.StatusCodes.BadResourceUnavailable)
        return [
            ua.Variant(verdict.verdict.value, ua.VariantType.String),
            ua.Variant(verdict.reason.value, ua.VariantType.String),
            ua.Variant(verdict.seq, ua.VariantType.UInt64),
            ua.Variant(verdict.to_json(), ua.VariantType.String),
        ]


def _ua() -> Any:
    """asyncua's ``ua`` module, untyped: its stubs do not export what its servers use."""
    return importlib.import_module("asyncua.ua")


class _UserManager:
    """Username/password from the config's secret file; anonymous when none is configured."""

    def __init__(self, username: str | None, password: str | None) -> None:
        self._username = username
        self._password = password

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None, certificate: Any = None
    ) -> Any:
        from asyncua.crypto.permission_rules import User, UserRole

        if self._username is None or self._password is None:
            return User(role=UserRole.User)
        if username is None or password is None:
            return None
        name_ok = hmac.compare_digest(username.encode(), self._username.encode())
        password_ok = hmac.compare_digest(password.encode(), self._password.encode())
        return User(role=UserRole.User, name=self._username) if name_ok and password_ok else None


class _Nodes:
    """The station's object and variables; values are written straight into the address space."""

    def __init__(self, ids: dict[str, Any]) -> None:
        self.ids = ids

    @classmethod
    async def create(cls, server: Any, cfg: OpcuaConfig, station: Station, trigger: Any) -> _Nodes:
        ua = _ua()
        line, name = station.cfg.station.line, station.cfg.station.station
        where = f"{line}/{name}"
        ns = await server.register_namespace(cfg.namespace)
        # Browse name without '/': clients split browse paths on it.
        obj = await server.nodes.objects.add_object(ua.NodeId(where, ns), f"{ns}:{line}.{name}")
        string, uint64 = ua.VariantType.String, ua.VariantType.UInt64
        initial: dict[str, tuple[Any, Any]] = {
            "VerdictJson": ("", string),
            "UnitId": ("", string),
            "Seq": (0, uint64),
            "Verdict": ("", string),
            "Reason": ("", string),
            "DecidedAt": (datetime(1601, 1, 1), ua.VariantType.DateTime),
            **{name: (0, uint64) for name in _COUNTS},
            "Ready": (False, ua.VariantType.Boolean),
            "Status": ("starting", string),
            "ModelVersion": ("", string),
        }
        ids = {}
        for name, (value, kind) in initial.items():
            node = await obj.add_variable(ua.NodeId(f"{where}/{name}", ns), f"{ns}:{name}", value, kind)
            ids[name] = node.nodeid
        args = [ua.Argument(Name="unit_id", DataType=ua.NodeId(ua.ObjectIds.String), ValueRank=-1)]
        outs = [
            ua.Argument(Name=name, DataType=ua.NodeId(kind), ValueRank=-1)
            for name, kind in (
                ("verdict", ua.ObjectIds.String),
                ("reason", ua.ObjectIds.String),
                ("seq", ua.ObjectIds.UInt64),
                ("verdict_json", ua.ObjectIds.String),
            )
        ]
        await obj.add_method(ua.NodeId(f"{where}/Trigger", ns), f"{ns}:Trigger", trigger, args, outs)
        return cls(ids)

    async def _write(self, server: Any, values: dict[str, tuple[Any, Any]]) -> None:
        ua = _ua()
        for name, (value, kind) in values.items():
            await server.write_attribute_value(self.ids[name], ua.DataValue(ua.Variant(value, kind)))

    async def write_verdict(self, server: Any, verdict: Verdict) -> None:
        ua = _ua()
        string = ua.VariantType.String
        # The JSON last: a client watching it sees the structured fields already in place.
        await self._write(
            server,
            {
                "UnitId": (verdict.unit_id, string),
                "Seq": (verdict.seq, ua.VariantType.UInt64),
                "Verdict": (verdict.verdict.value, string),
                "Reason": (verdict.reason.value, string),
                "DecidedAt": (verdict.decided_at, ua.VariantType.DateTime),
                "VerdictJson": (verdict.to_json(), string),
            },
        )

    async def write_station(self, server: Any, station: Station) -> None:
        ua = _ua()
        counters = station.counters()
        ready, reasons = station.readiness()
        slot = station.slot
        model = "" if slot is None else f"{slot.ref.name}:{slot.ref.version}"
        uint64 = ua.VariantType.UInt64
        values: dict[str, tuple[Any, Any]] = {
            name: (int(counters.get(VerdictKind(kind).value, 0)), uint64) for name, kind in _COUNTS.items()
        }
        values["Ready"] = (ready, ua.VariantType.Boolean)
        values["Status"] = ("ready" if ready else "; ".join(reasons)[:1024], ua.VariantType.String)
        values["ModelVersion"] = (model, ua.VariantType.String)
        await self._write(server, values)
