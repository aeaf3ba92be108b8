"""Write the synthetic line to disk as a YOLO dataset version, plus a short video of the line.

A fresh machine has no real dataset, yet tests, the demo and benchmarks need labeled images and a
camera-like stream. The folder is a dataset version like any other: ``images/{train,val,calib}``,
``labels/{train,val,calib}``, ``data.yaml`` and ``manifest.json``; ``video/line.avi`` with
``video/line_truth.jsonl`` (one row per frame: unit index, defective, classes) feeds edge tests.
The ``calib`` units are rendered on top of ``images`` (the next unit indices), so adding them
leaves the train and val units, and any model trained on them, as they were.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import cv2
import yaml

from lineguard.datasets import CALIB_SPLIT
from lineguard.errors import DatasetError, InputError
from lineguard.messages import DatasetManifest
from lineguard.synthetic import CLASSES, condition_named, render_unit
from lineguard.training.config import AugmentConfig

__all__ = ["SYNTHETIC_LINE_AUGMENT", "VIDEO_INDEX_OFFSET", "write_synthetic_dataset"]

# The synthetic camera renders no blur, sensor noise or rotation. At 160 px those augmentations
# smear its 1-2 px scratches and stall a YOLOv8n trained from scratch: 30 epochs on the demo's 200
# units reached mAP50 0.01 with the default augmentations and 0.36 / 0.41 without them (seeds 0/1).
SYNTHETIC_LINE_AUGMENT = AugmentConfig(noise=0.0, blur=0.0, motion_blur=0.0, rotate=0.0)

# Video units are drawn from another index range than the images, so they are unseen by training.
VIDEO_INDEX_OFFSET = 1_000_000


def _label_text(labels: tuple[tuple[int, float, float, float, float], ...]) -> str:
    return "".join(f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in labels)


def write_synthetic_dataset(
    out: Path,
    *,
    images: int,
    seed: int,
    imgsz: int = 320,
    defect_rate: float = 0.5,
    condition: str = "nominal",
    val_share: float = 0.25,
    calib_share: float = 0.25,
    video_frames: int = 60,
    video_fps: float = 10.0,
    progress: Callable[[int, int], None] | None = None,
) -> DatasetManifest:
    """Render ``images`` units (plus ``calib_share`` of that into calib) at ``out``; return its manifest."""
    if images < 2:
        raise InputError(f"--images must be at least 2 (one train, one val); got {images}")
    if not 0.0 < val_share < 1.0:
        raise InputError(f"val share must be between 0 and 1; got {val_share}")
    if not 0.0 <= calib_share <= 1.0:
        raise InputError(f"calib share must be between 0 and 1; got {calib_share}")
    if out.exists() and any(out.iterdir()):
        raise DatasetError(f"{out} exists and is not empty; dataset versions are immutable, pick a new --out")
    cond = condition_named(condition)
    n_val = max(1, round(images * val_share))
    total = images + round(images * calib_share)
    counts: dict[str, dict[str, int]] = {}
    for index in range(total):
        split = CALIB_SPLIT if index >= images else "val" if index >= images - n_val else "train"
        unit = render_unit(seed, index, imgsz=imgsz, defect_rate=defect_rate, condition=cond)
        for sub in ("images", "labels"):
            (out / sub / split).mkdir(parents=True, exist_ok=True)
        stem = f"unit_{index:06d}"
        cv2.imwrite(str(out / "images" / split / f"{stem}.png"), unit.image)
        (out / "labels" / split / f"{stem}.txt").write_text(_label_text(unit.labels))
        tally = counts.setdefault(split, {"images": 0, "defect_free": 0} | dict.fromkeys(CLASSES, 0))
        tally["images"] += 1
        tally["defect_free"] += 0 if unit.labels else 1
        for cls, *_ in unit.labels:
            tally[CLASSES[cls]] += 1
        if progress is not None:
            progress(index + 1, total)

    (out / "data.yaml").write_text(
        yaml.safe_dump(
            {"train": "images/train", "val": "images/val", "names": dict(enumerate(CLASSES))},
            sort_keys=False,
        )
    )
    if video_frames > 0:
        _write_video(out / "video", seed, imgsz, defect_rate, condition, video_frames, video_fps)

    manifest = DatasetManifest.scan(
        out,
        name=out.name,
        classes=list(CLASSES),
        source=f"synthetic:seed={seed},imgsz={imgsz},defect_rate={defect_rate},condition={condition}",
        created_at=datetime.now(UTC),
    )
    manifest.counts = counts
    manifest.save(out)
    return manifest


def _write_video(
    folder: Path, seed: int, imgsz: int, defect_rate: float, condition: str, frames: int, fps: float
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(folder / "line.avi"), cv2.VideoWriter.fourcc(*"MJPG"), fps, (imgsz, imgsz))
    if not writer.isOpened():
        raise InputError("OpenCV cannot write MJPG video here; reinstall opencv-python-headless")
    cond = condition_named(condition)
    rows = []
    try:
        for frame in range(frames):
            index = VIDEO_INDEX_OFFSET + frame
            unit = render_unit(seed, index, imgsz=imgsz, defect_rate=defect_rate, condition=cond)
            writer.write(unit.image)
            rows.append(
                {
                    "frame": frame,
                    "unit_index": index,
                    "defective": unit.defective,
                    "classes": sorted({CLASSES[c] for c, *_ in unit.labels}),
                }
            )
    finally:
        writer.release()
    (folder / "line_truth.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
