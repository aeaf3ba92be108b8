"""The review sampler picks the right frames, within its caps, without near-duplicates."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from lineguard.config import SamplingConfig
from lineguard.inference import Detections
from lineguard.labeling import ReviewItem, ReviewQueue, ReviewSampler, hamming, perceptual_hash
from lineguard.messages import Reason, Verdict, VerdictKind, utc_now
from lineguard.monitoring import Metrics
from lineguard.synthetic import CLASSES, render_unit

THRESHOLDS = {"scratch": 0.5, "pit": 0.5, "crack": 0.6, "inclusion": 0.5}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def verdict(kind: VerdictKind = VerdictKind.PASS, unit: str = "u1") -> Verdict:
    now = utc_now()
    reason = {
        VerdictKind.PASS: Reason.NO_DEFECT,
        VerdictKind.FAIL: Reason.DEFECT,
        VerdictKind.NO_DECISION: Reason.UNCERTAIN,
    }[kind]
    return Verdict(
        seq=1,
        unit_id=unit,
        line="l1",
        station="s1",
        verdict=kind,
        reason=reason,
        model=None,
        thresholds="t",
        captured_at=now - timedelta(milliseconds=20),
        decided_at=now,
        latency_ms=20.0,
    )


def dets(*rows: tuple[int, float]) -> Detections:
    """Boxes of class ``c`` with confidence ``p``, all at the same place."""
    if not rows:
        return Detections.empty()
    return Detections.from_arrays(
        [[0.2, 0.2, 0.4, 0.5]] * len(rows), [p for _, p in rows], [c for c, _ in rows]
    )


def frame(index: int) -> npt.NDArray[np.uint8]:
    return render_unit(3, index, imgsz=160).image


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[ReviewQueue]:
    q = ReviewQueue(tmp_path / "review", max_items=1000)
    yield q
    q.close()


def sampler(queue: ReviewQueue, clock: FakeClock | None = None, **cfg: object) -> ReviewSampler:
    settings = {"audit_share": 0.0, "uncertain_band": 0.15, **cfg}
    return ReviewSampler(
        SamplingConfig.model_validate(settings),
        list(CLASSES),
        THRESHOLDS,
        queue,
        Metrics(),
        seed=1,
        clock=clock or FakeClock(),
    )


@pytest.mark.parametrize(
    ("kind", "boxes", "flags", "expected"),
    [
        (VerdictKind.PASS, (), {}, None),
        (VerdictKind.PASS, ((0, 0.40),), {}, "uncertain"),  # 0.1 below the threshold
        (VerdictKind.FAIL, ((0, 0.62),), {}, "uncertain"),  # 0.12 above it
        (VerdictKind.PASS, ((0, 0.20),), {}, None),  # far below: a confident PASS
        (VerdictKind.FAIL, ((0, 0.95),), {}, None),  # far above: a confident FAIL
        (VerdictKind.FAIL, ((2, 0.70),), {}, "uncertain"),  # crack's own threshold is 0.6
        (VerdictKind.NO_DECISION, (), {}, "no_decision"),
        (VerdictKind.NO_DECISION, ((1, 0.45),), {}, "uncertain"),
        (VerdictKind.PASS, (), {"disagreement": True}, "disagreement"),
        (VerdictKind.NO_DECISION, (), {"disagreement": True}, "disagreement"),
    ],
)
def test_reason_follows_verdict_and_confidence(
    queue: ReviewQueue,
    kind: VerdictKind,
    boxes: tuple[tuple[int, float], ...],
    flags: dict[str, bool],
    expected: str | None,
) -> None:
    s = sampler(queue)
    assert s.offer(frame(0), verdict(kind), dets(*boxes), **flags) == expected


def test_chosen_class_is_sampled_even_when_confident(queue: ReviewQueue) -> None:
    s = sampler(queue, classes=["inclusion"])
    assert s.offer(frame(0), verdict(VerdictKind.FAIL), dets((0, 0.95))) is None
    assert s.offer(frame(1), verdict(VerdictKind.FAIL), dets((3, 0.95))) == "class"


def test_sampled_frame_lands_on_disk_with_its_prediction(queue: ReviewQueue) -> None:
    s = sampler(queue)
    assert s.offer(frame(0), verdict(VerdictKind.PASS, unit="U-7"), dets((0, 0.45), (1, 0.05))) == "uncertain"
    assert queue.flush()
    assert queue.depth() == 1
    row = queue._next_row()
    assert row is not None
    item = ReviewItem.model_validate_json(row.payload)
    assert (item.unit_id, item.reason, item.width, item.height) == ("U-7", "uncertain", 160, 160)
    # the far-below box is not worth showing; the doubtful one is
    assert [(b.class_name, round(b.confidence, 2)) for b in item.boxes] == [("scratch", 0.45)]
    assert (queue.frames / f"{item.review_id}.jpg").read_bytes()[:2] == b"\xff\xd8"


def test_caps_hold_until_their_window_has_passed(queue: ReviewQueue) -> None:
    clock = FakeClock()
    s = sampler(queue, clock, per_minute=3, per_hour=5)
    nd = verdict(VerdictKind.NO_DECISION)
    taken = [s.offer(frame(i), nd, Detections.empty()) for i in range(5)]
    assert taken == ["no_decision"] * 3 + [None, None]
    clock.now += 61
    taken = [s.offer(frame(10 + i), nd, Detections.empty()) for i in range(3)]
    assert taken == ["no_decision", "no_decision", None]  # the hour cap (5) now binds
    clock.now += 3600
    assert s.offer(frame(20), nd, Detections.empty()) == "no_decision"
    assert s.stats.capped == 3


def test_near_duplicate_frames_are_sent_once(queue: ReviewQueue) -> None:
    s = sampler(queue)
    nd = verdict(VerdictKind.NO_DECISION)
    base = frame(4)
    noisy = np.clip(base.astype(np.int16) + np.random.default_rng(0).normal(0, 4, base.shape), 0, 255)
    assert s.offer(base, nd, Detections.empty()) == "no_decision"
    assert s.offer(noisy.astype(np.uint8), nd, Detections.empty()) is None
    assert s.offer(frame(5), nd, Detections.empty()) == "no_decision"
    assert s.stats.duplicate == 1


def test_dedup_off_sends_identical_frames(queue: ReviewQueue) -> None:
    s = sampler(queue, dedup_distance=-1)
    nd = verdict(VerdictKind.NO_DECISION)
    assert [s.offer(frame(4), nd, Detections.empty()) for _ in range(2)] == ["no_decision"] * 2


@pytest.mark.parametrize(("a", "b", "same"), [(0, 0, True), (0, 1, False), (7, 8, False)])
def test_perceptual_hash_tells_units_apart(a: int, b: int, same: bool) -> None:
    distance = hamming(perceptual_hash(frame(a)), perceptual_hash(frame(b)))
    assert (distance <= SamplingConfig().dedup_distance) is same


def test_audit_share_and_its_temporary_boost(queue: ReviewQueue) -> None:
    clock = FakeClock()
    s = sampler(queue, clock, audit_share=0.05, per_minute=10**6, per_hour=10**6, per_day=10**6)
    ok = verdict(VerdictKind.PASS)

    def share() -> float:
        return sum(s.reason_for(ok, Detections.empty()) == "audit" for _ in range(4000)) / 4000

    assert 0.03 < share() < 0.07
    s.boost(8, duration_s=600)
    assert 0.33 < share() < 0.47
    clock.now += 601
    assert 0.03 < share() < 0.07


def test_full_queue_drops_are_counted_and_alerted_once(tmp_path: Path) -> None:
    alerts: list[str] = []
    metrics = Metrics()
    q = ReviewQueue(
        tmp_path / "r", max_items=2, metrics=metrics, on_alert=lambda kind, msg: alerts.append(kind)
    )
    try:
        s = ReviewSampler(
            SamplingConfig(audit_share=0.0), list(CLASSES), THRESHOLDS, q, metrics, clock=FakeClock()
        )
        nd = verdict(VerdictKind.NO_DECISION)
        taken = [s.offer(frame(i), nd, Detections.empty()) for i in range(5)]
        assert q.flush()
        assert taken == ["no_decision"] * 2 + [None] * 3
        assert (q.depth(), q.stats().dropped, s.stats.dropped) == (2, 3, 3)
        assert alerts == ["review_queue_full"]
        text = metrics.render().decode()
        assert "lineguard_review_queue_pending 2.0" in text
        assert 'lineguard_alerts_total{kind="review_queue_full"} 1.0' in text
        assert 'lineguard_review_sampled_total{reason="no_decision"} 2.0' in text
    finally:
        q.close()
