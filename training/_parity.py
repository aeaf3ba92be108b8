"""Export checks: PyTorch-vs-ONNX parity on real images, and static INT8 quantization.

An export can go wrong silently (an op exported with another rounding, a letterbox that differs
between training and the edge); the parity check runs both paths on the same validation images
with defects, at the edge's confidence floor, compares the boxes one by one, counts those at the
card's thresholds, and fails when too few boxes were compared to vouch for anything. INT8 quantization uses
ONNX Runtime's static QDQ quantizer, calibrated on training images prepared by the edge's own
preprocessor, so the calibration sees what the edge will feed the model.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lineguard.errors import InputError
from lineguard.inference import Detections, box_iou, read_image_file
from lineguard.messages import ExportParity
from lineguard.training.config import PARITY_MIN_BOXES
from lineguard.training.evaluate import predictor_for

__all__ = ["check_parity", "compare_detections", "decode_nodes", "quantize_int8"]

_PARITY_IOU = 0.45
_MARGIN = 0.05  # a box this close to the floor may fall on either side in one path: not a mismatch


def _compare(a: Detections, b: Detections, floor: float) -> tuple[float, float, int]:
    """Largest corner and confidence differences over matched boxes (1.0 for a clear unmatched box)
    and how many boxes of ``a`` were matched."""
    box_diff, conf_diff = 0.0, 0.0
    iou = box_iou(a.xyxy, b.xyxy) * (a.class_id[:, None] == b.class_id[None, :])
    matched_b: set[int] = set()
    for i in np.argsort(-a.confidence):
        j = int(iou[i].argmax()) if iou.shape[1] else -1
        if j < 0 or iou[i, j] < 0.5 or j in matched_b:
            if a.confidence[i] >= floor + _MARGIN:
                box_diff = 1.0
            continue
        matched_b.add(j)
        box_diff = max(box_diff, float(np.abs(a.xyxy[i] - b.xyxy[j]).max()))
        conf_diff = max(conf_diff, float(abs(a.confidence[i] - b.confidence[j])))
    for j in set(range(len(b))) - matched_b:
        if b.confidence[j] >= floor + _MARGIN:
            box_diff = 1.0
    return box_diff, conf_diff, len(matched_b)


def compare_detections(
    torch_dets: list[Detections],
    onnx_dets: list[Detections],
    thresholds: list[float],
    *,
    floor: float,
    tolerance: float,
    min_boxes: int = PARITY_MIN_BOXES,
) -> ExportParity:
    """Box-by-box agreement of two paths' detections at the edge's floor, one entry per image.

    ``thresholds`` (per class id, the card's) count the boxes a verdict acts on; the check fails
    when boxes disagree beyond ``tolerance`` or fewer than ``min_boxes`` were matched, since an
    agreement over nothing proves nothing.
    """
    if len(torch_dets) != len(onnx_dets):
        raise InputError(
            f"parity needs one result per image on both paths; got {len(torch_dets)} and {len(onnx_dets)}"
        )
    box_diff, conf_diff, boxes, decisive = 0.0, 0.0, 0, 0
    limits = np.asarray(thresholds, dtype=np.float64)
    for t, o in zip(torch_dets, onnx_dets, strict=True):
        bd, cd, matched = _compare(t, o, floor)
        bd2, cd2, _ = _compare(o, t, floor)
        box_diff, conf_diff = max(box_diff, bd, bd2), max(conf_diff, cd, cd2)
        boxes += matched
        if len(t):
            decisive += int((t.confidence >= limits[t.class_id]).sum())
    agree = box_diff <= tolerance and conf_diff <= tolerance
    return ExportParity(
        passed=agree and boxes >= min_boxes,
        images=len(torch_dets),
        boxes=boxes,
        boxes_at_threshold=decisive,
        min_boxes=min_boxes,
        confidence_floor=floor,
        max_box_diff=round(box_diff, 6),
        max_conf_diff=round(conf_diff, 6),
        tolerance=tolerance,
    )


def check_parity(
    weights: Path,
    onnx_path: Path,
    classes: list[str],
    imgsz: int,
    thresholds: dict[str, float],
    images: list[Path],
    *,
    floor: float,
    tolerance: float,
    min_boxes: int = PARITY_MIN_BOXES,
) -> ExportParity:
    """Compare ``weights`` (PyTorch) and ``onnx_path`` (edge detector) on ``images`` at ``floor``."""
    frames = [read_image_file(p) for p in images]
    torch_predict, close_torch = predictor_for(weights, classes, imgsz=imgsz, conf=floor, iou=_PARITY_IOU)
    try:
        torch_dets = [torch_predict(f) for f in frames]
    finally:
        close_torch()
    # One ONNX Runtime thread: torch's pool in this process still spins after its last call.
    onnx_predict, close_onnx = predictor_for(
        onnx_path, classes, imgsz=imgsz, threads=1, conf=floor, iou=_PARITY_IOU
    )
    try:
        onnx_dets = [onnx_predict(f) for f in frames]
    finally:
        close_onnx()
    limits = [thresholds.get(c, 0.5) for c in classes]
    return compare_detections(
        torch_dets, onnx_dets, limits, floor=floor, tolerance=tolerance, min_boxes=min_boxes
    )


class _Reader:
    """onnxruntime CalibrationDataReader over images prepared by the edge's preprocessor."""

    def __init__(self, input_name: str, images: list[Path], size: int) -> None:
        from lineguard.inference import Preprocessor

        self._pre = Preprocessor(size)
        self._name = input_name
        self._iter: Iterator[Path] = iter(images)

    def get_next(self) -> dict[str, Any] | None:
        path = next(self._iter, None)
        if path is None:
            return None
        tensor, _ = self._pre(read_image_file(path))
        return {self._name: tensor.copy()}


def quantize_int8(
    src: Path, dst: Path, images: list[Path], size: int, *, runtime: Literal["onnxruntime", "openvino"]
) -> Path:
    """Static INT8 (QDQ, uint8 activations, 7-bit int8 weights) calibrated on ``images``.

    ``reduce_range`` keeps weights in 7 bits: on x86 CPUs without VNNI (AVX2 only, e.g. many AMD
    and older Intel hosts) uint8 x int8 products are summed pairwise into 16 bits, and full-range
    weights saturate there: a demo model lost 33 of its 33 mAP50 points on such a CPU, and stayed
    within a point of fp32 with 7-bit weights.

    The layout depends on who compiles it. onnxruntime fuses DQ → Conv → Q into one integer
    convolution, so every op's output is quantized. OpenVINO fuses an int8 convolution with what
    follows it up to the next quantize: with Q/DQ around each SiLU (Sigmoid · Mul) the activation
    ran as its own kernel after every convolution (87 separate kernels in YOLOv8n, over half the
    INT8 time on an AMX CPU). For OpenVINO only the convolutions' inputs are quantized, so each
    SiLU is folded into its convolution and the quantize into the next one's input (34 kernels).
    """
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    input_name = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    excluded = decode_nodes(src)

    class Reader(_Reader, CalibrationDataReader):  # type: ignore[misc]
        pass

    layout: dict[str, Any] = {}
    if runtime == "openvino":
        layout = {
            "op_types_to_quantize": ["Conv"],
            "extra_options": {"OpTypesToExcludeOutputQuantization": ["Conv"]},
        }
    quantize_static(
        str(src),
        str(dst),
        Reader(input_name, images, size),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=True,
        nodes_to_exclude=excluded,
        **layout,
    )
    return dst


def decode_nodes(model: Path) -> list[str]:
    """The detect head's decode (DFL, box arithmetic, concat of boxes and scores) stays float.

    Its output joins pixel coordinates (0..S) and class scores (0..1) in one tensor; one uint8
    scale for both would flatten every score to zero.
    """
    import re

    import onnx

    nodes = onnx.load(str(model), load_external_data=False).graph.node
    index = [int(m.group(1)) for n in nodes if (m := re.match(r"^/model\.(\d+)/", n.name))]
    if not index:
        return []
    head = f"/model.{max(index)}/"
    return [
        n.name
        for n in nodes
        if n.name.startswith(head) and not re.match(rf"^{re.escape(head)}cv[23]\.", n.name)
    ]
