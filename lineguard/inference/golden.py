"""The golden check: a model must run every golden image and give finite boxes before it is trusted.

A model that loads but crashes or emits NaN on real frames would turn every unit into
NO_DECISION/error on the line. The station runs this before a hot swap and the registry's gate
before a promotion, on the same images and with the same detector, so both refuse the same models.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lineguard.datasets import image_files
from lineguard.errors import InputError
from lineguard.inference.engine import Detector
from lineguard.inference.images import read_image_file

__all__ = ["check_golden"]


def check_golden(detector: Detector, folder: Path) -> list[str]:
    """Run every golden image; return the problems (empty = each ran and gave sane boxes)."""

    if not folder.is_dir():
        return [f"golden folder not found: {folder}"]
    images = image_files(folder)
    if not images:
        return [f"golden folder {folder} holds no images"]
    problems = []
    for path in images:
        try:
            frame = read_image_file(path)
        except InputError:
            problems.append(f"{path.name}: unreadable image")
            continue
        try:
            dets, _ = detector.detect(np.asarray(frame, dtype=np.uint8))
        except Exception as exc:  # any failure on a golden image refuses the model
            problems.append(f"{path.name}: {type(exc).__name__}: {exc}")
            continue
        if len(dets) and not (np.isfinite(dets.xyxy).all() and np.isfinite(dets.confidence).all()):
            problems.append(f"{path.name}: non-finite boxes or confidences")
    return problems
