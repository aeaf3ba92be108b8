"""The frame store under load: its cost on the inspection thread, and its byte bound over a soak.

``StoreLeg`` is what the latency benchmark adds to an edge path for ``--frame-store``: after each
decision it does what the daemon does (``plan``, then ``record`` with a copy of the frame when
kept), so the store's writer thread (JPEG encoding, file writes, eviction) competes for the same
cores as inference while frame→verdict is timed. ``run_soak`` feeds a store synthetic frames at
the camera's full rate for a while with a small byte limit, every frame kept, and samples the
folder's size on disk the whole time: the figure that shows the limit holds.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from lineguard.config import FrameStoreConfig
from lineguard.edge.frame_store import FrameStore
from lineguard.inference import Decision, Detections, VerdictPolicy
from lineguard.messages import ImageRef, Reason, Verdict, VerdictKind
from lineguard.synthetic import render_unit

__all__ = ["SoakReport", "StoreLeg", "run_soak"]


def _verdict(seq: int, decision: Decision, keep: bool) -> Verdict:
    now = datetime.now(UTC)
    return Verdict(
        seq=seq,
        unit_id=f"bench-{seq}",
        line="bench",
        station="bench",
        verdict=decision.verdict,
        reason=decision.reason,
        defects=decision.defects,
        model=None,
        thresholds="bench",
        captured_at=now,
        decided_at=now,
        latency_ms=0.0,
        image=ImageRef.for_seq(seq) if keep else None,
    )


class StoreLeg:
    """A frame store in a folder of its own, fed one unit at a time as the daemon feeds it."""

    def __init__(self, folder: Path, cfg: FrameStoreConfig) -> None:
        self.store = FrameStore(cfg, folder)
        self.cfg = cfg
        self._seq = 0

    def offer(
        self,
        frame: npt.NDArray[np.uint8],
        decision: Decision,
        detections: Detections,
        policy: VerdictPolicy | None,
    ) -> float:
        """Seconds spent on the inspection thread (plan + copy + hand-off; the verdict excluded).

        Every unit is planned as a PASS, so the store keeps ``cfg.pass_share`` of them whatever the
        model said: the benchmark, not a random-weight model, chooses how many frames are kept.
        """
        self._seq += 1
        t0 = time.perf_counter()
        keep = self.store.plan(VerdictKind.PASS)
        t1 = time.perf_counter()
        verdict = _verdict(self._seq, decision, keep)  # the daemon builds the verdict anyway
        t2 = time.perf_counter()
        self.store.record(verdict, frame if keep else None, detections, policy)
        return (t1 - t0) + (time.perf_counter() - t2)

    def counts(self) -> dict[str, float]:
        self.store.flush(60.0)
        return {
            "share": self.cfg.pass_share,
            "kept": len(self.store),
            "bytes": self.store.stored_bytes,
            "dropped_busy": self.store.dropped,
        }

    def close(self) -> None:
        self.store.close()


@dataclass(frozen=True)
class SoakReport:
    """One soak: what went in, what the store held, and the most the folder ever held."""

    seconds: float
    fps: float
    frame_size: str
    offered: int
    kept_at_end: int
    dropped_busy: int
    max_bytes: int
    peak_folder_bytes: int
    peak_index_bytes: int
    largest_pair_bytes: int
    samples: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        held = "held" if self.peak_folder_bytes <= self.max_bytes else "EXCEEDED"
        return [
            f"frame store soak: {self.seconds:.0f} s at {self.fps:g} frames/s, {self.frame_size} frames, "
            "every frame kept (pass_share 1.0)",
            f"  offered {self.offered}, kept at the end {self.kept_at_end}, dropped (writer behind) "
            f"{self.dropped_busy}",
            f"  limit {self.max_bytes} bytes; peak on disk {self.peak_folder_bytes} bytes "
            f"({self.samples} samples of the folder), peak in the index {self.peak_index_bytes}; "
            f"largest frame + sidecar {self.largest_pair_bytes}: limit {held}",
        ]


def _folder_bytes(folder: Path) -> int:
    total = 0
    for entry in os.scandir(folder):
        with contextlib.suppress(FileNotFoundError):  # evicted between listing and stat
            total += entry.stat().st_size
    return total


def run_soak(
    seconds: float,
    *,
    fps: float = 10.0,
    size: int = 640,
    max_bytes: int = 8 * 1024 * 1024,
    folder: Path | None = None,
) -> SoakReport:
    """Offer one ``size`` px synthetic frame every ``1/fps`` s for ``seconds`` (each a FAIL, so kept)."""
    frames = [render_unit(3, i, imgsz=size).image for i in range(16)]
    with contextlib.ExitStack() as stack:
        where = folder or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lineguard-soak-")))
        cfg = FrameStoreConfig(max_bytes=max_bytes, pass_share=1.0, folder=where)
        leg = StoreLeg(where, cfg)
        stack.callback(leg.close)
        peaks = {"folder": 0, "index": 0, "samples": 0, "largest": 0}
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                peaks["folder"] = max(peaks["folder"], _folder_bytes(where))
                peaks["index"] = max(peaks["index"], leg.store.stored_bytes)
                peaks["samples"] += 1
                time.sleep(0.01)

        watcher = threading.Thread(target=watch, name="soak-watch", daemon=True)
        watcher.start()
        fail = Decision(VerdictKind.FAIL, Reason.DEFECT)
        start = time.monotonic()
        offered = 0
        while (now := time.monotonic()) - start < seconds:
            leg.offer(frames[offered % len(frames)], fail, Detections.empty(), None)
            offered += 1
            time.sleep(max(0.0, start + offered / fps - time.monotonic()))
        counts = leg.counts()
        done.set()
        watcher.join()
        for entry in os.scandir(where):
            if entry.name.endswith(".jpg"):
                pair = entry.stat().st_size + Path(entry.path).with_suffix(".json").stat().st_size
                peaks["largest"] = max(peaks["largest"], pair)
        return SoakReport(
            seconds=now - start,
            fps=fps,
            frame_size=f"{size}x{size}",
            offered=offered,
            kept_at_end=int(counts["kept"]),
            dropped_busy=int(counts["dropped_busy"]),
            max_bytes=max_bytes,
            peak_folder_bytes=peaks["folder"],
            peak_index_bytes=peaks["index"],
            largest_pair_bytes=peaks["largest"],
            samples=peaks["samples"],
        )
