"""lineguard.edge: camera frame -> checked ONNX model -> verdict, without torch.

Public names are re-exported here; cross-part code imports them from ``lineguard.edge``.
"""

from lineguard.edge.control import (
    ControlInbox,
    DesiredModel,
    Feedback,
    RecentIds,
    Trigger,
    parse_control,
)
from lineguard.edge.daemon import EdgeDaemon
from lineguard.edge.delivery import Delivery, JsonlDelivery, OutboxWatch, make_delivery
from lineguard.edge.engine import CARD_NAME, Detector, StageTimes, available_backends
from lineguard.edge.hot_swap import (
    ModelFollower,
    SwapCheck,
    SwapGuard,
    card_url_for,
    check_golden,
    prepare_model,
)
from lineguard.edge.inspector import Inspector, ModelSlot, RunSummary
from lineguard.edge.mqtt_delivery import MqttDelivery
from lineguard.edge.outbox import Outbox, OutboxFullError, PendingVerdict
from lineguard.edge.policy import Decision, VerdictPolicy
from lineguard.edge.postprocess import MAX_DET, RawBoxes, decode_yolo, nms, postprocess
from lineguard.edge.preprocess import (
    PAD_VALUE,
    LetterboxGeometry,
    Preprocessor,
    as_image,
    letterbox,
    letterbox_geometry,
)
from lineguard.edge.quality import QualityGate, QualityReport
from lineguard.edge.shadow import ShadowDisagreement, ShadowRunner
from lineguard.edge.sources import Frame, FrameSource, SourceHealth, frame_from_image, open_source

__all__ = [
    "CARD_NAME",
    "MAX_DET",
    "PAD_VALUE",
    "ControlInbox",
    "Decision",
    "Delivery",
    "DesiredModel",
    "Detector",
    "EdgeDaemon",
    "Feedback",
    "Frame",
    "FrameSource",
    "Inspector",
    "JsonlDelivery",
    "LetterboxGeometry",
    "ModelFollower",
    "ModelSlot",
    "MqttDelivery",
    "Outbox",
    "OutboxFullError",
    "OutboxWatch",
    "PendingVerdict",
    "Preprocessor",
    "QualityGate",
    "QualityReport",
    "RawBoxes",
    "RecentIds",
    "RunSummary",
    "ShadowDisagreement",
    "ShadowRunner",
    "SourceHealth",
    "StageTimes",
    "SwapCheck",
    "SwapGuard",
    "Trigger",
    "VerdictPolicy",
    "as_image",
    "available_backends",
    "card_url_for",
    "check_golden",
    "decode_yolo",
    "frame_from_image",
    "letterbox",
    "letterbox_geometry",
    "make_delivery",
    "nms",
    "open_source",
    "parse_control",
    "postprocess",
    "prepare_model",
]
