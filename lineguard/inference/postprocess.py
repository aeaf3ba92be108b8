"""Post-processing: a YOLOv8/YOLO11 output tensor becomes ``Detections`` normalised to the frame.

The exported detector emits ``(1, 4 + nc, N)``: per anchor a ``cx, cy, w, h`` box in model-input
pixels and one already-sigmoided score per class. We keep each anchor's best class, drop anchors
below ``min_confidence`` *before* NMS (at 0.001 on this CPU NMS otherwise costs 13–25 ms), run
class-wise greedy NMS in numpy (a box suppresses only boxes of its own class whose IoU exceeds the
threshold, as ultralytics/torchvision do), keep the best ``max_det`` and map them back through the
letterbox. Pure numpy, shared by the edge and training's evaluation.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from lineguard.errors import InputError
from lineguard.inference.detections import Detections
from lineguard.inference.preprocess import LetterboxGeometry

__all__ = ["MAX_DET", "RawBoxes", "decode_yolo", "nms", "postprocess"]

MAX_DET = 300  # ultralytics' default cap on boxes per image

FloatArray = npt.NDArray[np.float32]


class RawBoxes(NamedTuple):
    """Decoded boxes in model-input pixels (``xyxy``), before mapping to the frame."""

    xyxy: FloatArray
    confidence: FloatArray
    class_id: npt.NDArray[np.int64]


def nms(
    xyxy: FloatArray, scores: FloatArray, class_id: npt.NDArray[np.int64], iou: float
) -> npt.NDArray[np.intp]:
    """Class-wise greedy NMS; returns indices of the kept boxes, best score first."""
    if len(scores) == 0:
        return np.zeros((0,), np.intp)
    # Offset each class into its own region so one pass never lets classes suppress each other.
    span = float(np.abs(xyxy).max()) + 1.0
    boxes = xyxy.astype(np.float64) + (class_id.astype(np.float64) * 2 * span)[:, None]
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        union = areas[i] + areas[rest] - inter
        overlap = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[overlap <= iou]
    return np.asarray(keep, dtype=np.intp)


def decode_yolo(
    output: npt.NDArray[np.floating],
    *,
    min_confidence: float,
    nms_iou: float,
    num_classes: int | None = None,
    max_det: int = MAX_DET,
) -> RawBoxes:
    """Decode a ``(1, 4 + nc, N)`` (or ``(4 + nc, N)``) YOLO output into NMS-ed input-pixel boxes."""
    pred = np.asarray(output)
    if pred.ndim == 3 and pred.shape[0] == 1:
        pred = pred[0]
    if pred.ndim != 2 or pred.shape[0] < 5:
        raise InputError(f"YOLO output must have shape (1, 4 + classes, anchors); got {np.shape(output)}")
    nc = pred.shape[0] - 4
    if num_classes is not None and nc != num_classes:
        raise InputError(f"YOLO output has {nc} class channels, the model card names {num_classes}")
    scores_all = pred[4:]
    best = scores_all.max(axis=0)
    cand = np.flatnonzero(best >= min_confidence)  # filter before any per-box work
    if cand.size == 0:
        return RawBoxes(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int64))
    conf = best[cand].astype(np.float32)
    cls = scores_all[:, cand].argmax(axis=0).astype(np.int64)
    cx, cy, w, h = (pred[k, cand].astype(np.float32) for k in range(4))
    xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    keep = nms(xyxy, conf, cls, nms_iou)[:max_det]
    return RawBoxes(xyxy[keep], conf[keep], cls[keep])


def postprocess(
    output: npt.NDArray[np.floating],
    geometry: LetterboxGeometry,
    *,
    min_confidence: float,
    nms_iou: float,
    num_classes: int | None = None,
    max_det: int = MAX_DET,
) -> Detections:
    """Decode, NMS and map back through the letterbox: ``Detections`` normalised to the frame."""
    raw = decode_yolo(
        output, min_confidence=min_confidence, nms_iou=nms_iou, num_classes=num_classes, max_det=max_det
    )
    if len(raw.confidence) == 0:
        return Detections.empty()
    return Detections(xyxy=geometry.to_normalised(raw.xyxy), confidence=raw.confidence, class_id=raw.class_id)
