"""Several cameras looking at one unit (``views``): one frame from each view per trigger.

A station with views is triggered (the config says so): each trigger fires every view's camera
that the station fires (a software-triggered GigE camera) and then takes, from each view, the
first frame captured after that firing (after the trigger's arrival for a camera that fires on
its own: a hardware line, a free-running stream). The trigger pairs the frames; a view that gives
no frame within its own ``camera.watchdog_s`` (or cannot take the trigger: its camera is known to
be down) is missing for that unit, and the others are still judged. Each view is decided on its
own (its own quality gate, its own deadline from its own capture), then
``lineguard.inference.combine_views`` makes the unit's one decision; the unit's deadline runs from
its first view's capture, so it covers the slowest view. The verdict's frame (frame store, review
queue, Label Studio, live view) is the view that made the decision when it has a frame, else the
first view with one (``lineguard.messages.verdict.shown_view``).

``ViewSet`` is a ``FrameSource`` only for what the station asks of its camera outside a unit
(start, stop, health, skips): its health is down while any view is down and names the views, so
the station's watchdog, readiness, status and ``camera_down`` alert cover every view.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import numpy as np

from lineguard.config import ViewConfig
from lineguard.edge.inspector import ModelSlot
from lineguard.edge.source_factory import open_source
from lineguard.edge.sources import Frame, FrameSource, SourceHealth
from lineguard.inference import Decision, Detections, combine_views
from lineguard.messages import Reason, VerdictKind, ViewVerdict
from lineguard.messages.verdict import shown_view
from lineguard.monitoring import Metrics

__all__ = ["JudgedUnit", "ViewFrame", "ViewSet", "judge_views"]

_POLL_S = 0.2  # longest a wait for one view's frame goes without calling ``tick``
_NAME_MAX = 256


@dataclass(frozen=True)
class ViewFrame:
    """One view's frame for a unit, or why it has none (``problem``)."""

    name: str
    camera: str
    frame: Frame | None
    problem: str | None = None

    def verdict(self, decision: Decision) -> ViewVerdict:
        frame = self.frame
        return ViewVerdict(
            name=self.name,
            verdict=decision.verdict,
            reason=decision.reason,
            defects=decision.defects,
            camera=self.camera,
            frame=None if frame is None else max(frame.index, 0),
            captured_at=None if frame is None else frame.captured_at,
        )


@dataclass(frozen=True)
class JudgedUnit:
    """A unit's decision from all its views, with the frame the verdict shows and what it needs."""

    decision: Decision
    slot: ModelSlot | None
    frame: Frame  # the deciding view's image, stamped with the unit's first capture
    detections: Detections  # the deciding view's
    storable: bool  # False when no view gave a frame


def _bounded(name: str) -> str:
    return name if len(name) <= _NAME_MAX else "..." + name[-(_NAME_MAX - 3) :]


class ViewSet(FrameSource):
    """The station's views as one source for health and lifecycle; ``collect`` gets a unit's frames."""

    frames_on_demand = True
    station_triggered = True

    def __init__(self, views: Sequence[ViewConfig], metrics: Metrics | None = None) -> None:
        # The station's watchdog (alerts) runs at the shortest of the views' watchdogs.
        shortest = min(view.camera.watchdog_s for view in views)
        super().__init__(views[0].camera.model_copy(update={"watchdog_s": shortest}), metrics)
        self.limits = {view.name: view.camera.watchdog_s for view in views}
        self.sources = {view.name: open_source(view.camera, metrics) for view in views}
        for source in self.sources.values():
            source.lossless = False  # the trigger makes the unit: only the frame after it counts

    @property
    def name(self) -> str:
        return _bounded(", ".join(f"{name}={source.name}" for name, source in self.sources.items()))

    @property
    def skips(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for name, source in self.sources.items():
            total.update({f"{name}:{reason}": count for reason, count in source.skips.items()})
        return dict(total)

    def start(self) -> None:
        for source in self.sources.values():
            source.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        for source in self.sources.values():
            source.stop(timeout_s)

    def read_latest(self, timeout_s: float, *, newer_than: float | None = None) -> Frame | None:
        """Views are read together, per trigger (``collect``), never one frame at a time."""
        return None

    def health(self, now: float | None = None) -> SourceHealth:
        """Up while every view is up; the detail names each view that is not (or all, when fine)."""
        now = time.monotonic() if now is None else now
        parts = {name: source.health(now) for name, source in self.sources.items()}
        bad = {name: h for name, h in parts.items() if not h.up or h.frozen}
        shown = bad or parts
        health = SourceHealth(
            up=all(h.up for h in parts.values()),
            frozen=any(h.frozen for h in parts.values()),
            fps=min(h.fps for h in parts.values()),
            skipped=sum(h.skipped for h in parts.values()),
            reconnects=sum(h.reconnects for h in parts.values()),
            detail="; ".join(f"{name}: {h.detail}" for name, h in shown.items()),
            silent_s=max(h.silent_s for h in shown.values()),
        )
        if self.metrics is not None:
            self.metrics.camera_up.set(1 if health.up and not health.frozen else 0)
        return health

    def collect(
        self, received_mono: float, stop: threading.Event, tick: Callable[[], None]
    ) -> list[ViewFrame]:
        """One frame from each view for the trigger that arrived at ``received_mono``, in config order.

        Every view is fired first, so the slowest camera sets the wait, not their sum; ``tick``
        runs between waits (the station's watchdog and status).
        """
        fired: dict[str, float] = {}
        problems: dict[str, str] = {}
        for name, source in self.sources.items():
            at = time.monotonic() if source.station_triggered else received_mono
            if source.request_frame():
                fired[name] = at
            else:
                problems[name] = f"camera cannot take the trigger: {source.health().detail}"
        frames: dict[str, Frame] = {}
        for name, at in fired.items():
            source = self.sources[name]
            while not stop.is_set():
                left = at + self.limits[name] - time.monotonic()
                frame = source.read_latest(min(max(left, 0.0), _POLL_S), newer_than=at)
                if frame is not None:
                    frames[name] = frame
                    break
                if time.monotonic() - at > self.limits[name]:
                    problems[name] = f"no frame within {time.monotonic() - at:.1f} s"
                    break
                tick()
            else:
                problems[name] = "station stopping"
        return [
            ViewFrame(name, _bounded(source.name), frames.get(name), problems.get(name))
            for name, source in self.sources.items()
        ]


def judge_views(
    views: Sequence[ViewFrame],
    decide: Callable[[ViewFrame, Frame], tuple[Decision, ModelSlot | None, Detections]],
    deadline_ms: float,
) -> JudgedUnit:
    """Decide each view that has a frame, then the unit (``combine_views``); a view without one is
    NO_DECISION/camera. A model swapped between two views makes the unit NO_DECISION/error: its
    verdict must name the one model that judged it."""
    parts: list[ViewVerdict] = []
    judged: dict[str, tuple[Frame, Detections]] = {}
    slots: list[ModelSlot | None] = []
    for view in views:
        if view.frame is None:
            parts.append(view.verdict(Decision(VerdictKind.NO_DECISION, Reason.CAMERA)))
            continue
        decision, slot, detections = decide(view, view.frame)
        parts.append(view.verdict(decision))
        judged[view.name] = (view.frame, detections)
        slots.append(slot)
    captured = [(frame.captured_mono, name) for name, (frame, _) in judged.items()]
    late = None
    if captured and (time.monotonic() - min(captured)[0]) * 1000.0 > deadline_ms:
        late = max(captured)[1]  # the view whose frame came last
    decision = combine_views(parts, late=late)
    if any(slot is not slots[0] for slot in slots):
        decision = Decision(VerdictKind.NO_DECISION, Reason.ERROR, decision.defects, views=decision.views)
    if not captured:
        blank = Frame(np.zeros((1, 1, 3), np.uint8), datetime.now(UTC), time.monotonic(), -1)
        return JudgedUnit(decision, None, blank, Detections.empty(), storable=False)
    shown = shown_view(decision.view, decision.views)
    frame, detections = judged[shown.name if shown is not None else next(iter(judged))]
    first = min(frame.captured_mono for frame, _ in judged.values())
    first_at = min(frame.captured_at for frame, _ in judged.values())
    frame = replace(frame, captured_at=first_at, captured_mono=first)
    return JudgedUnit(decision, slots[0], frame, detections, storable=True)
