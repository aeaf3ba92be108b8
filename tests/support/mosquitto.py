"""A Mosquitto broker of the test's own, on a free loopback port, that a test may stop and restart.

Fault tests stop the broker; they must never touch the machine's shared broker on 1883, so each
one runs its own process and stops only that process. Persistence is on, so queued QoS 1
messages of persistent sessions survive a restart as they would in a plant.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Broker", "free_port"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, up: bool, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                if up:
                    return
        except OSError:
            if not up:
                return
        time.sleep(0.05)
    raise TimeoutError(f"mosquitto on port {port} did not come {'up' if up else 'down'}")


@dataclass
class Broker:
    """One mosquitto process; ``extra_conf`` adds lines (TLS, password file) to its config."""

    workdir: Path
    port: int = field(default_factory=free_port)
    extra_conf: str = ""
    host: str = "127.0.0.1"
    _proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        if shutil.which("mosquitto") is None:
            raise RuntimeError("mosquitto is not installed: apt-get install -y mosquitto")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf = self.workdir / "mosquitto.conf"
        self.log = self.workdir / "mosquitto.log"
        self.conf.write_text(
            "user root\n"
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            "autosave_interval 1\n"
            "max_queued_messages 100000\n"
            f"{self.extra_conf}\n"
        )

    def start(self) -> Broker:
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(
                ["mosquitto", "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
            )
        _wait_port(self.port, up=True)
        return self

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            _wait_port(self.port, up=False)
        self._proc = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None
