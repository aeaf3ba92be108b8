"""The review outbox keeps every sampled frame until the sink confirms it, across restarts."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from lineguard.errors import DeliveryError, InputError
from lineguard.labeling import RefusedError, ReviewItem, ReviewQueue, read_stats
from lineguard.messages import utc_now
from lineguard.synthetic import render_unit


class Sink:
    """Plays Label Studio behind the one-method sink interface: up, down, or refusing some items."""

    def __init__(self) -> None:
        self.up = True
        self.refuse: set[str] = set()
        self.tasks: dict[str, bytes] = {}
        self.calls: list[tuple[str, bool]] = []

    def send(self, item: ReviewItem, jpeg: bytes, *, retry: bool) -> int:
        self.calls.append((item.unit_id, retry))
        if not self.up:
            raise DeliveryError("connection refused")
        if item.unit_id in self.refuse:
            raise RefusedError("HTTP 400: bad prediction")
        self.tasks[item.unit_id] = jpeg
        return len(self.tasks)


def item(unit: str) -> ReviewItem:
    return ReviewItem(
        review_id=uuid.uuid4().hex,
        unit_id=unit,
        line="l1",
        station="s1",
        captured_at=utc_now(),
        reason="audit",
    )


def frame(i: int) -> npt.NDArray[np.uint8]:
    return render_unit(1, i, imgsz=96).image


def fill(q: ReviewQueue, *units: str) -> None:
    for i, unit in enumerate(units):
        assert q.submit(frame(i), item(unit))
    assert q.flush()


def test_frames_survive_a_restart_and_leave_only_when_confirmed(tmp_path: Path) -> None:
    q = ReviewQueue(tmp_path, max_items=10)
    fill(q, "a", "b", "c")
    q.close()

    q = ReviewQueue(tmp_path, max_items=10)
    try:
        sink = Sink()
        sink.up = False
        with pytest.raises(DeliveryError, match="connection refused"):
            q.upload_pending(sink)
        assert q.depth() == 3
        assert q.stats().last_error == "connection refused"
        sink.up = True
        assert q.upload_pending(sink) == 3
        assert sorted(sink.tasks) == ["a", "b", "c"]
        assert all(jpeg[:2] == b"\xff\xd8" for jpeg in sink.tasks.values())
        assert (q.depth(), q.stats().sent) == (0, 3)
        assert list(q.frames.iterdir()) == []
    finally:
        q.close()


def test_a_resend_after_a_failed_attempt_is_flagged_as_retry(tmp_path: Path) -> None:
    q = ReviewQueue(tmp_path, max_items=10)
    try:
        fill(q, "a", "b")
        sink = Sink()
        sink.up = False
        with pytest.raises(DeliveryError, match="connection refused"):
            q.upload_pending(sink)
        sink.up = True
        q.upload_pending(sink)
        # 'a' may already exist on the far side, so the sink is told to look before creating
        assert sink.calls == [("a", False), ("a", True), ("b", False)]
    finally:
        q.close()


def test_a_refused_frame_is_parked_and_the_rest_go_on(tmp_path: Path) -> None:
    q = ReviewQueue(tmp_path, max_items=10)
    try:
        fill(q, "a", "bad", "c")
        sink = Sink()
        sink.refuse = {"bad"}
        assert q.upload_pending(sink) == 2
        stats = q.stats()
        assert (stats.depth, stats.failed, stats.sent) == (1, 1, 2)
        assert "bad prediction" in stats.last_error
        assert q.upload_pending(sink) == 0  # parked rows are not retried in a loop
        sink.refuse = set()
        assert q.retry_failed() == 1
        assert q.upload_pending(sink) == 1
        assert sorted(sink.tasks) == ["a", "bad", "c"]
    finally:
        q.close()


def test_background_uploader_waits_while_down_and_drains_after(tmp_path: Path) -> None:
    q = ReviewQueue(tmp_path, max_items=10)
    try:
        sink = Sink()
        sink.up = False
        q.start_uploader(sink, backoff_min_s=0.02, backoff_max_s=0.1)
        fill(q, "a", "b", "c")
        deadline = time.monotonic() + 5
        while len(sink.calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert q.depth() == 3 and not sink.tasks
        sink.up = True
        while q.depth() and time.monotonic() < deadline + 5:
            time.sleep(0.01)
        assert sorted(sink.tasks) == ["a", "b", "c"]
    finally:
        q.close()


def test_frames_without_a_committed_row_are_cleaned_up_on_start(tmp_path: Path) -> None:
    q = ReviewQueue(tmp_path, max_items=10)
    fill(q, "a")
    q.close()
    (tmp_path / "frames" / "crashed.tmp").write_bytes(b"half")
    (tmp_path / "frames" / "orphan.jpg").write_bytes(b"\xff\xd8")
    q = ReviewQueue(tmp_path, max_items=10)
    try:
        assert len(list(q.frames.iterdir())) == 1
        assert q.depth() == 1
    finally:
        q.close()


def test_a_second_owner_is_refused_while_status_can_still_read(tmp_path: Path) -> None:
    assert read_stats(tmp_path) is None
    q = ReviewQueue(tmp_path, max_items=10)
    try:
        fill(q, "a", "b")
        with pytest.raises(InputError, match="in use by another process"):
            ReviewQueue(tmp_path, max_items=10)
        stats = read_stats(tmp_path)
        assert stats is not None and (stats.depth, stats.sent) == (2, 0)
    finally:
        q.close()
    stats = read_stats(tmp_path)
    assert stats is not None and stats.depth == 2


def test_a_damaged_review_queue_is_one_line_naming_the_file_and_the_fix(tmp_path: Path) -> None:
    q = ReviewQueue(tmp_path, max_items=10)
    fill(q, "u1", "u2")
    q.close()
    db = tmp_path / "review.sqlite"
    db.write_bytes(b"scribbled over by a bad disk " * (db.stat().st_size // 29 + 1))
    reopen = lambda: ReviewQueue(tmp_path, max_items=10)  # noqa: E731
    for attempt in (reopen, reopen, lambda: read_stats(tmp_path)):  # twice: the first let go of the lock
        with pytest.raises(InputError) as caught:
            attempt()
        message = str(caught.value)
        assert "\n" not in message
        assert f"review queue {db} is damaged" in message and "aside" in message
