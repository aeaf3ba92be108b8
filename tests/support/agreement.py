"""Same boxes as ultralytics: the station's ``Detector`` against ``YOLO(model).predict``, frame by frame.

One comparison, one tolerance, for every test that claims lineguard sees what ultralytics sees (a
tenth of a pixel at 160 px, 1e-4 in confidence, at most one box of difference sitting exactly at
the confidence threshold).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from lineguard.inference import Detector, as_image
from lineguard.synthetic import render_unit

__all__ = ["agreement_frames", "assert_same_boxes_as_ultralytics"]


def agreement_frames() -> Iterator[npt.NDArray[np.uint8]]:
    """Synthetic units at shapes that exercise the letterbox: square, landscape crop, resized."""
    for i in range(6):
        unit = render_unit(11, i, imgsz=300).image
        yield as_image(cv2.resize(unit, (300, 200))) if i % 2 else unit[20:260]


def assert_same_boxes_as_ultralytics(detector: Detector, reference: Any, *, conf: float, iou: float) -> int:
    """Every box ultralytics' ``reference`` predicts on ``agreement_frames`` is found by ``detector``.

    Returns how many boxes were compared, for the caller to check the comparison was not empty.
    """
    compared = 0
    size = detector.input_size
    for frame in agreement_frames():
        ours, _ = detector.detect(frame)
        boxes = reference.predict(frame, imgsz=size, conf=conf, iou=iou, verbose=False)[0].boxes
        h, w = frame.shape[:2]
        theirs_xyxy = boxes.xyxy.numpy() / np.array([w, h, w, h], np.float32)
        theirs_conf, theirs_cls = boxes.conf.numpy(), boxes.cls.numpy().astype(np.int64)
        assert abs(len(ours) - len(theirs_conf)) <= 1  # one box may sit exactly at the threshold
        for box, score, cls in zip(theirs_xyxy, theirs_conf, theirs_cls, strict=True):
            same = (
                (ours.class_id == cls)
                & (np.abs(ours.confidence - score) < 1e-4)
                & (np.abs(ours.xyxy - box).max(axis=1) < 1e-3)  # a tenth of a pixel at 160 px
            )
            where = detector.backend
            assert same.any(), f"ultralytics box {box} {score:.5f} class {cls} not found by {where}"
            compared += 1
    return compared
