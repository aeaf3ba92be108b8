"""Frame sources: one interface over video files, image folders, USB cameras, streams and the synthetic line.

Every source runs its own capture thread into a small ring of reused buffers (no allocation per
frame once the size is known). A live camera or stream must never make the loop judge a stale
frame, so it keeps only the newest one (latest-frame policy) and counts each frame nobody read as
skipped: in metrics, in ``skips`` (the run summary) and in a rate-limited log line. A file (folder,
video) or the synthetic line is the unit list itself, so it is lossless: the thread waits until
the loop took the previous frame, and no file is lost while the station starts, warms up or swaps
models; its frame's capture time is when the loop takes it (a file does not age on a conveyor).
Each such frame names its unit (``Frame.unit``: the file's stem in a folder, ``f<index>`` else).
An unreadable file is an explicit skip, logged with its name. ``health()`` is the watchdog: no
frame for ``camera.watchdog_s`` marks the camera down, ``camera.frozen_frames`` identical frames in
a row mark it frozen. Streams and USB cameras reopen after a drop with capped exponential backoff;
a video without ``loop`` and a folder are finite and say so (``exhausted``), so a daemon fed from
them can finish. A triggered industrial camera (``lineguard.edge.gige``) sends frames only when
triggered: its silence is not a fault, its control link says whether it is up, and the station
fires its software trigger through ``request_frame``. ``lineguard.edge.source_factory`` opens the
source a config names.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from lineguard.config import CameraConfig
from lineguard.datasets import IMAGE_SUFFIXES, image_files
from lineguard.errors import ConfigError, InputError
from lineguard.inference import read_image_file
from lineguard.logs import Events
from lineguard.monitoring import Metrics
from lineguard.redact import mask_url
from lineguard.synthetic import condition_named, render_unit

__all__ = [
    "CaptureSource",
    "FolderSource",
    "Frame",
    "FrameSource",
    "SourceHealth",
    "SyntheticSource",
    "frame_from_image",
    "printable",
    "unit_keys",
]

event = Events("lineguard.edge.sources")

Image = npt.NDArray[np.uint8]
_RING = 3  # one published, one held by the reader, one being written
_SKIP_LOG_EVERY_S = 10.0  # after the first skip, one line with the running total at most this often
_UNIT_KEY_MAX = 64  # leaves room for the station prefix within a unit id's 128 characters
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Frame:
    """A captured image (BGR) with its capture time; the image is valid until the next read.

    ``unit`` is the unit's name within its source when the source names units (a folder file's
    stem, ``f<index>`` for a video frame or synthetic unit), ``file`` the image file's name.
    """

    image: Image
    captured_at: datetime
    captured_mono: float
    index: int
    unit: str | None = None
    file: str | None = None


@dataclass(frozen=True)
class SourceHealth:
    up: bool
    frozen: bool
    fps: float
    skipped: int
    reconnects: int
    detail: str
    silent_s: float = 0.0  # seconds since the last frame (or since start, before the first one)


class FrameSource:
    """Base of every source: capture thread, latest-frame slot, watchdog and frozen detection.

    Subclasses implement ``_open`` (raise ``OSError`` when the device is not there),
    ``_grab(buf)`` (the next image, written into ``buf`` when it fits; ``None`` = no frame now,
    see ``_ended``) and ``_close``.
    """

    finite = False  # True: the source ends on its own (video without loop, folder)
    paced = False  # True: the thread sleeps to deliver at camera.fps (files, synthetic)
    reconnects_on_drop = False  # True: a failed read closes and reopens with backoff
    indexed = False  # True: the frame names its unit (synthetic unit, video frame, folder file)
    frames_on_demand = False  # True: frames come only when triggered; up = the link is (``_link_up``)
    station_triggered = False  # True: the station fires each unit's frame (``request_frame``)

    def __init__(self, cfg: CameraConfig, metrics: Metrics | None = None) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ring: list[Image | None] = [None] * _RING
        self._slot: Frame | None = None  # newest unread frame
        self._held: int = -1  # ring index the reader holds
        self._slot_buf: int = -1  # ring index the slot holds
        self._index = 0
        self._skipped = 0
        self._skips: Counter[str] = Counter()  # by reason: busy (latest-frame), unreadable (file)
        self._skip_logged_mono: float | None = None
        self._skip_logged_total = 0
        self._lossless: bool | None = None
        self._reconnects = 0
        self._ended = False
        self._detail = "not started"
        self._last_mono: float | None = None
        self._started_mono = 0.0
        self._same_count = 0
        self._prev_probe: Image | None = None
        self._stamps: list[float] = []  # recent capture times, for fps
        self._was_up = False

    # -- subclass hooks -------------------------------------------------------------------
    def _open(self) -> None:
        raise NotImplementedError

    def _grab(self, buf: Image | None) -> Image | None:
        raise NotImplementedError

    def _close(self) -> None:
        return None

    def _link_up(self) -> bool:
        """Sources with ``frames_on_demand``: whether the camera is connected right now."""
        return True

    def request_frame(self) -> bool:
        """Ask the camera for one frame (a software trigger); False: it cannot take one now.

        Sources that capture on their own have nothing to do. The station calls this once per
        triggered unit, before it waits for the first frame captured after the trigger.
        """
        return True

    @property
    def name(self) -> str:
        """What status, alerts and logs call the camera: its URI with any credentials masked."""
        return mask_url(f"{self.cfg.kind}:{self.cfg.uri}")

    @property
    def lossless(self) -> bool:
        """True: the thread waits for the reader instead of dropping (default: sources naming units)."""
        return self.indexed if self._lossless is None else self._lossless

    @lossless.setter
    def lossless(self, value: bool) -> None:
        """A triggered station sets False: there the trigger, not the file, makes the unit."""
        self._lossless = value

    @property
    def skips(self) -> dict[str, int]:
        """Frames never inspected, by reason (``busy``: dropped for a newer one; ``unreadable``;
        ``paused``: read while ``…/control`` paused inspection)."""
        with self._cond:
            return dict(self._skips)

    # -- public interface -----------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._started_mono = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"capture-{self.cfg.kind}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def read_latest(self, timeout_s: float, *, newer_than: float | None = None) -> Frame | None:
        """The newest frame not returned before (captured after ``newer_than`` when given).

        Waits up to ``timeout_s``; returns ``None`` on timeout or once a finite source is
        exhausted. The returned image is reused by the source after the next call.
        """
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                frame = self._slot
                lossless = self.lossless
                if frame is not None and (
                    newer_than is None or lossless or frame.captured_mono >= newer_than
                ):
                    self._slot = None
                    self._held, self._slot_buf = self._slot_buf, -1
                    self._cond.notify_all()  # a lossless writer waits for the slot to empty
                    if lossless and self.indexed:  # a file's clock starts when the station takes it
                        frame = dataclasses.replace(
                            frame, captured_at=datetime.now(UTC), captured_mono=time.monotonic()
                        )
                    return frame
                left = deadline - time.monotonic()
                if left <= 0 or self._ended or self._stop.is_set():
                    return None
                self._cond.wait(left)

    @property
    def ended(self) -> bool:
        """A finite source reached the end of its input (its last frame may still be unread)."""
        with self._cond:
            return self._ended

    @property
    def exhausted(self) -> bool:
        """A finite source has delivered its last frame and that frame has been read."""
        with self._cond:
            return self._ended and self._slot is None

    def health(self, now: float | None = None) -> SourceHealth:
        """Watchdog view: also updates the ``camera_up`` gauge."""
        now = time.monotonic() if now is None else now
        with self._cond:
            last = self._last_mono
            since = now - (last if last is not None else self._started_mono)
            if self.lossless and self._slot is not None:
                since = 0.0  # the next frame is ready; the station is busy, not the camera silent
            running = self._thread is not None and not self._ended
            if self.frames_on_demand:  # no trigger, no frame: silence says nothing about the camera
                up = running and self._link_up()
            else:
                up = running and last is not None and since <= self.cfg.watchdog_s
            frozen = self._same_count >= self.cfg.frozen_frames
            recent = [t for t in self._stamps if now - t <= 2.0]
            fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 else 0.0
            detail = self._detail
            silence_counts = running and not self.frames_on_demand  # else the detail is the link's
            if silence_counts and last is None and since <= self.cfg.watchdog_s:
                detail = f"waiting for the first frame; {detail}"
            elif silence_counts and not up:
                detail = f"no frame for {since:.1f} s (watchdog {self.cfg.watchdog_s:g} s); {detail}"
            elif frozen:
                detail = f"{self._same_count} identical frames in a row"
            health = SourceHealth(
                up, frozen, round(fps, 2), self._skipped, self._reconnects, detail, round(since, 3)
            )
        if self.metrics is not None:
            self.metrics.camera_up.set(1 if up and not frozen else 0)
        return health

    # -- capture thread -------------------------------------------------------------------
    def _run(self) -> None:
        backoff = 0.25
        opened = False
        period = 1.0 / self.cfg.fps
        next_due = time.monotonic()
        while not self._stop.is_set():
            if not opened:
                connected = self._connect()
                if connected is None:
                    return
                if not connected:
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, self.cfg.reconnect_max_s)
                    continue
                opened = True
                next_due = time.monotonic()
            if self.paced:
                wait = next_due - time.monotonic()
                if wait > 0 and self._stop.wait(wait):
                    break
                # A late frame does not make the next ones come faster.
                next_due = max(next_due + period, time.monotonic() - period)
            buf_index = self._free_buffer()
            t0 = time.monotonic()
            image = self._grab_logged(buf_index)
            if image is None:
                if self._stop.is_set():
                    break
                if self.finite and self._ended_now():
                    self._finish("end of input")
                    break
                if not self.reconnects_on_drop:
                    self._stop.wait(0.05)
                    continue
                self._close()
                opened = False
                self._set_detail(f"stream dropped; reconnecting in {backoff:g} s")
                event(logging.WARNING, "camera_dropped", camera=self.name, reconnect_in_s=backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.cfg.reconnect_max_s)
                continue
            backoff = 0.25
            self._publish(buf_index, image, t0)
        self._close()

    def _connect(self) -> bool | None:
        """Open the camera: True when open, False to retry after the backoff, None to give up."""
        try:
            self._open()
        except (OSError, InputError) as exc:
            self._set_detail(f"cannot open {self.name}: {mask_url(str(exc))}")
            if not self.reconnects_on_drop:
                event(logging.ERROR, "camera_open_failed", camera=self.name, error=mask_url(str(exc)))
                self._finish("open failed")
                return None
            return False
        if self._was_up:
            self._reconnects += 1
            if self.metrics is not None:
                self.metrics.camera_reconnects.inc()
            event(logging.INFO, "camera_reconnected", camera=self.name, reconnects=self._reconnects)
        self._set_detail("capturing")
        if self.frames_on_demand:  # connected is up: a later drop counts as one even before a frame
            self._was_up = True
        return True

    def _grab_logged(self, buf_index: int) -> Image | None:
        """The next frame into ring buffer ``buf_index``; a failed read is logged and gives None."""
        try:
            return self._grab(self._ring[buf_index])
        except (OSError, cv2.error) as exc:
            event(logging.WARNING, "camera_read_failed", camera=self.name, error=mask_url(str(exc)))
            return None

    def _ended_now(self) -> bool:
        """Finite sources override: True when the last ``None`` meant end of input."""
        return True

    def _free_buffer(self) -> int:
        with self._cond:
            for i in range(_RING):
                if i not in (self._held, self._slot_buf):
                    return i
        return 0  # unreachable with three buffers

    def _describe(self) -> tuple[int, str | None, str | None]:
        """Index, unit name and file name of the frame just grabbed (files override)."""
        return self._index, (f"f{self._index:06d}" if self.indexed else None), None

    def _publish(self, buf_index: int, image: Image, t0: float) -> None:
        now_mono = time.monotonic()
        now_wall = datetime.now(UTC)
        if self.metrics is not None:
            self.metrics.frames.inc()
            self.metrics.observe_stage("capture", now_mono - t0)
        probe = image[::8, ::8]
        same = self._prev_probe is not None and np.array_equal(probe, self._prev_probe)
        if self._prev_probe is None or self._prev_probe.shape != probe.shape:
            self._prev_probe = probe.copy()
        else:
            np.copyto(self._prev_probe, probe)
        index, unit, file = self._describe()
        with self._cond:
            while self.lossless and self._slot is not None and not self._stop.is_set():
                self._cond.wait(0.5)  # backpressure: the reader takes every frame of a file
            if self._stop.is_set() and self.lossless:
                return  # stopping: this frame was never handed over, so it is not a skip
            self._ring[buf_index] = image
            if self._slot is not None:
                self._count_skip_locked("busy", now_mono)
            self._slot = Frame(image, now_wall, now_mono, index, unit, file)
            self._slot_buf = buf_index
            self._index += 1
            self._last_mono = now_mono
            self._was_up = True
            self._same_count = self._same_count + 1 if same else 1
            self._stamps.append(now_mono)
            if len(self._stamps) > 64:
                del self._stamps[:32]
            self._cond.notify_all()

    def count_skip(self, reason: str) -> None:
        """Count a frame the station read but will not inspect (e.g. ``paused``), like a dropped one."""
        with self._cond:
            self._count_skip_locked(reason, time.monotonic())

    def _count_skip_locked(self, reason: str, now: float) -> None:
        """Count a frame that will never be inspected; log the first, then a total every few seconds."""
        self._skipped += 1
        self._skips[reason] += 1
        if self.metrics is not None:
            self.metrics.frames_skipped.inc()
        last = self._skip_logged_mono
        if last is None or now - last >= _SKIP_LOG_EVERY_S:
            event(
                logging.WARNING,
                "frames_skipped",
                camera=self.name,
                reason=reason,
                since_last_log=self._skipped - self._skip_logged_total,
                total=self._skipped,
                by_reason=dict(self._skips),
            )
            self._skip_logged_mono = now
            self._skip_logged_total = self._skipped

    def _set_detail(self, detail: str) -> None:
        with self._cond:
            self._detail = detail

    def _finish(self, detail: str) -> None:
        with self._cond:
            self._ended = True
            self._detail = detail
            self._cond.notify_all()


class SyntheticSource(FrameSource):
    """The synthetic line: frame ``i`` is ``render_unit(seed, i)``, so its ground truth is known."""

    paced = True
    indexed = True

    def __init__(self, cfg: CameraConfig, metrics: Metrics | None = None) -> None:
        super().__init__(cfg, metrics)
        self._condition = condition_named(cfg.synthetic_condition)

    @property
    def name(self) -> str:
        return f"synthetic:seed={self.cfg.synthetic_seed}"

    def _open(self) -> None:
        return None

    def _grab(self, buf: Image | None) -> Image | None:
        unit = render_unit(
            self.cfg.synthetic_seed,
            self._index,
            imgsz=self.cfg.synthetic_imgsz,
            defect_rate=self.cfg.synthetic_defect_rate,
            condition=self._condition,
        )
        if buf is not None and buf.shape == unit.image.shape:
            np.copyto(buf, unit.image)
            return buf
        return unit.image


class FolderSource(FrameSource):
    """Images of a folder in name order, paced at ``camera.fps``; ``loop`` starts over at the end.

    Each image is a unit named by its file (``unit_keys``); ``Frame.index`` is its position in
    name order (plus the folder's size per completed loop), so a verdict ties back to its file.
    """

    paced = True
    indexed = True

    def __init__(self, cfg: CameraConfig, metrics: Metrics | None = None) -> None:
        super().__init__(cfg, metrics)
        folder = Path(cfg.uri)
        if not folder.is_dir():
            raise ConfigError(f"camera.uri must be an image folder for kind 'folder'; got '{cfg.uri}'")
        self._files = image_files(folder)
        if not self._files:
            raise ConfigError(f"image folder {folder} holds no {'/'.join(IMAGE_SUFFIXES)} files")
        self._keys = unit_keys([path.stem for path in self._files])
        self.finite = not cfg.loop
        self._pos = 0
        self._pass = 0
        self._current = 0  # position of the file last grabbed

    def _open(self) -> None:
        return None

    def _grab(self, buf: Image | None) -> Image | None:
        while True:
            if self._pos >= len(self._files):
                if not self.cfg.loop:
                    return None
                self._pos = 0
                self._pass += 1
            path = self._files[self._pos]
            self._current = self._pos
            self._pos += 1
            try:  # the header's size is checked before decoding: a folder may hold an image bomb
                image = read_image_file(path, self.cfg.max_image_pixels)
                break
            except InputError as exc:
                event(
                    logging.WARNING,
                    "image_unreadable",
                    file=printable(path.name),
                    error=exc,
                    action="skipped, counted as unreadable",
                )
                self.count_skip("unreadable")
            if self._stop.is_set():
                return None
        if buf is not None and buf.shape == image.shape:
            np.copyto(buf, image)
            return buf
        return np.asarray(image, dtype=np.uint8)

    def _describe(self) -> tuple[int, str | None, str | None]:
        key = self._keys[self._current]
        if self._pass:  # '@' never occurs in a key, so a later pass cannot collide with a file
            key = f"{key}@{self._pass + 1}"
        index = self._pass * len(self._files) + self._current
        return index, key, printable(self._files[self._current].name)


def printable(name: str, limit: int = 255) -> str:
    """A file name fit for a verdict or a log line: control characters replaced, length bounded."""
    return _CONTROL.sub("?", name)[:limit]


def unit_keys(stems: list[str]) -> list[str]:
    """One unit name per file stem, unique and deterministic for a given list.

    A stem is kept when it is made of ``A-Z a-z 0-9 . _ -`` and fits in 64 characters (a unit id
    ends up in file names, topics and logs); otherwise unsafe runs become ``_`` and it is cut
    short. A name already taken, empty, or changed by that cleaning gets ``-i<position>`` so two
    files never share a unit name (``a b.png`` and ``a_b.png``; ``x.png`` and ``x.jpg``).
    """
    cleaned = [_UNSAFE.sub("_", stem).strip(".")[:_UNIT_KEY_MAX] for stem in stems]
    counts = Counter(cleaned)
    keys: list[str] = []
    taken: set[str] = set()
    for position, (stem, key) in enumerate(zip(stems, cleaned, strict=True)):
        if not key or key != stem or counts[key] > 1:
            suffix = f"-i{position:06d}"
            key = key[: _UNIT_KEY_MAX - len(suffix)] + suffix
        base, n = key, 2
        while key in taken:  # a file literally named like another's fallback
            suffix = f"-{n}"
            key, n = base[: _UNIT_KEY_MAX - len(suffix)] + suffix, n + 1
        taken.add(key)
        keys.append(key)
    return keys


class CaptureSource(FrameSource):
    """OpenCV ``VideoCapture``: a video file, a USB/V4L2 camera index or an rtsp/http stream."""

    def __init__(self, cfg: CameraConfig, metrics: Metrics | None = None) -> None:
        super().__init__(cfg, metrics)
        self._cap: Any = None
        self._target: str | int
        if cfg.kind == "video":
            if not Path(cfg.uri).is_file():
                raise ConfigError(f"camera.uri must be a video file for kind 'video'; got '{cfg.uri}'")
            self._target = cfg.uri
            self.paced = True
            self.indexed = True
            self.finite = not cfg.loop
        elif cfg.kind == "camera":
            try:
                self._target = int(cfg.uri or "0")
            except ValueError:
                self._target = cfg.uri  # a device path such as /dev/video0
            self.reconnects_on_drop = True
        else:
            if "://" not in cfg.uri:
                raise ConfigError(
                    f"camera.uri must be an rtsp:// or http:// URL for kind 'stream'; got '{cfg.uri}'"
                )
            self._target = cfg.uri
            self.reconnects_on_drop = True
        self._at_end = False

    def _open(self) -> None:
        timeout_ms = int(min(self.cfg.watchdog_s, 10.0) * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
        if isinstance(self._target, int):
            cap = cv2.VideoCapture(self._target)
        else:
            cap = cv2.VideoCapture(self._target, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            raise OSError(f"OpenCV cannot open '{mask_url(str(self._target))}'")
        if isinstance(self._target, int):
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # a USB camera must not queue stale frames
        self._cap = cap
        self._at_end = False

    def _grab(self, buf: Image | None) -> Image | None:
        if self._cap is None:
            return None
        ok, image = self._cap.read(buf) if buf is not None else self._cap.read()
        if ok and image is not None:
            return np.asarray(image, dtype=np.uint8)
        if self.cfg.kind == "video":
            if self.cfg.loop:
                self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                ok, image = self._cap.read()
                if ok and image is not None:
                    return np.asarray(image, dtype=np.uint8)
            self._at_end = True
        return None

    def _ended_now(self) -> bool:
        return self._at_end

    def _close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def frame_from_image(image: Image, index: int = 0) -> Frame:
    """Wrap an image that did not come from a camera (an upload, a self-check) as a frame."""
    return Frame(image, datetime.now(UTC), time.monotonic(), index)
