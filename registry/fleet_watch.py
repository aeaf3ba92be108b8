"""The registry's eyes on a fleet during a rollout: station status, and the canaries' own signals.

A canary rollout decides from what the stations publish, read over MQTT like any other consumer:
every station's retained ``…/status`` (which model it runs), and only for the stations being
judged (canaries and a few reference stations) their ``…/verdict``, ``…/alert`` and
``…/feedback``. Subscribing to a bounded set keeps the registry's load proportional to the canary
stage, not to the fleet. Everything that arrives is hostile until checked: the topic must name a
``<line>/<station>`` of the station-id pattern, the payload must be under a size cap and validate
against its ``lineguard.messages`` model, and what does not is dropped (counted, never echoed).
Counts are kept per (station, model version), so a verdict decided by the previous model never
counts for the new one.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from pydantic import ValidationError

from lineguard.config import MqttConfig
from lineguard.errors import DeliveryError
from lineguard.messages import MAX_ALERT_BYTES, Alert, Feedback, Reason, StationStatus, Verdict, VerdictKind

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

__all__ = ["MODEL_ALERTS", "FleetWatch", "Tally"]

MAX_VERDICT_BYTES: Final = 128 * 1024  # 300 defects (the engine's cap) make about 40 kB
MAX_STATUS_BYTES: Final = 16 * 1024
MAX_FEEDBACK_BYTES: Final = 16 * 1024
UNITS_REMEMBERED: Final = 10_000  # per station: unit id -> the version that decided it, for feedback
# Alerts that mean "this station could not run (or gave up) the model it was sent".
MODEL_ALERTS: Final = frozenset({"model_refused", "model_rollback", "invalid_model"})
_TOPIC = re.compile(r"lineguard/([A-Za-z0-9_-]+)/([A-Za-z0-9_-]+)/(status|verdict|alert|feedback)")


@dataclass
class Tally:
    """Units one model version decided at one or more stations, by outcome."""

    units: int = 0
    fail: int = 0
    no_decision: int = 0
    deadline: int = 0
    error: int = 0

    def add(self, verdict: Verdict) -> None:
        self.units += 1
        self.fail += verdict.verdict is VerdictKind.FAIL
        nd = verdict.verdict is VerdictKind.NO_DECISION
        self.no_decision += nd
        self.deadline += nd and verdict.reason is Reason.DEADLINE
        self.error += nd and verdict.reason is Reason.ERROR

    def __add__(self, other: Tally) -> Tally:
        return Tally(
            self.units + other.units,
            self.fail + other.fail,
            self.no_decision + other.no_decision,
            self.deadline + other.deadline,
            self.error + other.error,
        )

    def rate(self, count: int) -> float:
        return count / self.units if self.units else 0.0

    @property
    def fail_rate(self) -> float:
        return self.rate(self.fail)

    @property
    def no_decision_rate(self) -> float:
        return self.rate(self.no_decision)

    @property
    def deadline_rate(self) -> float:
        return self.rate(self.deadline)


@dataclass(frozen=True)
class StationAlert:
    station: str
    kind: str
    at: float  # time.time() when it arrived


@dataclass
class _State:
    status: dict[str, StationStatus] = field(default_factory=dict)
    tallies: dict[tuple[str, str], Tally] = field(default_factory=dict)
    escapes: Counter[tuple[str, str]] = field(default_factory=Counter)
    alerts: list[StationAlert] = field(default_factory=list)
    first_seen: dict[tuple[str, str], float] = field(default_factory=dict)
    units: dict[str, OrderedDict[str, tuple[str, bool]]] = field(default_factory=dict)
    dropped: Counter[str] = field(default_factory=Counter)
    messages: Counter[str] = field(default_factory=Counter)
    bytes: Counter[str] = field(default_factory=Counter)


class FleetWatch:
    """Subscribes to the fleet's status and the judged stations' signals for model ``model``.

    ``judged`` are ``LINE/STATION`` names whose verdicts, alerts and feedback are counted; every
    station's status is read. Reader methods return copies, safe to use from another thread.
    """

    def __init__(self, mqtt_cfg: MqttConfig, model: str, judged: Iterable[str] = ()) -> None:
        self.mqtt_cfg = mqtt_cfg
        self.model = model
        self.judged = sorted(set(judged))
        self._lock = threading.Lock()
        self._state = _State()
        self._subscribed = threading.Event()
        self._refused: list[str] = []
        self._client: mqtt.Client | None = None

    # -- connection ----------------------------------------------------------------------------
    @staticmethod
    def _signals(names: Iterable[str]) -> list[tuple[str, int]]:
        return [
            (f"lineguard/{name}/{kind}", 1) for name in names for kind in ("verdict", "alert", "feedback")
        ]

    def _topics(self) -> list[tuple[str, int]]:
        return [("lineguard/+/+/status", 1), *self._signals(self.judged)]

    def judge(self, names: Iterable[str], timeout_s: float = 10.0) -> None:
        """Also count the verdicts, alerts and feedback of ``names`` from now on (kept on reconnect)."""
        new = sorted(set(names) - set(self.judged))
        if not new or self._client is None:
            return
        self.judged = sorted({*self.judged, *new})
        self._subscribed.clear()
        self._client.subscribe(self._signals(new))
        if not self._subscribed.wait(timeout_s) or self._refused:
            raise DeliveryError(
                f"MQTT broker did not let the registry watch {new[0]}'s verdicts: "
                f"{'; '.join(self._refused) or 'no answer'}; check the registry's ACL"
            )

    def settle(self, stations: Iterable[str], timeout_s: float) -> None:
        """Wait until each of ``stations`` has a status (retained ones come at once), or ``timeout_s``."""
        wanted = set(stations)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if wanted <= set(self._state.status):
                    return
            time.sleep(0.05)

    def start(self, timeout_s: float = 10.0) -> FleetWatch:
        """Connect and subscribe; ``DeliveryError`` when the broker cannot be reached or refuses."""
        from lineguard.mqtt_link import make_client, settings_for

        client_id = f"lineguard-registry-watch-{uuid.uuid4().hex[:8]}"
        client = make_client(settings_for(self.mqtt_cfg, client_id), client_id=client_id)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        where = f"{self.mqtt_cfg.host}:{self.mqtt_cfg.port}"
        try:
            client.connect(self.mqtt_cfg.host, self.mqtt_cfg.port, keepalive=self.mqtt_cfg.keepalive_s)
        except OSError as exc:
            raise DeliveryError(f"cannot reach the MQTT broker at {where}: {exc}") from exc
        self._client = client
        client.loop_start()
        if not self._subscribed.wait(timeout_s) or self._refused:
            self.stop()
            raise DeliveryError(
                f"MQTT broker at {where} did not let the registry watch the fleet: "
                f"{'; '.join(self._refused) or 'no answer'}; check the registry's credentials and ACL"
            )
        return self

    def stop(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None

    def _on_connect(
        self, client: mqtt.Client, _u: object, _f: object, reason: Any, _p: object = None
    ) -> None:
        if getattr(reason, "is_failure", False):
            self._refused.append(f"connection refused ({reason})")
            self._subscribed.set()
            return
        client.subscribe(self._topics())

    def _on_subscribe(self, _c: mqtt.Client, _u: object, _mid: int, codes: Any, _p: object = None) -> None:
        failed = [c for c in codes if getattr(c, "is_failure", False)]
        if failed:
            self._refused.append(f"subscription refused ({failed[0]})")
        self._subscribed.set()

    # -- messages ------------------------------------------------------------------------------
    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        match = _TOPIC.fullmatch(msg.topic)
        if match is None:
            return
        line, station, kind = match.groups()
        payload = bytes(msg.payload)
        with self._lock:
            self._state.messages[kind] += 1
            self._state.bytes[kind] += len(payload)
        try:
            if kind == "status":
                self._status(f"{line}/{station}", payload)
            elif kind == "verdict":
                self._verdict(f"{line}/{station}", payload)
            elif kind == "alert":
                self._alert(f"{line}/{station}", payload)
            else:
                self._feedback(f"{line}/{station}", payload)
        except (ValidationError, ValueError):
            with self._lock:
                self._state.dropped[kind] += 1

    def _seen(self, station: str, version: str) -> None:
        self._state.first_seen.setdefault((station, version), time.time())

    def _status(self, station: str, payload: bytes) -> None:
        if not payload or len(payload) > MAX_STATUS_BYTES:
            raise ValueError("status size")
        status = StationStatus.model_validate_json(payload)
        with self._lock:
            self._state.status[station] = status
            if status.state == "online" and status.model is not None and status.model.name == self.model:
                self._seen(station, status.model.version)

    def _verdict(self, station: str, payload: bytes) -> None:
        if len(payload) > MAX_VERDICT_BYTES:
            raise ValueError("verdict size")
        verdict = Verdict.from_json(payload)
        if verdict.model is None or verdict.model.name != self.model:
            return
        version = verdict.model.version
        with self._lock:
            self._seen(station, version)
            self._state.tallies.setdefault((station, version), Tally()).add(verdict)
            units = self._state.units.setdefault(station, OrderedDict())
            units[verdict.unit_id] = (version, verdict.verdict is VerdictKind.PASS)
            if len(units) > UNITS_REMEMBERED:
                units.popitem(last=False)

    def _alert(self, station: str, payload: bytes) -> None:
        if len(payload) > 2 * MAX_ALERT_BYTES:
            raise ValueError("alert size")
        alert = Alert.model_validate_json(payload)
        if alert.level == "ok":
            return
        with self._lock:
            self._state.alerts.append(StationAlert(station, alert.kind, time.time()))

    def _feedback(self, station: str, payload: bytes) -> None:
        if len(payload) > MAX_FEEDBACK_BYTES:
            raise ValueError("feedback size")
        feedback = Feedback.model_validate_json(payload)
        if feedback.outcome != "escape":
            return
        with self._lock:
            decided = self._state.units.get(station, OrderedDict()).get(feedback.unit_id)
            if decided is not None and decided[1]:  # an escape is a unit this station PASSed
                self._state.escapes[(station, decided[0])] += 1

    # -- readers -------------------------------------------------------------------------------
    def running(self) -> dict[str, str | None]:
        """``LINE/STATION`` -> the version of ``model`` its status says it runs (None: offline or another)."""
        with self._lock:
            statuses = dict(self._state.status)
        return {
            name: s.model.version
            if s.state == "online" and s.model is not None and s.model.name == self.model
            else None
            for name, s in sorted(statuses.items())
        }

    def statuses(self) -> dict[str, StationStatus]:
        with self._lock:
            return dict(sorted(self._state.status.items()))

    def took(self, station: str, version: str) -> float | None:
        """When ``station`` was first seen running ``version`` (status or verdict), as ``time.time()``."""
        with self._lock:
            return self._state.first_seen.get((station, version))

    def sightings(self) -> dict[tuple[str, str], float]:
        with self._lock:
            return dict(self._state.first_seen)

    def tally(self, stations: Iterable[str], version: str) -> Tally:
        with self._lock:
            found = [self._state.tallies.get((s, version)) for s in stations]
        return sum((t for t in found if t is not None), Tally())

    def escapes(self, stations: Iterable[str], version: str) -> int:
        with self._lock:
            return sum(self._state.escapes[(s, version)] for s in stations)

    def model_alerts(self, stations: Iterable[str], since: float) -> list[StationAlert]:
        wanted = set(stations)
        with self._lock:
            return [
                a
                for a in self._state.alerts
                if a.station in wanted and a.kind in MODEL_ALERTS and a.at >= since
            ]

    def traffic(self) -> dict[str, dict[str, int]]:
        """Messages and bytes received by kind, and what was dropped as invalid."""
        with self._lock:
            return {
                "messages": dict(self._state.messages),
                "bytes": dict(self._state.bytes),
                "dropped": dict(self._state.dropped),
            }
