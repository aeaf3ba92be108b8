"""Aravis' own fake GigE Vision camera (``arv-fake-gv-camera-0.8``) as a process a test can pull.

It speaks the real GVCP/GVSP protocol on UDP 3956 of one interface address (127.0.0.1 here; a
second camera needs a second address on an interface, such as 127.0.0.2 added to ``lo``).
``stop`` is a pulled cable: the process is gone, the station's heartbeat goes unanswered; ``start``
plugs it back in (a fresh camera with default settings).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from types import TracebackType

from lineguard.edge.gige import load_aravis

__all__ = ["FakeCamera"]

FAKE_CAMERA = "arv-fake-gv-camera-0.8"


class FakeCamera:
    """One fake camera on ``address`` with serial number ``serial``; a context manager."""

    def __init__(self, address: str, serial: str) -> None:
        self.address = address
        self.serial = serial
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        program = shutil.which(FAKE_CAMERA)
        assert program is not None, f"{FAKE_CAMERA} is missing: apt-get install aravis-tools (make test does)"
        self._proc = subprocess.Popen(
            [program, "-i", self.address, "-s", self.serial],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        aravis = load_aravis()
        deadline = time.monotonic() + timeout_s
        while True:  # answering GVCP, not merely started
            assert self._proc.poll() is None, f"the fake camera on {self.address} exited (address in use?)"
            try:
                camera = aravis.Camera.new(self.address)
                del camera
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5)
        self._proc = None

    def __enter__(self) -> FakeCamera:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
