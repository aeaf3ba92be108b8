"""What the HTTP API needs from a station, so the API depends on this and not on the daemon.

``EdgeDaemon`` satisfies ``Station``; tests may hand ``create_app`` anything else that does.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from lineguard.config import LineguardConfig
    from lineguard.edge.control import Trigger
    from lineguard.edge.delivery import Delivery
    from lineguard.edge.frame_store import FrameStore
    from lineguard.edge.inspector import ModelSlot, RunSummary
    from lineguard.edge.live import LiveView
    from lineguard.messages import Verdict
    from lineguard.monitoring import Metrics

__all__ = ["Station", "trigger_wait_s"]


def trigger_wait_s(watchdog_s: float) -> float:
    """How long a caller waits for a triggered unit: the station answers NO_DECISION by ``watchdog_s``."""
    return watchdog_s + 5.0


class Station(Protocol):
    """One inspection station as the API sees it: config, probes, the model in use, units."""

    @property
    def cfg(self) -> LineguardConfig: ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def slot(self) -> ModelSlot | None: ...

    @property
    def model_error(self) -> str | None: ...

    @property
    def running(self) -> bool: ...

    @property
    def frame_store(self) -> FrameStore | None:
        """Recent verdicts and their frames; None when ``frame_store.enabled`` is false."""
        ...

    @property
    def summary(self) -> RunSummary: ...

    @property
    def delivery(self) -> Delivery: ...

    @property
    def live(self) -> LiveView: ...

    def readiness(self) -> tuple[bool, list[str]]:
        """``(ready, reasons)`` for ``/readyz``."""
        ...

    def status(self) -> dict[str, Any]:
        """What the station publishes on ``…/status``."""
        ...

    def counters(self) -> dict[str, int]:
        """Units by verdict, deadline misses, feedback escapes and overkills since start."""
        ...

    def opcua_status(self) -> dict[str, Any] | None:
        """The OPC UA server's state and endpoint; None when ``opcua.enabled`` is false."""
        ...

    def trigger(self, trigger: Trigger) -> Future[Verdict]:
        """Inspect the next camera frame as ``trigger.unit_id``."""
        ...

    def inspect_image(self, image: npt.NDArray[np.uint8], unit_id: str | None = None) -> Verdict:
        """Judge an uploaded image as one unit; the verdict is committed too."""
        ...
