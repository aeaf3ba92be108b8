"""What the outbox costs: verdict latency through Outbox + MqttDelivery vs a bare paho publish.

Starts a private Mosquitto on a free port and one subscriber, then alternates, unit by unit, a
bare QoS 1 ``publish`` of a verdict-sized payload and the product path (``Outbox.add`` committed
to SQLite, ``wake()``, the drain thread's publish), so both see the same machine noise. Latency is
call-to-receipt at the subscriber, on one clock. Also prints what the inspection loop itself pays
per unit (the ``add`` + ``wake`` call vs the ``publish`` call) and ``Outbox.add`` alone with and
without fsync. Figures, not assertions::

    python -m lineguard.benchmarks.mqtt_delivery [--units 2000] [--interval-ms 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from lineguard.config import LineguardConfig
from lineguard.edge.mqtt_delivery import MqttDelivery
from lineguard.edge.outbox import Outbox
from lineguard.messages import Reason, Verdict, VerdictKind, utc_now
from lineguard.monitoring.metrics import Metrics
from lineguard.provenance import ALLOW_DIRTY_HELP, provenance, provenance_markdown

__all__ = ["main", "run_mosquitto"]

VERDICT_TOPIC = "lineguard/line1/station1/verdict"
BARE_TOPIC = "bench/bare"


def _verdict(seq: int) -> Verdict:
    now = utc_now()
    return Verdict(
        seq=seq,
        unit_id=f"u{seq:06d}",
        line="line1",
        station="station1",
        verdict=VerdictKind.PASS,
        reason=Reason.NO_DEFECT,
        model=None,
        thresholds="bench",
        captured_at=now - timedelta(milliseconds=20),
        decided_at=now,
        latency_ms=20.0,
    )


@contextmanager
def run_mosquitto(workdir: Path) -> Iterator[int]:
    """A Mosquitto of our own on a free loopback port (anonymous), stopped when the block ends."""
    if shutil.which("mosquitto") is None:
        raise SystemExit("mosquitto is not installed: apt-get install -y mosquitto")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"user root\nlistener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\n"
    )
    proc = subprocess.Popen(
        ["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


class _Receiver:
    def __init__(self, port: int) -> None:
        self.arrived: dict[tuple[str, int], float] = {}
        self._ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        self.client.on_connect = lambda c, *a: c.subscribe([(VERDICT_TOPIC, 1), (BARE_TOPIC, 1)])
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self._ready.wait(10)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        seq = int(json.loads(msg.payload)["seq"])
        self.arrived[(msg.topic, seq)] = now

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _pct(values: list[float]) -> str:
    a = np.asarray(values) * 1e3
    p50, p90, p99 = np.percentile(a, (50, 90, 99))
    return f"p50 {p50:7.3f}  p90 {p90:7.3f}  p99 {p99:7.3f}  max {a.max():7.3f} ms"


def _side_by_side(port: int, workdir: Path, units: int, interval_s: float, durable: bool) -> dict[str, float]:
    receiver = _Receiver(port)
    bare = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="bench-bare", protocol=MQTTProtocolVersion.MQTTv5
    )
    bare.connect("127.0.0.1", port)
    bare.loop_start()
    outbox = Outbox(workdir / f"outbox-{durable}.db", durable=durable)
    cfg = LineguardConfig.model_validate({"mqtt": {"port": port, "client_id": f"bench-{durable}"}})
    delivery = MqttDelivery(cfg, outbox, Metrics())
    delivery.start()
    while not delivery.readiness()[0]:
        time.sleep(0.01)
    warmup = 200
    sent_bare: dict[int, float] = {}
    sent_box: dict[int, float] = {}
    call_bare: list[float] = []
    call_box: list[float] = []
    for i in range(1, warmup + units + 1):
        payload = _verdict(i).to_json()
        t0 = time.perf_counter()
        bare.publish(BARE_TOPIC, payload, qos=1)
        t1 = time.perf_counter()
        seq = outbox.add(_verdict).seq
        delivery.wake()
        t2 = time.perf_counter()
        if i > warmup:
            sent_bare[i], sent_box[seq] = t0, t1
            call_bare.append(t1 - t0)
            call_box.append(t2 - t1)
        time.sleep(interval_s)
    deadline = time.monotonic() + 30
    while len(receiver.arrived) < 2 * (warmup + units) and time.monotonic() < deadline:
        time.sleep(0.05)
    delivery.stop()
    bare.disconnect()
    bare.loop_stop()
    receiver.stop()
    outbox.close()
    lat_bare = [
        receiver.arrived[(BARE_TOPIC, i)] - t
        for i, t in sent_bare.items()
        if (BARE_TOPIC, i) in receiver.arrived
    ]
    lat_box = [
        receiver.arrived[(VERDICT_TOPIC, s)] - t
        for s, t in sent_box.items()
        if (VERDICT_TOPIC, s) in receiver.arrived
    ]
    label = "fsync" if durable else "no fsync"
    print(f"\n== {units} units, one every {interval_s * 1e3:.1f} ms, outbox {label} ==")
    print(f"bare publish -> received      {_pct(lat_bare)}   (n={len(lat_bare)})")
    print(f"outbox path  -> received      {_pct(lat_box)}   (n={len(lat_box)})")
    print(f"inspection loop pays: publish() {_pct(call_bare)}")
    print(f"inspection loop pays: add+wake  {_pct(call_box)}")
    p99_bare, p99_box = float(np.percentile(lat_bare, 99)), float(np.percentile(lat_box, 99))
    p50_bare, p50_box = float(np.percentile(lat_bare, 50)), float(np.percentile(lat_box, 50))
    print(
        f"added latency: p50 {1e3 * (p50_box - p50_bare):+.3f} ms, p99 {1e3 * (p99_box - p99_bare):+.3f} ms; "
        f"lost: bare {units - len(lat_bare)}, outbox {units - len(lat_box)}"
    )
    return {"p99_added_ms": 1e3 * (p99_box - p99_bare)}


def _add_cost(workdir: Path, n: int) -> None:
    print(f"\n== Outbox.add alone, {n} verdicts ==")
    for durable in (True, False):
        box = Outbox(workdir / f"add-{durable}.db", durable=durable)
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            box.add(_verdict)
            times.append(time.perf_counter() - t0)
        box.close()
        print(f"durable={durable!s:<5}  {_pct(times)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=2000)
    parser.add_argument("--interval-ms", type=float, default=5.0)
    parser.add_argument("--allow-dirty", action="store_true", help=ALLOW_DIRTY_HELP)
    args = parser.parse_args(argv)
    print("\n".join(provenance_markdown(provenance(allow_dirty=args.allow_dirty))))
    with tempfile.TemporaryDirectory(prefix="lineguard-bench-") as tmp:
        workdir = Path(tmp)
        _add_cost(workdir, args.units)
        with run_mosquitto(workdir) as port:
            for durable in (True, False):
                _side_by_side(port, workdir, args.units, args.interval_ms / 1e3, durable)


if __name__ == "__main__":
    main()
