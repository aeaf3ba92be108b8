"""Before a station runs: how many of its camera's frames would the image-quality gate reject?

A gate whose bounds do not fit the line turns good units into NO_DECISION/image_quality, and
nothing else in a self-check shows it: the model loads, the broker answers. ``doctor`` and ``edge
check`` therefore run the gate, with the bounds the station would use for its model, over sample
frames: ``--frames DIR``, else the configured image folder or video (spread over it). A live
camera gives no repeatable sample and the synthetic line is made to fit: both need ``--frames``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from lineguard.config import LineguardConfig
from lineguard.datasets import image_files, spread_indices
from lineguard.errors import InputError, LineguardError
from lineguard.inference import Screening, quality_bounds, read_image_file, screen_frames
from lineguard.messages import ModelCard
from lineguard.redact import mask_url

__all__ = ["MAX_REJECTED_SHARE", "SAMPLE_FRAMES", "QualityScreen", "screen_station"]

SAMPLE_FRAMES = 200  # frames screened: a 0.5% share is one frame
MAX_REJECTED_SHARE = 0.005  # more rejected sample frames than this: the bounds do not fit the line

Image = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class QualityScreen:
    """The outcome, in words: ``ok`` is False when too many frames would be rejected."""

    ok: bool
    detail: str
    fix: str = ""


def _folder_frames(folder: Path, limit: int, max_pixels: int) -> tuple[str, Iterator[Image]]:
    if not folder.is_dir():
        raise InputError(f"sample frames: {folder} is not a folder of images")
    files = image_files(folder)
    if not files:
        raise InputError(f"sample frames: {folder} holds no image files")
    chosen = [files[i] for i in spread_indices(len(files), limit)]
    return f"{len(chosen)} of {len(files)} images in {folder}", (
        read_image_file(path, max_pixels) for path in chosen
    )


def _video_frames(uri: str, limit: int) -> tuple[str, Iterator[Image]]:
    import cv2

    capture = cv2.VideoCapture(uri)
    if not capture.isOpened():
        capture.release()
        raise InputError(f"sample frames: cannot open video {mask_url(uri)!r}")
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    wanted = set(spread_indices(total, limit)) if total > 0 else set(range(limit))

    def frames() -> Iterator[Image]:
        try:
            index = 0
            while len(wanted) and index <= max(wanted):
                if index in wanted:
                    ok, image = capture.read()
                    if not ok:
                        return
                    yield np.ascontiguousarray(image, dtype=np.uint8)
                elif not capture.grab():
                    return
                index += 1
        finally:
            capture.release()

    return f"{len(wanted)} frames spread over video {mask_url(uri)!r}", frames()


def _sample(cfg: LineguardConfig, frames_dir: Path | None, limit: int) -> tuple[str, Iterator[Image]] | None:
    cam = cfg.camera
    if frames_dir is not None:
        return _folder_frames(frames_dir, limit, cam.max_image_pixels)
    if cam.kind == "folder":
        return _folder_frames(Path(cam.uri), limit, cam.max_image_pixels)
    if cam.kind == "video":
        return _video_frames(cam.uri, limit)
    return None  # a live camera or stream gives no repeatable sample; the synthetic line is ours


def screen_station(
    cfg: LineguardConfig, card: ModelCard | None, frames_dir: Path | None, limit: int = SAMPLE_FRAMES
) -> QualityScreen:
    """Screen sample frames with the bounds the station would use for ``card``'s model."""
    bounds = quality_bounds(cfg.policy.quality, card.reference if card is not None else None)
    try:
        found = _sample(cfg, frames_dir, limit)
    except LineguardError as exc:
        return QualityScreen(False, str(exc), "point --frames or camera.uri at sample frames")
    if found is None:
        return QualityScreen(
            True,
            f"{bounds.describe()}; no sample frames from a {cfg.camera.kind} camera (--frames DIR)",
            "",
        )
    where, frames = found
    try:
        screening: Screening = screen_frames(frames, bounds, cfg.policy.quality)
    except LineguardError as exc:
        return QualityScreen(False, str(exc), "remove or replace the file named above")
    if screening.frames == 0:
        return QualityScreen(False, f"{where}: no frame could be read", "check camera.uri or --frames")
    detail = f"{screening.line()}; frames: {where}"
    if screening.share <= MAX_REJECTED_SHARE:
        return QualityScreen(True, detail)
    return QualityScreen(
        False,
        detail,
        "if these frames are good units, retrain on frames like them (the bounds follow the model "
        "card) or set policy.quality.min_brightness / max_brightness / min_sharpness",
    )
