"""A picture of a run: up to N decided units with their boxes, written as one PNG grid at the end.

``lineguard edge run --samples N`` answers "what did the station actually see and decide?"
without a Label Studio or a dashboard. Frames are reused ring buffers, so each kept unit is drawn
into a small tile right after its verdict is committed (a resize, off the verdict's latency); only
the first units of each verdict kind are kept, up to N in all per kind, so memory stays bounded
whatever the run's length, and the grid mixes FAIL, NO_DECISION and PASS.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt

from lineguard.inference import verdict_tile, write_tile_grid
from lineguard.messages import Verdict, VerdictKind

__all__ = ["SampleKeeper"]

_ORDER = (VerdictKind.FAIL, VerdictKind.NO_DECISION, VerdictKind.PASS)


class SampleKeeper:
    """Keeps tiles of the first ``limit`` units of each verdict kind; ``write`` picks a mix of them."""

    def __init__(self, limit: int, *, tile: int = 240) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.tile = tile
        self._kept: dict[VerdictKind, list[npt.NDArray[np.uint8]]] = {kind: [] for kind in _ORDER}
        self._lock = threading.Lock()  # the loop and HTTP uploads both offer

    def offer(self, image: npt.NDArray[np.uint8], verdict: Verdict) -> None:
        with self._lock:
            if len(self._kept[verdict.verdict]) >= self.limit:
                return
        tile = verdict_tile(image, verdict, size=self.tile)
        with self._lock:
            kept = self._kept[verdict.verdict]
            if len(kept) < self.limit:
                kept.append(tile)

    def picked(self) -> list[npt.NDArray[np.uint8]]:
        """Up to ``limit`` tiles, taken from FAIL, NO_DECISION and PASS in turn (defects first)."""
        with self._lock:
            queues = [list(self._kept[kind]) for kind in _ORDER]
        out: list[npt.NDArray[np.uint8]] = []
        while len(out) < self.limit and any(queues):
            for queue in queues:
                if queue and len(out) < self.limit:
                    out.append(queue.pop(0))
        return out

    def write(self, out_png: Path) -> int:
        """Write the grid; the number of units drawn (0: nothing decided, no file written)."""
        tiles = self.picked()
        if tiles:
            write_tile_grid(tiles, out_png, cols=min(4, len(tiles)))
        return len(tiles)
