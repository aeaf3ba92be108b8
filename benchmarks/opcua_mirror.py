"""OPC UA mirror benchmark: a verdict's MQTT arrival vs its OPC UA data-change notification.

A real station runs as its own process (``lineguard edge run``) on the synthetic line, with MQTT
delivery to a real broker and its OPC UA server on a free port. This process plays the line: a
paho subscriber (QoS 1) and an asyncua client subscribed to ``VerdictJson`` at a 1 ms publishing
interval stamp each verdict's arrival on one ``perf_counter`` clock; the figure per verdict is OPC
UA arrival minus MQTT arrival (negative when OPC UA came first: the mirror is updated at commit,
MQTT after the outbox drain). Then ``Trigger(unit_id)`` is called one unit at a time and its
round trip timed; it includes waiting for the next camera frame (the trigger path's contract).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from lineguard.benchmarks.station_process import start_station
from lineguard.errors import DeliveryError
from lineguard.messages import ModelCard
from lineguard.provenance import provenance_markdown

__all__ = ["OpcuaBenchSettings", "run_opcua_benchmark", "write_opcua_report"]

GOAL_P50_MS = 20.0  # issue #21: each verdict within 20 ms p50 of its MQTT publication
NAMESPACE = "urn:lineguard:bench"


@dataclass(frozen=True)
class OpcuaBenchSettings:
    model: Path
    mqtt_host: str
    mqtt_port: int
    opcua_port: int
    units: int = 300
    triggers: int = 50
    fps: float = 20.0
    publishing_interval_ms: float = 1.0


@dataclass
class _Arrivals:
    """Arrival stamps by seq, from the MQTT thread and the OPC UA thread."""

    mqtt: dict[int, float] = field(default_factory=dict)
    opcua: dict[int, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def stamp(self, where: dict[int, float], payload: str | bytes | bytearray) -> None:
        now = time.perf_counter()
        seq = int(json.loads(payload)["seq"])
        with self.lock:
            where.setdefault(seq, now)


def _percentiles(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    p50, p90, p99 = np.percentile(np.asarray(values), (50, 90, 99))
    return {"n": len(values), "p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99)}


def _model_label(model: Path) -> str:
    card = ModelCard.load(model.parent / "model_card.json")
    return f"{card.name}:{card.version} ({card.input_size} px)"


def _station_config(settings: OpcuaBenchSettings, workdir: Path, station: str) -> Path:
    cfg = {
        "station": {"line": "bench", "station": station, "data_dir": str(workdir / "var")},
        "camera": {"kind": "synthetic", "fps": settings.fps, "synthetic_imgsz": 160},
        "model": {"path": str(settings.model), "threads": 1},
        "mqtt": {"host": settings.mqtt_host, "port": settings.mqtt_port, "session_expiry_s": 0},
        "http": {"enabled": False},
        "sampling": {"enabled": False},
        "frame_store": {"enabled": False},
        "opcua": {"enabled": True, "port": settings.opcua_port, "namespace": NAMESPACE},
    }
    path = workdir / "station.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class _OpcuaClient:
    """An asyncua client on its own thread: a VerdictJson subscription and ``Trigger`` calls."""

    def __init__(self, url: str, station: str, arrivals: _Arrivals, interval_ms: float) -> None:
        self.url, self.where, self.arrivals, self.interval_ms = url, f"bench/{station}", arrivals, interval_ms
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.client: Any = None
        self.idx = 0
        self.revised_ms: float | None = None

    def call(self, coro: Any, timeout_s: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    async def _connect(self, deadline: float) -> None:
        from asyncua.client.client import Client

        while True:
            client = Client(self.url, timeout=5)
            try:
                await client.connect()
            except (OSError, TimeoutError):
                if time.monotonic() > deadline:
                    raise DeliveryError(f"the station's OPC UA server at {self.url} did not answer") from None
                await asyncio.sleep(0.2)
                continue
            self.client = client
            self.idx = await client.get_namespace_index(NAMESPACE)
            return

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        if val:
            self.arrivals.stamp(self.arrivals.opcua, val)

    async def _subscribe(self) -> None:
        ua: Any = importlib.import_module("asyncua.ua")
        sub = await self.client.create_subscription(self.interval_ms, self)
        self.revised_ms = float(getattr(sub.parameters, "RequestedPublishingInterval", self.interval_ms))
        node = self.client.get_node(ua.NodeId(f"{self.where}/VerdictJson", self.idx))
        await sub.subscribe_data_change(node, sampling_interval=0)

    async def _trigger(self, unit_id: str) -> float:
        ua: Any = importlib.import_module("asyncua.ua")
        station = self.client.get_node(ua.NodeId(self.where, self.idx))
        start = time.perf_counter()
        out = await station.call_method(ua.NodeId(f"{self.where}/Trigger", self.idx), unit_id)
        took = (time.perf_counter() - start) * 1e3
        if json.loads(out[3])["unit_id"] != unit_id:
            raise DeliveryError(f"Trigger({unit_id}) answered another unit's verdict")
        return took

    def start(self, timeout_s: float) -> None:
        self.call(self._connect(time.monotonic() + timeout_s), timeout_s + 10)
        self.call(self._subscribe())

    def trigger(self, unit_id: str) -> float:
        result: float = self.call(self._trigger(unit_id))
        return result

    def close(self) -> None:
        if self.client is not None:
            self.call(self.client.disconnect())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def _subscriber(settings: OpcuaBenchSettings, topic: str, arrivals: _Arrivals) -> mqtt.Client:
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    subscribed = threading.Event()
    sub.on_connect = lambda client, *_: client.subscribe(topic, qos=1)
    sub.on_subscribe = lambda *_: subscribed.set()
    sub.on_message = lambda _c, _u, msg: arrivals.stamp(arrivals.mqtt, msg.payload)
    sub.connect(settings.mqtt_host, settings.mqtt_port)
    sub.loop_start()
    if not subscribed.wait(10):
        raise DeliveryError(f"no SUBACK from the MQTT broker at {settings.mqtt_host}:{settings.mqtt_port}")
    return sub


def run_opcua_benchmark(
    settings: OpcuaBenchSettings, workdir: Path, say: Callable[[str], None]
) -> dict[str, Any]:
    """Start a station, pair MQTT and OPC UA arrivals for ``units`` verdicts, time ``triggers`` calls."""
    station = f"opcua-{uuid.uuid4().hex[:8]}"
    config = _station_config(settings, workdir, station)
    arrivals = _Arrivals()
    sub = _subscriber(settings, f"lineguard/bench/{station}/verdict", arrivals)
    proc = start_station(config, workdir / "station.log")
    client = _OpcuaClient(f"opc.tcp://127.0.0.1:{settings.opcua_port}", station, arrivals, 1.0)
    try:
        say(f"station {station} starting; waiting for its OPC UA server ...")
        client.start(timeout_s=120)
        time.sleep(0.5)
        first = max(arrivals.opcua, default=0)  # a subscription's first notification: a value from before
        say(f"watching {settings.units} verdicts at {settings.fps:g} units/s ...")
        deadline = time.monotonic() + settings.units / settings.fps * 3 + 30
        while time.monotonic() < deadline:
            with arrivals.lock:
                paired = [s for s in arrivals.opcua if s > first and s in arrivals.mqtt]
            if len(paired) >= settings.units:
                break
            time.sleep(0.1)
        with arrivals.lock:
            seqs = sorted(s for s in arrivals.mqtt if s > first)[: settings.units]
            delays = [(arrivals.opcua[s] - arrivals.mqtt[s]) * 1e3 for s in seqs if s in arrivals.opcua]
        missed = len(seqs) - len(delays)
        say(f"timing {settings.triggers} Trigger calls ...")
        trips = [client.trigger(f"bench-trigger-{i}") for i in range(settings.triggers)]
    finally:
        client.close()
        proc.terminate()
        proc.wait(30)
        sub.disconnect()
        sub.loop_stop()
    mirror = _percentiles(delays)
    spread = _percentiles([abs(d) for d in delays])
    mirror["abs_p50_ms"], mirror["abs_p99_ms"] = spread.get("p50_ms"), spread.get("p99_ms")
    mirror["opcua_missed"] = missed
    mirror["opcua_first_share"] = round(sum(d < 0 for d in delays) / len(delays), 4) if delays else None
    return {
        "settings": {
            "units": settings.units,
            "triggers": settings.triggers,
            "fps": settings.fps,
            "publishing_interval_ms": settings.publishing_interval_ms,
            "model": _model_label(settings.model),
            "broker": f"{settings.mqtt_host}:{settings.mqtt_port}",
        },
        "mirror_delay": mirror,
        "trigger_round_trip": _percentiles(trips),
        "goal_p50_ms": GOAL_P50_MS,
        "goal_met": bool(delays) and float(spread["p50_ms"]) <= GOAL_P50_MS,
    }


def _row(name: str, stats: dict[str, Any]) -> str:
    if not stats.get("n"):
        return f"| {name} | 0 | – | – | – |"
    return (
        f"| {name} | {stats['n']} | {stats['p50_ms']:.2f} | {stats['p90_ms']:.2f} | {stats['p99_ms']:.2f} |"
    )


def write_opcua_report(report: dict[str, Any], out_dir: Path, name: str) -> dict[str, Path]:
    """``NAME.json`` and ``NAME.md`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"{name}.json", "markdown": out_dir / f"{name}.md"}
    paths["json"].write_text(json.dumps(report, indent=2) + "\n")
    s, mirror = report["settings"], report["mirror_delay"]
    lines = [
        "# OPC UA mirror: verdict on MQTT vs OPC UA data change, and Trigger round trip",
        "",
        *provenance_markdown(report["provenance"]),
        f"A station process on the synthetic line at {s['fps']:g} units/s (model `{s['model']}`), MQTT "
        f"via {s['broker']}, its OPC UA server on 127.0.0.1 (NoSecurity); one client process holding a "
        f"QoS 1 MQTT subscriber and an asyncua subscription at a {s['publishing_interval_ms']:g} ms "
        "publishing interval. Delay = OPC UA notification minus MQTT arrival for the same verdict "
        "(negative: OPC UA first).",
        "",
        "| measure | n | p50 ms | p90 ms | p99 ms |",
        "|---|---|---|---|---|",
        _row("OPC UA notification after MQTT arrival", mirror),
        _row("Trigger(unit_id) round trip (waits for the next frame)", report["trigger_round_trip"]),
        "",
        f"|delay| p50 {mirror.get('abs_p50_ms') or 0:.2f} ms, p99 {mirror.get('abs_p99_ms') or 0:.2f} ms; "
        f"OPC UA first for {100 * (mirror.get('opcua_first_share') or 0):.0f}% of verdicts; "
        f"{mirror.get('opcua_missed', 0)} verdicts seen on MQTT but not on OPC UA. "
        f"Goal |delay| ≤ {report['goal_p50_ms']:g} ms p50: {'met' if report['goal_met'] else 'NOT met'}.",
        "",
    ]
    paths["markdown"].write_text("\n".join(lines))
    return paths
