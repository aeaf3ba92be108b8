"""The review outbox: sampled frames wait here, durably, until Label Studio confirms their task.

The inspection loop must never wait for a JPEG encode, a disk write or the network, so
``ReviewQueue.submit`` only drops the frame into a small in-memory hand-off; a writer thread
encodes it, writes ``frames/<review_id>.jpg`` (fsynced) and commits a row in a SQLite WAL
database. An uploader thread sends the oldest rows to a ``ReviewSink`` (Label Studio) and deletes
a row and its file only after the sink returned a task id. While the sink is down, rows wait and
the uploader backs off; a restart picks up every committed row. The queue is bounded
(``max_items``): at the bound new frames are dropped, counted, and an alert is raised once per
episode, because an unbounded queue would fill the station's disk. A row the sink refuses for
good (a 4xx such as a bad payload) is parked as ``failed`` and kept, not retried in a loop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from lineguard.durable import corrupt_error, exclusive_lock, open_durable
from lineguard.errors import DeliveryError
from lineguard.logs import Events

if TYPE_CHECKING:
    from lineguard.monitoring import Metrics

__all__ = [
    "QueueStats",
    "RefusedError",
    "ReviewBox",
    "ReviewItem",
    "ReviewQueue",
    "ReviewSink",
    "read_stats",
    "review_dir",
]

event = Events(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    review_id TEXT NOT NULL UNIQUE,
    payload TEXT NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT ''
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('sent', 0);
INSERT OR IGNORE INTO meta (key, value) VALUES ('dropped', 0);
"""


class ReviewBox(BaseModel):
    """One model box shown to QA staff as a pre-annotation; ``xyxy`` normalised to 0..1."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    class_name: str
    confidence: float = Field(ge=0, le=1)
    xyxy: tuple[float, float, float, float]


class ReviewItem(BaseModel):
    """What travels with a sampled frame: identity, why it was sampled and what the model saw."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    review_id: str = Field(min_length=1, description="Unique per sampled frame; dedups re-sends.")
    unit_id: str
    line: str
    station: str
    captured_at: datetime
    reason: str = Field(description="Sampling reason: uncertain, no_decision, audit, class, ...")
    verdict: str = ""
    model_name: str = ""
    model_version: str = ""
    score: float = Field(default=0.0, ge=0, le=1, description="Top box confidence (0 = none).")
    width: int = Field(default=0, ge=0, description="Frame width in pixels (set by the queue).")
    height: int = Field(default=0, ge=0)
    boxes: tuple[ReviewBox, ...] = ()
    view: str = Field(
        default="", description="Several views: the view this frame is from; empty with one camera."
    )


class RefusedError(DeliveryError):
    """The sink refused this item for good (bad payload): retrying the same bytes cannot help."""


class ReviewSink(Protocol):
    """Where frames go; ``send`` returns the task id once the far side has stored the task."""

    def send(self, item: ReviewItem, jpeg: bytes, *, retry: bool) -> int:
        """Create the task (``retry``: an earlier attempt may have created it already)."""
        ...


@dataclass(frozen=True)
class QueueStats:
    depth: int
    failed: int
    sent: int
    dropped: int
    busy_dropped: int
    last_error: str


@dataclass(frozen=True)
class _Row:
    id: int
    review_id: str
    payload: str
    attempts: int


class ReviewQueue:
    """Durable queue of frames for review with a writer thread and an optional uploader thread."""

    def __init__(
        self,
        root: Path,
        *,
        max_items: int = 5000,
        metrics: Metrics | None = None,
        on_alert: Callable[[str, str], None] | None = None,
        handoff: int = 32,
        jpeg_quality: int = 90,
    ) -> None:
        self.root = root
        self.frames = root / "frames"
        self.frames.mkdir(parents=True, exist_ok=True)
        self._lockfile = exclusive_lock(
            root / "queue.lock",
            f"review queue {root} is in use by another process (an edge daemon?); "
            "stop it first, or read it with 'lineguard label status'",
        )
        self.max_items = max_items
        self._metrics = metrics
        self._on_alert = on_alert
        self._quality = jpeg_quality
        self._lock = threading.Lock()
        try:
            self._db = open_durable(root / "review.sqlite", what="review queue", synchronous="FULL")
        except BaseException:
            self._lockfile.close()
            raise
        self._db.executescript(_SCHEMA)
        self._remove_orphans()
        self._rows = self._count()
        self._inbox: queue.Queue[tuple[npt.NDArray[np.uint8], ReviewItem] | None] = queue.Queue(handoff)
        self._busy_dropped = 0
        self._unsaved_drops = 0
        self._full_alerted = False
        self._last_error = ""
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="review-writer", daemon=True)
        self._writer.start()
        self._uploader: threading.Thread | None = None
        self._publish_depth()

    # -- producer side (inspection thread) -------------------------------------------------

    def submit(self, frame_bgr: npt.NDArray[np.uint8], item: ReviewItem) -> bool:
        """Hand a frame to the writer without waiting; False when it had to be dropped."""
        if self._rows + self._inbox.unfinished_tasks >= self.max_items:
            self._dropped_full()
            return False
        try:
            self._inbox.put_nowait((frame_bgr, item))
        except queue.Full:
            self._busy_dropped += 1
            event(logging.WARNING, "review_frame_dropped", why="review writer busy", unit_id=item.unit_id)
            return False
        return True

    def _dropped_full(self) -> None:
        self._unsaved_drops += 1  # no I/O on the inspection thread; saved by the worker threads
        if not self._full_alerted:
            self._full_alerted = True
            message = (
                f"review queue {self.root} is full ({self.max_items} frames): new samples are "
                "dropped until Label Studio takes some; check the uploader"
            )
            event(logging.ERROR, "review_queue_full", why=message)
            if self._metrics is not None:
                self._metrics.alerts.labels(kind="review_queue_full").inc()
            if self._on_alert is not None:
                self._on_alert("review_queue_full", message)

    # -- writer thread ---------------------------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            entry = self._inbox.get()
            try:
                if entry is None:
                    return
                self._store(*entry)
            except Exception:  # one bad frame must not kill the writer
                event(logging.ERROR, "review_store_failed", exc_info=True)
            finally:
                self._inbox.task_done()

    def _store(self, frame: npt.NDArray[np.uint8], item: ReviewItem) -> None:
        import cv2

        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, self._quality])
        if not ok:
            raise DeliveryError(f"JPEG encoding failed for unit {item.unit_id} (frame {frame.shape})")
        item = item.model_copy(update={"width": int(frame.shape[1]), "height": int(frame.shape[0])})
        path = self._frame_path(item.review_id)
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as fh:
            fh.write(buf.tobytes())
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO items (review_id, payload, created) VALUES (?, ?, ?)",
                (item.review_id, item.model_dump_json(), time.time()),
            )
            self._rows = self._count()
            self._save_drops()
        self._publish_depth()
        self._wake.set()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every submitted frame is on disk (tests, shutdown); False on timeout."""
        deadline = time.monotonic() + timeout
        while self._inbox.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    # -- uploader side ---------------------------------------------------------------------

    def start_uploader(
        self, sink: ReviewSink, *, backoff_min_s: float = 1.0, backoff_max_s: float = 60.0
    ) -> None:
        """Send rows in the background; on a transient error wait (doubling) and try again."""
        if self._uploader is not None:
            return

        def loop() -> None:
            backoff = backoff_min_s
            while not self._stop.is_set():
                try:
                    self.upload_pending(sink)
                    backoff = backoff_min_s
                    self._wake.wait(timeout=5.0)
                    self._wake.clear()
                except Exception as exc:  # down, timed out, or a bug: never kill the thread
                    if isinstance(exc, DeliveryError):
                        event(logging.WARNING, "review_upload_failed", error=exc, retry_in_s=backoff)
                    else:
                        event(logging.ERROR, "review_uploader_error", exc_info=True, retry_in_s=backoff)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, backoff_max_s)

        self._uploader = threading.Thread(target=loop, name="review-uploader", daemon=True)
        self._uploader.start()

    def upload_pending(self, sink: ReviewSink, *, limit: int | None = None) -> int:
        """Send waiting rows oldest first until none is left; return how many were sent.

        Raises ``DeliveryError`` on the first transient failure (the row stays for a retry).
        """
        sent = 0
        while limit is None or sent < limit:
            if self._stop.is_set():
                break
            row = self._next_row()
            if row is None:
                break
            item = ReviewItem.model_validate_json(row.payload)
            path = self._frame_path(row.review_id)
            try:
                jpeg = path.read_bytes()
            except FileNotFoundError:
                self._park(row, f"frame file {path} is missing")
                continue
            self._mark_attempt(row)
            try:
                task_id = sink.send(item, jpeg, retry=row.attempts > 0)
            except RefusedError as exc:
                self._park(row, str(exc))
                continue
            except DeliveryError as exc:
                self._record_error(row, str(exc))
                raise
            self._confirm(row, task_id)
            sent += 1
        return sent

    def _next_row(self) -> _Row | None:
        with self._lock:
            got = self._db.execute(
                "SELECT id, review_id, payload, attempts FROM items WHERE failed = 0 ORDER BY id LIMIT 1"
            ).fetchone()
        return None if got is None else _Row(int(got[0]), str(got[1]), str(got[2]), int(got[3]))

    def _mark_attempt(self, row: _Row) -> None:
        with self._lock:
            self._db.execute("UPDATE items SET attempts = attempts + 1 WHERE id = ?", (row.id,))

    def _record_error(self, row: _Row, error: str) -> None:
        self._last_error = error
        with self._lock:
            self._db.execute("UPDATE items SET last_error = ? WHERE id = ?", (error[:500], row.id))

    def _park(self, row: _Row, error: str) -> None:
        event(logging.ERROR, "review_item_refused", review_id=row.review_id, error=error, kept="as failed")
        self._last_error = error
        with self._lock:
            self._db.execute(
                "UPDATE items SET failed = 1, last_error = ? WHERE id = ?", (error[:500], row.id)
            )

    def _confirm(self, row: _Row, task_id: int) -> None:
        event(logging.DEBUG, "review_item_sent", review_id=row.review_id, task_id=task_id)
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM items WHERE id = ?", (row.id,))
            self._db.execute("UPDATE meta SET value = value + 1 WHERE key = 'sent'")
            self._db.execute("COMMIT")
            self._rows = self._count()
        with contextlib.suppress(FileNotFoundError):
            self._frame_path(row.review_id).unlink()
        if self._rows < 0.9 * self.max_items:
            self._full_alerted = False
        self._publish_depth()

    def retry_failed(self) -> int:
        """Put parked rows back in line (after fixing the project); return how many."""
        with self._lock:
            cur = self._db.execute("UPDATE items SET failed = 0 WHERE failed = 1")
        self._wake.set()
        return int(cur.rowcount)

    # -- bookkeeping -----------------------------------------------------------------------

    def _save_drops(self) -> None:
        """Fold the in-memory drop count into the database (caller holds the lock)."""
        drops, self._unsaved_drops = self._unsaved_drops, 0
        if drops:
            self._db.execute("UPDATE meta SET value = value + ? WHERE key = 'dropped'", (drops,))

    def _frame_path(self, review_id: str) -> Path:
        return self.frames / f"{review_id}.jpg"

    def _count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def _remove_orphans(self) -> None:
        """Frames written before a crash but never committed have no row: delete them."""
        known = {str(r[0]) for r in self._db.execute("SELECT review_id FROM items")}
        for path in self.frames.iterdir():
            if path.suffix == ".tmp" or path.stem not in known:
                path.unlink(missing_ok=True)

    def _publish_depth(self) -> None:
        if self._metrics is not None:
            self._metrics.review_queue_depth.set(self._rows)

    def depth(self) -> int:
        """Rows waiting on disk (failed ones included: they still hold disk space)."""
        with self._lock:
            return self._rows

    def stats(self) -> QueueStats:
        with self._lock:
            self._save_drops()
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            failed = int(self._db.execute("SELECT COUNT(*) FROM items WHERE failed = 1").fetchone()[0])
            last = self._db.execute(
                "SELECT last_error FROM items WHERE last_error != '' ORDER BY id DESC LIMIT 1"
            ).fetchone()
        return QueueStats(
            depth=self._rows,
            failed=failed,
            sent=int(meta.get("sent", 0)),
            dropped=int(meta.get("dropped", 0)),
            busy_dropped=self._busy_dropped,
            last_error=self._last_error or (str(last[0]) if last else ""),
        )

    def close(self, timeout: float = 30.0) -> None:
        """Store what was handed over, stop both threads and close the database."""
        self._stop.set()
        self._wake.set()
        self._inbox.put(None)
        self._writer.join(timeout)
        if self._uploader is not None:
            self._uploader.join(timeout)
            self._uploader = None
        with self._lock:
            self._save_drops()
            self._db.close()
        self._lockfile.close()  # releases the flock


def read_stats(root: Path) -> QueueStats | None:
    """Counts of a queue folder without taking it over (safe while the daemon runs); None if none."""
    db_path = root / "review.sqlite"
    if not db_path.exists():
        return None
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        depth, failed = db.execute("SELECT COUNT(*), COALESCE(SUM(failed), 0) FROM items").fetchone()
        last = db.execute(
            "SELECT last_error FROM items WHERE last_error != '' ORDER BY id DESC LIMIT 1"
        ).fetchone()
    except sqlite3.DatabaseError as exc:
        raise corrupt_error("review queue", db_path, exc) from exc
    finally:
        db.close()
    return QueueStats(
        depth=int(depth),
        failed=int(failed),
        sent=int(meta.get("sent", 0)),
        dropped=int(meta.get("dropped", 0)),
        busy_dropped=0,
        last_error=str(last[0]) if last else "",
    )


def review_dir(data_dir: Path) -> Path:
    """Where a station keeps its review queue: ``<station.data_dir>/review``."""
    return data_dir / "review"
