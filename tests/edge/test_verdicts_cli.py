"""``lineguard verdicts watch`` against a real broker: live lines, dedup by (station, seq), --count."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import paho.mqtt.publish as publish
import pytest
from click.testing import CliRunner
from support.mosquitto import Broker, free_port
from support.mqtt import make_verdict

from lineguard.edge.verdicts_cli import VerdictDeduper, verdicts
from lineguard.errors import DeliveryError


@contextmanager
def repeating_publisher(broker: Broker, seqs: list[int], station: str = "station1") -> Iterator[None]:
    """Publish the same verdicts over and over (as replays would) until the block ends."""
    stop = threading.Event()
    msgs = [
        {
            "topic": f"lineguard/line1/{station}/verdict",
            "payload": make_verdict(s, station=station).to_json(),
            "qos": 1,
        }
        for s in seqs
    ]

    def run() -> None:
        while not stop.wait(0.1):
            publish.multiple(msgs, hostname=broker.host, port=broker.port)  # type: ignore[arg-type]

    thread = threading.Thread(target=run)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def test_watch_prints_each_verdict_once_and_stops_after_count(broker: Broker) -> None:
    args = ["watch", "--station", "station1", "--port", str(broker.port), "--count", "3", "--timeout", "20"]
    with repeating_publisher(broker, [1, 2, 3]):
        result = CliRunner().invoke(verdicts, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [int(line.split()[0]) for line in lines] == [1, 2, 3]
    assert lines[0].split()[1:4] == ["u00001", "PASS", "no_defect"]
    assert lines[0].endswith("5.0 ms")


def test_watch_json_prints_the_verdict_payload(broker: Broker) -> None:
    args = [
        "watch",
        "--station",
        "S9",
        "--line",
        "line1",
        "--port",
        str(broker.port),
        "--count",
        "1",
        "--json",
    ]
    with repeating_publisher(broker, [7], station="S9"):
        result = CliRunner().invoke(verdicts, [*args, "--timeout", "20"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert (payload["station"], payload["seq"], payload["schema"]) == ("S9", 7, "lineguard.verdict/1")


def test_watch_with_client_id_gets_what_was_sent_while_away(broker: Broker) -> None:
    base = [
        "watch",
        "--station",
        "station1",
        "--port",
        str(broker.port),
        "--client-id",
        "ctl-1",
        "--timeout",
        "20",
    ]
    with repeating_publisher(broker, [1]):
        first = CliRunner().invoke(verdicts, [*base, "--count", "1"])
    assert first.exit_code == 0, first.output
    publish.single(
        "lineguard/line1/station1/verdict",
        make_verdict(2).to_json(),
        qos=1,
        hostname=broker.host,
        port=broker.port,
    )
    second = CliRunner().invoke(verdicts, [*base, "--count", "1"])
    assert second.exit_code == 0, second.output
    assert second.output.split()[0] == "2"


def test_watch_unreachable_broker_is_one_clear_error() -> None:
    port = free_port()
    result = CliRunner().invoke(verdicts, ["watch", "--station", "s", "--port", str(port), "--count", "1"])
    assert isinstance(result.exception, DeliveryError)
    assert f"cannot reach broker 127.0.0.1:{port}" in str(result.exception)


def test_watch_times_out_with_a_count_of_what_arrived(broker: Broker) -> None:
    args = ["watch", "--station", "quiet", "--port", str(broker.port), "--count", "2", "--timeout", "0.5"]
    result = CliRunner().invoke(verdicts, args)
    assert isinstance(result.exception, DeliveryError)
    assert "received 0 of 2 verdicts" in str(result.exception)


@pytest.mark.parametrize(
    ("events", "shown", "duplicates"),
    [
        ([], [], 0),
        ([("a", 1), ("a", 1), ("b", 1)], [("a", 1), ("b", 1)], 1),
        ([("a", 3), ("a", 1), ("a", 3), ("a", 2)], [("a", 3), ("a", 1), ("a", 2)], 1),
    ],
)
def test_deduper_keys_on_station_and_seq(
    events: list[tuple[str, int]], shown: list[tuple[str, int]], duplicates: int
) -> None:
    dedup = VerdictDeduper()
    assert [e for e in events if dedup.first_time(*e)] == shown
    assert dedup.duplicates == duplicates


def test_deduper_memory_stays_bounded() -> None:
    dedup = VerdictDeduper(keep=100)
    for seq in range(1, 1001):
        dedup.first_time("a", seq)
    assert len(dedup._seen["a"]) <= 200
    assert dedup.first_time("a", 950) is False
    assert dedup.first_time("a", 1001) is True
