"""The JSON-lines sink: each verdict once, in seq order, acked only after fsync, even across crashes."""

from __future__ import annotations

import json
from pathlib import Path

from support.mqtt import add_verdicts, wait_until

from lineguard.config import LineguardConfig
from lineguard.edge.delivery import JsonlDelivery
from lineguard.edge.delivery_factory import make_delivery
from lineguard.edge.outbox import Outbox
from lineguard.monitoring.metrics import Metrics


def seqs_in(path: Path) -> list[int]:
    return [json.loads(line)["seq"] for line in path.read_text().splitlines()]


def test_jsonl_writes_each_verdict_once_in_order_and_empties_the_outbox(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    metrics = Metrics()
    sink = JsonlDelivery(tmp_path / "out" / "verdicts.jsonl", box, metrics)
    sink.start()
    try:
        for _ in range(3):
            add_verdicts(box, 40)
            sink.wake()
        wait_until(lambda: box.depth() == 0, 10, "the outbox to drain")
    finally:
        sink.stop()
    assert seqs_in(sink.path) == list(range(1, 121))
    assert box.synced_seq == 120  # the sink fsyncs the outbox too
    assert sink.readiness() == (True, "")
    assert metrics.registry.get_sample_value("lineguard_verdicts_acknowledged_total") == 120


def test_jsonl_after_a_crash_cuts_the_torn_line_and_repeats_nothing(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    add_verdicts(box, 5)
    path = tmp_path / "verdicts.jsonl"
    # The crashed run had written seq 1..3 (not acked) and half of seq 4.
    rows = box.pending()
    path.write_text("".join(r.payload + "\n" for r in rows[:3]) + rows[3].payload[:40])
    sink = JsonlDelivery(path, box, Metrics())
    sink.start()
    try:
        wait_until(lambda: box.depth() == 0, 10, "the outbox to drain")
    finally:
        sink.stop()
    assert seqs_in(path) == [1, 2, 3, 4, 5]


def test_jsonl_unwritable_file_keeps_verdicts_and_says_why(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    blocked = tmp_path / "verdicts.jsonl"
    blocked.mkdir()  # a directory where the file should be
    sink = JsonlDelivery(blocked, box, Metrics())
    sink.start()
    try:
        add_verdicts(box, 4)
        sink.wake()
        wait_until(lambda: not sink.readiness()[0], 10, "the sink to report the failure")
    finally:
        sink.stop()
    assert f"cannot write verdicts to {blocked}" in sink.readiness()[1]
    assert box.depth() == 4


def test_make_delivery_writes_jsonl_into_the_data_dir_without_mqtt(tmp_path: Path) -> None:
    cfg = LineguardConfig.model_validate({"mqtt": {"enabled": False}, "station": {"data_dir": str(tmp_path)}})
    box = Outbox(tmp_path / "o.db")
    sink = make_delivery(cfg, box, Metrics())
    assert isinstance(sink, JsonlDelivery)
    assert sink.path == tmp_path / "verdicts.jsonl"


def test_jsonl_alert_is_counted(tmp_path: Path) -> None:
    metrics = Metrics()
    sink = JsonlDelivery(tmp_path / "v.jsonl", Outbox(tmp_path / "o.db"), metrics)
    sink.publish_alert("camera_down", {"since_s": 5})
    assert metrics.registry.get_sample_value("lineguard_alerts_total", {"kind": "camera_down"}) == 1
