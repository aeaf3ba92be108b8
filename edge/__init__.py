"""lineguard.edge: camera frame -> checked ONNX model -> verdict, without torch.

Public names are re-exported here; cross-part code imports them from ``lineguard.edge``.
"""

from lineguard.edge.engine import CARD_NAME, Detector, StageTimes, available_backends
from lineguard.edge.policy import Decision, VerdictPolicy
from lineguard.edge.postprocess import MAX_DET, RawBoxes, decode_yolo, nms, postprocess
from lineguard.edge.preprocess import PAD_VALUE, LetterboxGeometry, Preprocessor, letterbox, letterbox_geometry
from lineguard.edge.quality import QualityGate, QualityReport

__all__ = [
    "CARD_NAME",
    "MAX_DET",
    "PAD_VALUE",
    "Decision",
    "Detector",
    "LetterboxGeometry",
    "Preprocessor",
    "QualityGate",
    "QualityReport",
    "RawBoxes",
    "StageTimes",
    "VerdictPolicy",
    "available_backends",
    "decode_yolo",
    "letterbox",
    "letterbox_geometry",
    "nms",
    "postprocess",
]
