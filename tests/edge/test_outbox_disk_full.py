"""Disk full on a real (tiny) file system: verdicts keep coming, marked not durable, and nothing
already stored is lost; storing resumes by itself once space is freed; seqs never repeat."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.disk import fill, small_fs
from support.mosquitto import Broker
from support.mqtt import Subscriber, add_verdicts, edge_config, make_verdict, subscribed, wait_until

from lineguard.config import load_config
from lineguard.edge.daemon import EdgeDaemon
from lineguard.edge.delivery_factory import make_delivery
from lineguard.edge.outbox import SEQ_BLOCK, Outbox
from lineguard.messages import Verdict
from lineguard.monitoring import Metrics

PREFIX = "lineguard/line1/station1/"


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_fs(tmp_path / "disk", "1m") as path:
        yield path


def add_one(box: Outbox) -> Verdict:
    return box.add(lambda seq: make_verdict(seq))


def test_a_full_disk_degrades_the_outbox_and_it_recovers_by_itself(disk: Path) -> None:
    box = Outbox(disk / "outbox.sqlite", retry_s=0.05)
    assert add_verdicts(box, 3) == [1, 2, 3]
    filler = fill(disk)
    verdicts = [add_one(box) for _ in range(60)]  # enough to outgrow what the WAL had room for
    degraded = [v for v in verdicts if not v.durable]
    assert degraded, "the disk is full, yet every verdict was stored"
    assert "full" in (box.degraded or "")
    assert [v.seq for v in verdicts] == list(range(4, 64))  # numbering goes on, no repeat
    assert json.loads(box.pending(after_seq=62)[0].payload)["durable"] is False
    assert box.depth() == 63 and box.last_seq == 63
    assert box.ack_many(range(1, 11)) == 10  # acks work while full (hidden until the disk takes them)
    assert [p.seq for p in box.pending(limit=2)] == [11, 12]
    assert box.sync() is False  # still full: the retry fails quietly
    filler.unlink()
    wait_until(lambda: box.sync(), 5.0, "the outbox to store verdicts again")
    assert box.degraded is None
    later = add_one(box)
    assert later.durable and later.seq == 64
    box.close()
    # What was kept in memory while full was stored on recovery: a restart finds it all.
    again = Outbox(disk / "outbox.sqlite")
    assert [p.seq for p in again.pending(limit=100)] == list(range(11, 65))
    assert add_verdicts(again, 1) == [65]
    again.close()


def test_a_station_stopped_while_degraded_never_reuses_a_published_seq(disk: Path) -> None:
    path = disk / "outbox.sqlite"
    box = Outbox(path, retry_s=60)
    add_verdicts(box, 2)
    filler = fill(disk)
    published = [add_one(box) for _ in range(60)]
    assert not published[-1].durable
    box.close()  # the disk is still full: the unacknowledged in-memory verdicts cannot be kept
    filler.unlink()
    box = Outbox(path)
    assert [p.seq for p in box.pending(limit=100)] == [1, 2, *(v.seq for v in published if v.durable)]
    # The seqs handed out while degraded were reserved in the marker: numbering goes on after them.
    assert add_verdicts(box, 1)[0] > published[-1].seq
    assert add_verdicts(box, 1)[0] <= published[-1].seq + SEQ_BLOCK + 1
    box.close()


def test_verdicts_keep_coming_over_mqtt_during_disk_full_with_an_alert(broker: Broker, disk: Path) -> None:
    cfg = edge_config(broker.port, disk)
    box = Outbox(disk / "outbox.sqlite", retry_s=0.2)
    metrics = Metrics()
    delivery = make_delivery(cfg, box, metrics)
    with (
        subscribed("127.0.0.1", broker.port, PREFIX + "verdict") as verdicts,
        subscribed("127.0.0.1", broker.port, PREFIX + "alert") as alerts,
    ):
        delivery.start()
        try:
            sent = add_verdicts(box, 5)
            delivery.wake()
            filler = fill(disk)
            for _ in range(60):
                sent.append(add_one(box).seq)
                delivery.wake()
            verdicts.wait_for_seqs(set(sent), 15.0)

            def kinds() -> list[str]:
                return [str(a["kind"]) for a in alerts.payloads()]

            wait_until(lambda: "outbox_degraded" in kinds(), 10.0, "the outbox_degraded alert")
            assert metrics.outbox_degraded._value.get() == 1
            flags = {p["seq"]: p["durable"] for p in verdicts.payloads()}
            assert flags[1] is True and flags[sent[-1]] is False
            filler.unlink()
            wait_until(lambda: "outbox_recovered" in kinds(), 10.0, "the outbox_recovered alert")
            assert box.degraded is None and metrics.outbox_degraded._value.get() == 0
            after = add_verdicts(box, 5)
            delivery.wake()
            verdicts.wait_for_seqs(set(after), 15.0)
            assert all(p["durable"] for p in verdicts.payloads() if p["seq"] in after)
            seqs = [p["seq"] for p in verdicts.payloads()]
            assert sorted(set(seqs)) == [*sent, *after]  # every verdict, none lost, none renumbered
            by_seq: dict[int, str] = {}
            for p in verdicts.payloads():
                assert by_seq.setdefault(p["seq"], p["unit_id"]) == p["unit_id"]  # a seq never repeats
            alarm = next(a for a in alerts.payloads() if a["kind"] == "outbox_degraded")
            assert alarm["level"] == "alarm" and "durable=false" in alarm["message"]
        finally:
            delivery.stop()
            box.close()


def test_the_daemon_keeps_inspecting_through_a_full_disk(broker: Broker, disk: Path) -> None:
    cfg = load_config(
        None,
        environ={},
        overrides={
            "station": {"line": "line1", "station": "station1", "data_dir": str(disk)},
            "camera": {"kind": "synthetic", "fps": 50, "synthetic_imgsz": 64},
            "mqtt": {"port": broker.port, "reconnect_max_s": 1.0, "status_interval_s": 0.5},
            "outbox": {"retry_s": 0.2},
            "http": {"enabled": False},
            "sampling": {"enabled": False},
        },
    )
    daemon = EdgeDaemon(cfg)
    thread = threading.Thread(target=daemon.run, daemon=True)
    with subscribed("127.0.0.1", broker.port, PREFIX + "#") as sub:
        thread.start()
        try:

            def verdicts() -> list[dict[str, Any]]:
                return [p for t, p in topics(sub) if t.endswith("/verdict")]

            wait_until(lambda: len(verdicts()) >= 5, 20.0, "verdicts before the disk fills")
            filler = fill(disk)
            wait_until(
                lambda: any(not v["durable"] for v in verdicts()), 20.0, "a verdict marked durable=false"
            )
            wait_until(lambda: alert_kinds(sub) >= {"outbox_degraded"}, 10.0, "the outbox_degraded alert")
            wait_until(
                lambda: any(
                    p.get("outbox_durable") is False for t, p in topics(sub) if t.endswith("/status")
                ),
                10.0,
                "a status saying the outbox is not durable",
            )
            assert thread.is_alive()
            filler.unlink()
            wait_until(lambda: "outbox_recovered" in alert_kinds(sub), 10.0, "the outbox_recovered alert")
            last = max(v["seq"] for v in verdicts())
            wait_until(
                lambda: any(v["durable"] and v["seq"] > last for v in verdicts()),
                20.0,
                "durable verdicts again",
            )
            assert thread.is_alive()
        finally:
            daemon.stop()
            thread.join(20)
    seqs: dict[int, str] = {}
    for v in verdicts():
        assert seqs.setdefault(v["seq"], v["unit_id"]) == v["unit_id"]  # a seq is never reused
    assert not thread.is_alive()


def topics(sub: Subscriber) -> list[tuple[str, dict[str, Any]]]:
    return [(t, json.loads(p)) for t, p, _ in list(sub.messages) if p]


def alert_kinds(sub: Subscriber) -> set[str]:
    return {str(p["kind"]) for t, p in topics(sub) if t.endswith("/alert")}
