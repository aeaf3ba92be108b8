"""The frame store: a bounded ring of recent frames on disk, so a verdict's image can be looked at.

Every FAIL and NO_DECISION frame is kept and an evenly spread ``frame_store.pass_share`` of PASS
frames. The inspection thread only decides (``plan``, before the verdict is built, so the
verdict names its image exactly when the frame will be written) and hands over a copy of the
frame (``record``); a writer thread encodes the JPEG and writes it with a JSON sidecar (the
verdict and the boxes the policy weighed, for drawing). When the writer is behind, the frame is
not kept and counted (``busy``): inspection never waits for the disk. Before each write the
oldest frames are deleted until the new one fits, so the folder never holds more than
``max_bytes`` (JPEG + sidecar sizes); frames older than ``max_age_s`` go too. File names carry
the verdict's ``seq`` (``000000000042.jpg`` + ``.json``), so the index is rebuilt from the folder
at start; files there are not trusted: names must match, sizes are bounded, a sidecar must parse
as the verdict of its name, and a JPEG must start like one, or the pair is deleted with a log line.
A short in-memory list of the latest verdicts (kept frame or not) serves ``recent``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import re
import stat
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from lineguard.config import FrameStoreConfig
from lineguard.durable import exclusive_lock
from lineguard.inference import Detections, VerdictPolicy, annotate_frame
from lineguard.labeling import ReviewBox, ReviewItem
from lineguard.logs import Events
from lineguard.messages import Defect, Verdict, VerdictKind

if TYPE_CHECKING:
    from lineguard.monitoring import Metrics

__all__ = ["FrameStore", "StoredFrame"]

event = Events("lineguard.edge.frame_store")

Image = npt.NDArray[np.uint8]

_NAME: Final = re.compile(r"([0-9]{12})\.(jpg|json)")
_TMP: Final = re.compile(r"[0-9]{12}\.(jpg|json)\.tmp")
_LOCK_NAME: Final = ".lock"
_MAX_SIDECAR_BYTES: Final = 256 * 1024  # a verdict with 100 boxes is ~30 kB
_MAX_BOXES: Final = 100  # doubtful boxes kept per frame, highest confidence first
_HANDOFF: Final = 16  # frames waiting for the writer; beyond that a frame is not kept
_RECENT: Final = 1000  # latest verdicts kept in memory for ``recent``
_AGE_CHECK_S: Final = 10.0
_LOGGED_SKIPS: Final = 5  # bad files named one by one at start; the rest are counted
_SCHEMA: Final = "lineguard.frame/1"


@dataclass(frozen=True)
class _Entry:
    """One stored frame as the index sees it: enough to filter, evict and find its files."""

    seq: int
    verdict: VerdictKind
    reason: str
    unit_id: str
    decided: float  # epoch seconds
    nbytes: int  # JPEG + sidecar


@dataclass(frozen=True)
class StoredFrame:
    """A stored frame read back: the verdict, the boxes weighed near a threshold, the JPEG."""

    verdict: Verdict
    doubtful: tuple[Defect, ...]
    jpeg: bytes


@dataclass(frozen=True)
class _Job:
    image: Image
    verdict: Verdict
    detections: Detections
    policy: VerdictPolicy | None


class FrameStore:
    """Recent frames in ``folder`` within ``cfg``'s byte and age limits; one writer thread."""

    def __init__(self, cfg: FrameStoreConfig, folder: Path, *, metrics: Metrics | None = None) -> None:
        self.cfg = cfg
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._lockfile = exclusive_lock(
            folder / _LOCK_NAME,
            f"frame store {folder} is in use by another process (an edge daemon?); stop it first "
            "or set frame_store.folder to another folder",
        )
        self._metrics = metrics
        self._lock = threading.Lock()
        self._index: OrderedDict[int, _Entry] = OrderedDict()  # oldest first
        self._by_unit: dict[str, int] = {}
        self._bytes = 0
        self._recent: OrderedDict[int, Verdict] = OrderedDict()
        self._pending: set[int] = set()
        self._slots = threading.BoundedSemaphore(_HANDOFF)
        self._pass_credit = 0.0
        self.dropped = 0  # frames planned for but not kept because the writer was behind
        self._inbox: queue.Queue[_Job | None] = queue.Queue()
        self._load()
        self._evict(0, time.time())
        self._writer = threading.Thread(target=self._write_loop, name="frame-store-writer", daemon=True)
        self._writer.start()

    # -- inspection thread -----------------------------------------------------------------

    def plan(self, kind: VerdictKind) -> bool:
        """Whether this unit's frame will be kept: call before building its verdict.

        True takes one of the writer's hand-off slots, which ``record`` (or ``cancel``, when the
        verdict could not be committed) gives back to the writer.
        """
        if kind is VerdictKind.PASS:
            with self._lock:
                self._pass_credit += self.cfg.pass_share
                if self._pass_credit < 1.0 - 1e-9:  # 10 x 0.1 must make one
                    return False
                self._pass_credit -= 1.0
        if self._slots.acquire(blocking=False):
            return True
        self.dropped += 1
        self._count("busy")
        return False

    def cancel(self) -> None:
        """Give back a slot ``plan`` took for a verdict that was never committed."""
        self._slots.release()

    def record(
        self,
        verdict: Verdict,
        image: Image | None = None,
        detections: Detections | None = None,
        policy: VerdictPolicy | None = None,
    ) -> None:
        """Note ``verdict`` among the latest; with ``image`` (after ``plan`` said True) queue a copy."""
        with self._lock:
            self._recent[verdict.seq] = verdict
            while len(self._recent) > _RECENT:
                self._recent.popitem(last=False)
            if image is not None:
                self._pending.add(verdict.seq)
        if image is not None:
            self._inbox.put(_Job(image.copy(), verdict, detections or Detections.empty(), policy))

    # -- readers (HTTP API, feedback) ------------------------------------------------------

    def recent(
        self,
        limit: int = 50,
        verdict: str | None = None,
        reason: str | None = None,
        before_seq: int | None = None,
    ) -> list[dict[str, Any]]:
        """The latest verdicts, newest first, each with ``image`` only while its frame is kept."""
        with self._lock:
            rows: dict[int, tuple[str, str]] = {
                seq: (e.verdict.value, e.reason) for seq, e in self._index.items()
            }
            rows.update({seq: (v.verdict.value, v.reason.value) for seq, v in self._recent.items()})
        out: list[dict[str, Any]] = []
        for seq in sorted(rows, reverse=True):
            if len(out) >= limit:
                break
            kind, why = rows[seq]
            if (before_seq is not None and seq >= before_seq) or (verdict and kind != verdict):
                continue
            if reason and why != reason:
                continue
            item = self.get(seq)
            if item is not None:
                out.append(item)
        return out

    def get(self, seq: int) -> dict[str, Any] | None:
        """The verdict JSON of ``seq`` (with ``image`` while its frame is kept), or None."""
        with self._lock:
            held = self._recent.get(seq)
            kept = seq in self._index or seq in self._pending
        if held is not None:
            data: dict[str, Any] = json.loads(held.to_json())
            if not kept:
                data.pop("image", None)
            return data
        stored = self._read(seq, with_jpeg=False)
        return None if stored is None else json.loads(stored.verdict.to_json())

    def image(self, seq: int, annotated: bool = False) -> bytes | None:
        """The stored JPEG of ``seq``; ``annotated`` draws boxes, confidences and the verdict."""
        stored = self._read(seq, with_jpeg=True)
        if stored is None:
            return None
        if not annotated:
            return stored.jpeg
        frame = cv2.imdecode(np.frombuffer(stored.jpeg, np.uint8), cv2.IMREAD_COLOR)
        if frame is None:
            return None
        drawn = annotate_frame(np.asarray(frame, np.uint8), stored.verdict, doubtful=stored.doubtful)
        return _encode(drawn, self.cfg.jpeg_quality)

    def seq_for_unit(self, unit_id: str) -> int | None:
        """The latest stored frame of ``unit_id`` (feedback names units, the store keeps seqs)."""
        with self._lock:
            return self._by_unit.get(unit_id)

    def review_frame(self, unit_id: str, reason: str) -> tuple[Image, ReviewItem] | None:
        """The stored frame of ``unit_id`` as a review item filed under ``reason``; None if not kept."""
        seq = self.seq_for_unit(unit_id)
        stored = None if seq is None else self._read(seq, with_jpeg=True)
        if stored is None:
            return None
        decoded = cv2.imdecode(np.frombuffer(stored.jpeg, np.uint8), cv2.IMREAD_COLOR)
        if decoded is None:
            return None
        frame = np.asarray(decoded, np.uint8)
        v = stored.verdict
        boxes = {(d.class_name, d.box): d for d in (*stored.doubtful, *v.shown_defects)}
        item = ReviewItem(
            review_id=uuid.uuid4().hex,
            unit_id=v.unit_id,
            line=v.line,
            station=v.station,
            captured_at=v.captured_at,
            reason=reason,
            verdict=v.verdict.value,
            model_name=v.model.name if v.model else "",
            model_version=v.model.version if v.model else "",
            score=max((d.confidence for d in boxes.values()), default=0.0),
            width=int(frame.shape[1]),
            height=int(frame.shape[0]),
            boxes=tuple(
                ReviewBox(class_name=d.class_name, confidence=d.confidence, xyxy=d.box)
                for d in boxes.values()
            ),
            view=v.shown_view or "",
        )
        return frame, item

    @property
    def stored_bytes(self) -> int:
        with self._lock:
            return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._index)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every handed-over frame is written or given up (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        while self._inbox.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Write what was handed over, stop the writer and release the folder."""
        self._inbox.put(None)
        self._writer.join(timeout)
        self._lockfile.close()

    # -- writer thread ---------------------------------------------------------------------

    def _write_loop(self) -> None:
        # Below inference in the scheduler: on a small CPU an encode must wait for a unit, not the
        # other way round (Linux applies a thread's own nice value; elsewhere this is a no-op).
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        while True:
            try:
                job = self._inbox.get(timeout=_AGE_CHECK_S)
            except queue.Empty:
                self._evict(0, time.time())
                continue
            try:
                if job is None:
                    return
                self._store(job)
            except Exception as exc:  # one bad frame or a full disk must not stop the writer
                self._count("failed")
                event(
                    logging.ERROR, "frame_store_write_failed", seq=job.verdict.seq if job else None, error=exc
                )
            finally:
                if job is not None:
                    with self._lock:
                        self._pending.discard(job.verdict.seq)
                    self._slots.release()
                self._inbox.task_done()

    def _store(self, job: _Job) -> None:
        jpeg = _encode(job.image, self.cfg.jpeg_quality)
        sidecar = json.dumps(
            {
                "schema": _SCHEMA,
                "verdict": json.loads(job.verdict.to_json()),
                "doubtful": [d.model_dump(mode="json", by_alias=True) for d in _doubtful(job)],
            }
        ).encode()
        size = len(jpeg) + len(sidecar)
        if size > self.cfg.max_bytes or len(sidecar) > _MAX_SIDECAR_BYTES:
            self._count("too_large")
            event(
                logging.WARNING,
                "frame_not_kept",
                seq=job.verdict.seq,
                bytes=size,
                why="over the store's limit",
            )
            return
        self._evict(size, time.time())
        seq = job.verdict.seq
        _write(self._path(seq, "jpg"), jpeg)
        _write(self._path(seq, "json"), sidecar)  # the sidecar commits the pair
        self._add(
            _Entry(
                seq,
                job.verdict.verdict,
                job.verdict.reason.value,
                job.verdict.unit_id,
                job.verdict.decided_at.timestamp(),
                size,
            )
        )
        self._count("stored")

    def _add(self, entry: _Entry) -> None:
        with self._lock:
            old = self._index.pop(entry.seq, None)
            self._bytes += entry.nbytes - (old.nbytes if old else 0)
            self._index[entry.seq] = entry
            self._by_unit[entry.unit_id] = entry.seq
            total = self._bytes
        if self._metrics is not None:
            self._metrics.frame_store_bytes.set(total)

    def _evict(self, room: int, now: float) -> None:
        """Delete frames past ``max_age_s``, then the oldest until ``room`` more bytes fit."""
        while True:
            with self._lock:
                if not self._index:
                    break
                oldest = next(iter(self._index.values()))
                aged = now - oldest.decided > self.cfg.max_age_s
                if not aged and self._bytes + room <= self.cfg.max_bytes:
                    break
                self._index.pop(oldest.seq)
                self._bytes -= oldest.nbytes
                if self._by_unit.get(oldest.unit_id) == oldest.seq:
                    del self._by_unit[oldest.unit_id]
                total = self._bytes
            self._remove(oldest.seq)
            self._count("evicted_age" if aged else "evicted_bytes")
            if self._metrics is not None:
                self._metrics.frame_store_bytes.set(total)

    # -- files -----------------------------------------------------------------------------

    def _path(self, seq: int, suffix: str) -> Path:
        return self.folder / f"{seq:012d}.{suffix}"

    def _remove(self, seq: int) -> None:
        for suffix in ("json", "jpg"):  # the sidecar first: a pair without it is not a frame
            with contextlib.suppress(FileNotFoundError):
                self._path(seq, suffix).unlink()

    def _read(self, seq: int, *, with_jpeg: bool) -> StoredFrame | None:
        """A stored frame read back, its files checked again (they may have changed under us)."""
        with self._lock:
            entry = self._index.get(seq)
        if entry is None:
            return None
        try:
            return self._parse(seq, with_jpeg=with_jpeg)
        except (OSError, ValueError) as exc:
            event(logging.WARNING, "frame_store_read_failed", seq=seq, error=_short(exc))
            return None

    def _parse(self, seq: int, *, with_jpeg: bool) -> StoredFrame:
        """Raises ``ValueError`` (bad content) or ``OSError`` (missing, not a file, too big)."""
        raw = _read_bounded(self._path(seq, "json"), _MAX_SIDECAR_BYTES)
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("schema") != _SCHEMA:
            raise ValueError("sidecar is not a lineguard.frame/1 object")
        try:
            verdict = Verdict.model_validate(data.get("verdict"))
            doubtful = tuple(Defect.model_validate(d) for d in list(data.get("doubtful") or ())[:_MAX_BOXES])
        except (ValidationError, TypeError) as exc:
            raise ValueError("sidecar does not hold a valid verdict") from exc
        if verdict.seq != seq:
            raise ValueError(f"sidecar names seq {verdict.seq}, its file name {seq}")
        jpeg = b""
        if with_jpeg:
            jpeg = _read_bounded(self._path(seq, "jpg"), self.cfg.max_bytes)
            if not jpeg.startswith(b"\xff\xd8"):
                raise ValueError("not a JPEG file")
        return StoredFrame(verdict, doubtful, jpeg)

    def _load(self) -> None:
        """Rebuild the index from the folder; delete broken or half-written pairs, keep strangers."""
        found: dict[int, dict[str, int]] = {}
        strangers = 0
        for path in self.folder.iterdir():
            name = path.name
            if name == _LOCK_NAME:
                continue
            if _TMP.fullmatch(name):  # a write interrupted by a crash
                path.unlink(missing_ok=True)
                continue
            match = _NAME.fullmatch(name)
            info = path.lstat()
            if match is None or not stat.S_ISREG(info.st_mode):
                strangers += 1
                continue
            found.setdefault(int(match.group(1)), {})[match.group(2)] = info.st_size
        if strangers:
            event(
                logging.WARNING,
                "frame_store_unknown_files",
                folder=str(self.folder),
                count=strangers,
                action="left alone, not counted in frame_store.max_bytes",
            )
        skipped = 0
        for seq in sorted(found):
            sizes = found[seq]
            try:
                if set(sizes) != {"jpg", "json"}:
                    raise ValueError("half a pair (JPEG or sidecar missing)")
                verdict = self._parse(seq, with_jpeg=True).verdict
            except (OSError, ValueError) as exc:
                skipped += 1
                if skipped <= _LOGGED_SKIPS:
                    event(
                        logging.WARNING,
                        "frame_store_file_skipped",
                        seq=seq,
                        why=_short(exc),
                        action="deleted",
                    )
                self._remove(seq)
                continue
            self._add(
                _Entry(
                    seq,
                    verdict.verdict,
                    verdict.reason.value,
                    verdict.unit_id,
                    verdict.decided_at.timestamp(),
                    sizes["jpg"] + sizes["json"],
                )
            )
        if skipped:
            event(logging.WARNING, "frame_store_files_skipped", folder=str(self.folder), count=skipped)
        event(
            logging.INFO,
            "frame_store_opened",
            folder=str(self.folder),
            frames=len(self._index),
            bytes=self._bytes,
            max_bytes=self.cfg.max_bytes,
        )

    def _count(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.frame_store_frames.labels(result=result).inc()


def _doubtful(job: _Job) -> list[Defect]:
    """The boxes the policy weighed: at or above their class threshold minus the review band."""
    policy, found = job.policy, job.detections
    if policy is None or policy.card is None or not len(found):
        return []
    classes = policy.card.classes
    ids = np.clip(found.class_id, 0, len(classes) - 1)
    floor = np.array([policy.threshold(name) for name in classes], np.float32)[ids] - policy.cfg.review_band
    keep = np.flatnonzero(found.confidence >= floor)
    keep = keep[np.argsort(-found.confidence[keep], kind="stable")][:_MAX_BOXES]
    boxes = np.clip(found.xyxy, 0.0, 1.0)
    return [
        Defect.model_validate(
            {
                "class": classes[int(ids[i])],
                "class_id": int(ids[i]),
                "confidence": min(1.0, max(0.0, float(found.confidence[i]))),
                "box": tuple(float(v) for v in boxes[i]),
            }
        )
        for i in keep
    ]


def _encode(image: Image, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"JPEG encoding failed for a frame of shape {image.shape}")
    return bytes(buf.tobytes())


def _write(path: Path, data: bytes) -> None:
    """Write through a temporary name, so a reader or a restart never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _read_bounded(path: Path, limit: int) -> bytes:
    """A regular file's bytes, refusing links and files over ``limit``."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path.name} is not a regular file")
        if info.st_size > limit:
            raise OSError(f"{path.name} is {info.st_size} bytes, over {limit}")
        return fh.read(limit + 1)[:limit]


def _short(exc: BaseException) -> str:
    """An error for a log line: its class and message, cut short (never a file's content)."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 200 else text[:199] + "…"
