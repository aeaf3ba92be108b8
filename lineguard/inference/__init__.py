"""lineguard.inference: one inference core for the station, the registry's gate, training and benchmarks.

A frame becomes ``Detections`` through ``Detector`` (letterbox, ONNX Runtime or OpenVINO, decode,
NMS), the image-quality gate measures the frame, and ``VerdictPolicy`` turns both into a decision;
the detection metrics score many such results against labels. Everything that runs or judges a
model goes through these names, so the figures a gate or an evaluation reports are the ones the
line will see. Never imports torch; imports only core.
"""

from lineguard.inference.detections import Detections
from lineguard.inference.drawing import VERDICT_COLORS, annotate_frame, verdict_tile, write_tile_grid
from lineguard.inference.engine import CARD_NAME, Detector, StageTimes, available_backends
from lineguard.inference.golden import check_golden
from lineguard.inference.images import (
    ImageTooLargeError,
    UnknownImageFormatError,
    decode_image,
    image_size,
    read_image_file,
)
from lineguard.inference.kernels import cpu_kernels
from lineguard.inference.metrics import (
    IOU_THRESHOLDS,
    ApResult,
    UnitRates,
    ap_per_class,
    box_iou,
    confusion_matrix,
    map50_all_point,
    match_predictions,
    unit_rates,
    unit_rates_at,
)
from lineguard.inference.policy import DEFAULT_THRESHOLD, Decision, VerdictPolicy, combine_views
from lineguard.inference.postprocess import MAX_DET, RawBoxes, decode_yolo, nms, postprocess
from lineguard.inference.preprocess import (
    PAD_VALUE,
    LetterboxGeometry,
    Preprocessor,
    as_image,
    letterbox,
    letterbox_geometry,
)
from lineguard.inference.quality import (
    BUILT_IN_BOUNDS,
    QualityBounds,
    QualityGate,
    QualityReport,
    Screening,
    quality_bounds,
    screen_frames,
)

__all__ = [
    "BUILT_IN_BOUNDS",
    "CARD_NAME",
    "DEFAULT_THRESHOLD",
    "IOU_THRESHOLDS",
    "MAX_DET",
    "PAD_VALUE",
    "VERDICT_COLORS",
    "ApResult",
    "Decision",
    "Detections",
    "Detector",
    "ImageTooLargeError",
    "LetterboxGeometry",
    "Preprocessor",
    "QualityBounds",
    "QualityGate",
    "QualityReport",
    "RawBoxes",
    "Screening",
    "StageTimes",
    "UnitRates",
    "UnknownImageFormatError",
    "VerdictPolicy",
    "annotate_frame",
    "ap_per_class",
    "as_image",
    "available_backends",
    "box_iou",
    "check_golden",
    "combine_views",
    "confusion_matrix",
    "cpu_kernels",
    "decode_image",
    "decode_yolo",
    "image_size",
    "letterbox",
    "letterbox_geometry",
    "map50_all_point",
    "match_predictions",
    "nms",
    "postprocess",
    "quality_bounds",
    "read_image_file",
    "screen_frames",
    "unit_rates",
    "unit_rates_at",
    "verdict_tile",
    "write_tile_grid",
]
