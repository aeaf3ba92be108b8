"""Fault: the publishing process is SIGKILLed mid-run; a new process on the same outbox loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support.mosquitto import Broker
from support.mqtt import DeliveryCounts, Subscriber, wait_until

from lineguard.edge.outbox import Outbox

UNITS, KILL_AFTER = 500, 200

STATION = """
import sys, time
from pathlib import Path
from lineguard.edge.mqtt_delivery import MqttDelivery
from lineguard.edge.outbox import Outbox
from lineguard.monitoring.metrics import Metrics
from support.mqtt import edge_config, make_verdict

port, data, total = int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
outbox = Outbox(data / "outbox.db")
delivery = MqttDelivery(edge_config(port, data), outbox, Metrics())
delivery.start()
while outbox.last_seq < total:
    outbox.add(make_verdict)
    delivery.wake()
    print(outbox.last_seq, flush=True)
    time.sleep(0.004)
delivery.stop(timeout_s=20)
print("done", outbox.depth(), flush=True)
"""


def station(port: int, data: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    return subprocess.Popen(
        [sys.executable, "-c", STATION, str(port), str(data), str(UNITS)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.mark.slow
def test_no_seq_missing_after_sigkill_and_restart(broker: Broker, tmp_path: Path) -> None:
    verdicts = Subscriber(broker.host, broker.port, "lineguard/line1/station1/verdict").start()
    status = Subscriber(broker.host, broker.port, "lineguard/line1/station1/status").start()
    assert broker._proc is not None
    broker_pid = broker._proc.pid
    try:
        with station(broker.port, tmp_path) as first:
            assert first.stdout is not None
            for line in first.stdout:
                if int(line) >= KILL_AFTER:
                    break
            # Freeze the broker so PUBACKs stop: the kill then lands with verdicts in flight.
            os.kill(broker_pid, signal.SIGSTOP)
            for line in first.stdout:
                if int(line) >= KILL_AFTER + 50:
                    break
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            os.kill(broker_pid, signal.SIGCONT)
        box = Outbox(tmp_path / "outbox.db")
        at_kill = (box.last_seq, box.depth())
        box.close()
        # The broker notices the dead TCP link and publishes the station's last will.
        wait_until(lambda: any(p["state"] == "offline" for p in status.payloads()), 10, "the last will")
        with station(broker.port, tmp_path) as second:
            out, _ = second.communicate(timeout=60)
        assert out.splitlines()[-1] == "done 0"
        verdicts.wait_for_seqs(set(range(1, UNITS + 1)), timeout=20)
    finally:
        os.kill(broker_pid, signal.SIGCONT)
        verdicts.stop()
        status.stop()
    counts = DeliveryCounts(list(range(1, UNITS + 1)), verdicts.seqs())
    print(f"FAULT sigkill: {counts} killed_at_seq={at_kill[0]} pending_at_kill={at_kill[1]}")
    assert at_kill[0] < UNITS
    assert at_kill[1] > 0
    assert counts.lost == []
    assert counts.first_seen == list(range(1, UNITS + 1))
