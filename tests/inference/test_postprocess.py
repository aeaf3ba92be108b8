"""Decoding YOLO outputs and class-wise NMS, on hand-built output tensors."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from lineguard.errors import InputError
from lineguard.inference import decode_yolo, letterbox_geometry, nms, postprocess

NC = 4


Anchor = tuple[float, float, float, float, int, float]


def yolo_output(*anchors: Anchor, n: int = 8) -> npt.NDArray[np.float32]:
    """A ``(1, 4 + NC, n)`` output: each anchor is (cx, cy, w, h, class, score); the rest are empty."""
    out = np.zeros((1, 4 + NC, n), np.float32)
    for k, (cx, cy, w, h, cls, score) in enumerate(anchors):
        out[0, :4, k] = (cx, cy, w, h)
        out[0, 4 + cls, k] = score
    return out


@pytest.mark.parametrize(
    ("anchors", "expected"),
    [
        pytest.param((), [], id="empty"),
        pytest.param(((50, 50, 20, 10, 1, 0.9),), [(1, 0.9, (40, 45, 60, 55))], id="one-box"),
        pytest.param(
            ((50, 50, 20, 20, 0, 0.9), (52, 50, 20, 20, 0, 0.8)),
            [(0, 0.9, (40, 40, 60, 60))],
            id="overlap-same-class-suppressed",
        ),
        pytest.param(
            ((50, 50, 20, 20, 0, 0.8), (52, 50, 20, 20, 2, 0.9)),
            [(2, 0.9, (42, 40, 62, 60)), (0, 0.8, (40, 40, 60, 60))],
            id="overlap-different-classes-kept",
        ),
        pytest.param(
            ((50, 50, 20, 20, 0, 0.9), (90, 90, 20, 20, 0, 0.5)),
            [(0, 0.9, (40, 40, 60, 60)), (0, 0.5, (80, 80, 100, 100))],
            id="same-class-apart-kept",
        ),
        pytest.param(((50, 50, 20, 20, 3, 0.04),), [], id="below-min-confidence-dropped"),
        pytest.param(
            ((50, 50, 20, 20, 3, 0.04), (10, 10, 4, 4, 1, 0.05)),
            [(1, 0.05, (8, 8, 12, 12))],
            id="at-min-confidence-kept",
        ),
    ],
)
def test_decode_filters_then_suppresses_per_class(
    anchors: tuple[tuple[float, float, float, float, int, float], ...],
    expected: list[tuple[int, float, tuple[float, float, float, float]]],
) -> None:
    raw = decode_yolo(yolo_output(*anchors), min_confidence=0.05, nms_iou=0.45, num_classes=NC)
    got = [
        (int(c), round(float(s), 4), tuple(round(float(v), 3) for v in box))
        for c, s, box in zip(raw.class_id, raw.confidence, raw.xyxy, strict=True)
    ]
    assert got == [(c, s, tuple(float(v) for v in box)) for c, s, box in expected]


def test_decode_keeps_the_best_class_of_each_anchor() -> None:
    out = yolo_output((50, 50, 20, 20, 1, 0.6))
    out[0, 4 + 3, 0] = 0.7  # the same anchor scores higher for class 3
    raw = decode_yolo(out, min_confidence=0.05, nms_iou=0.45)
    assert raw.class_id.tolist() == [3]
    assert raw.confidence.tolist() == pytest.approx([0.7])


@pytest.mark.parametrize(("iou", "kept"), [(0.9, 2), (0.6, 2), (0.59, 1), (0.3, 1)])
def test_nms_suppresses_only_above_the_iou_threshold(iou: float, kept: int) -> None:
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 6]], np.float32)  # IoU exactly 0.6
    scores = np.array([0.9, 0.8], np.float32)
    assert len(nms(boxes, scores, np.zeros(2, np.int64), iou)) == kept


def test_decode_caps_boxes_at_max_det_best_first() -> None:
    anchors = tuple((10 + 30 * k, 10, 10, 10, 0, 0.1 + 0.01 * k) for k in range(8))
    raw = decode_yolo(yolo_output(*anchors), min_confidence=0.05, nms_iou=0.45, max_det=3)
    assert raw.confidence.tolist() == pytest.approx([0.17, 0.16, 0.15])


def test_postprocess_maps_boxes_back_to_the_frame_normalised() -> None:
    geo = letterbox_geometry(480, 640, 320)  # scale 0.5, 40 px bars top and bottom
    out = yolo_output((160, 160, 320, 240, 2, 0.9))  # the whole frame in input pixels
    det = postprocess(out, geo, min_confidence=0.05, nms_iou=0.45, num_classes=NC)
    assert det.xyxy.tolist() == [pytest.approx([0.0, 0.0, 1.0, 1.0])]
    assert det.class_id.tolist() == [2]


def test_postprocess_of_nothing_is_empty_detections() -> None:
    det = postprocess(yolo_output(), letterbox_geometry(10, 10, 32), min_confidence=0.05, nms_iou=0.45)
    assert len(det) == 0
    assert det.xyxy.shape == (0, 4)


@pytest.mark.parametrize(
    ("shape", "num_classes", "match"),
    [
        ((1, 3, 10), None, "4 \\+ classes"),
        ((2, 8, 10), None, "4 \\+ classes"),
        ((1, 8, 10), 5, "4 class channels, the model card names 5"),
    ],
)
def test_malformed_outputs_are_refused(shape: tuple[int, ...], num_classes: int | None, match: str) -> None:
    with pytest.raises(InputError, match=match):
        decode_yolo(np.zeros(shape, np.float32), min_confidence=0.05, nms_iou=0.45, num_classes=num_classes)
