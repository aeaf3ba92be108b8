"""lineguard.edge: the station application: frame source -> inference -> verdict -> outbox -> MQTT.

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
from lineguard.edge.delivery import Delivery, JsonlDelivery, OutboxWatch
from lineguard.edge.delivery_factory import make_delivery
from lineguard.edge.hot_swap import (
    ModelFollower,
    SwapCheck,
    SwapGuard,
    prepare_model,
)
from lineguard.edge.inspector import Inspector, ModelSlot, RunSummary
from lineguard.edge.mqtt_delivery import MqttDelivery
from lineguard.edge.outbox import Outbox, OutboxFullError, PendingVerdict
from lineguard.edge.shadow import ShadowDisagreement, ShadowRunner
from lineguard.edge.source_factory import open_source
from lineguard.edge.sources import Frame, FrameSource, SourceHealth, frame_from_image

__all__ = [
    "ControlInbox",
    "Delivery",
    "DesiredModel",
    "EdgeDaemon",
    "Feedback",
    "Frame",
    "FrameSource",
    "Inspector",
    "JsonlDelivery",
    "ModelFollower",
    "ModelSlot",
    "MqttDelivery",
    "Outbox",
    "OutboxFullError",
    "OutboxWatch",
    "PendingVerdict",
    "RecentIds",
    "RunSummary",
    "ShadowDisagreement",
    "ShadowRunner",
    "SourceHealth",
    "SwapCheck",
    "SwapGuard",
    "Trigger",
    "frame_from_image",
    "make_delivery",
    "open_source",
    "parse_control",
    "prepare_model",
]
