"""Label Studio stopped mid-upload: nothing is lost, nothing is sent twice, the queue drains after.

Runs a Label Studio of its own (from a copy of the shared server's migrated data), so it can stop
and restart it without disturbing other tests.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.label_studio import LabelStudioInfo, PrivateLabelStudio

from lineguard.labeling import LabelStudioClient, LabelStudioSink, ReviewItem, ReviewQueue
from lineguard.messages import utc_now
from lineguard.synthetic import CLASSES, render_unit

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]


@pytest.fixture
def own_server(tmp_path: Path, label_studio: LabelStudioInfo) -> Iterator[PrivateLabelStudio]:
    server = PrivateLabelStudio(tmp_path, label_studio).start()
    try:
        yield server
    finally:
        server.stop()


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def submit(queue: ReviewQueue, first: int, count: int) -> list[str]:
    ids = []
    for i in range(first, first + count):
        item = ReviewItem(
            review_id=uuid.uuid4().hex,
            unit_id=f"unit-{i}",
            line="line1",
            station="st1",
            captured_at=utc_now(),
            reason="audit",
        )
        assert queue.submit(render_unit(5, i, imgsz=128).image, item)
        ids.append(item.review_id)
    return ids


def test_queue_keeps_frames_while_label_studio_is_down_and_drains_after(
    tmp_path: Path, own_server: PrivateLabelStudio, label_studio: LabelStudioInfo
) -> None:
    client = LabelStudioClient(own_server.url, label_studio.token, timeout=5)
    project, _ = client.ensure_project("restart", list(CLASSES))
    queue = ReviewQueue(tmp_path / "review", max_items=100)
    try:
        queue.start_uploader(LabelStudioSink(client, "restart"), backoff_min_s=0.2, backoff_max_s=1.0)
        sent = submit(queue, 0, 6)
        assert wait_for(lambda: queue.stats().sent >= 2, 60), queue.stats()
        own_server.stop()  # mid-upload: some frames are in Label Studio, the rest are not
        sent += submit(queue, 6, 4)  # the line keeps sampling while the server is away
        assert queue.flush()
        assert wait_for(lambda: queue.stats().last_error != "", 30)
        waiting = queue.depth()
        assert waiting >= 4
        assert queue.stats().sent + waiting == len(sent)

        queue.close()  # the station restarts too
        queue = ReviewQueue(tmp_path / "review", max_items=100)
        assert queue.depth() == waiting

        own_server.start()
        queue.start_uploader(LabelStudioSink(client, "restart"), backoff_min_s=0.2, backoff_max_s=1.0)
        assert wait_for(lambda: queue.depth() == 0, 120), queue.stats()
    finally:
        queue.close()

    tasks = client.export_tasks(project.id)
    review_ids = sorted(t["data"]["review_id"] for t in tasks)
    assert review_ids == sorted(sent)  # every frame exactly once
    client.close()
