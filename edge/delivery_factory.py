"""Picks the verdict sink from the config: MQTT when enabled, else the JSON-lines file.

Kept apart from ``delivery`` (the protocol and the JSON-lines sink) because it imports
``mqtt_delivery``, which itself builds on ``delivery``.
"""

from __future__ import annotations

from collections.abc import Callable

from lineguard.config import LineguardConfig
from lineguard.edge.control import DesiredModel, Feedback, InspectionControl, Trigger
from lineguard.edge.delivery import Delivery, JsonlDelivery
from lineguard.edge.outbox import Outbox
from lineguard.errors import MissingDependencyError
from lineguard.monitoring import Metrics

__all__ = ["make_delivery"]


def make_delivery(
    cfg: LineguardConfig,
    outbox: Outbox,
    metrics: Metrics,
    *,
    on_trigger: Callable[[Trigger], object] | None = None,
    on_feedback: Callable[[Feedback], object] | None = None,
    on_model: Callable[[DesiredModel], object] | None = None,
    on_control: Callable[[InspectionControl], object] | None = None,
) -> Delivery:
    """MQTT when ``mqtt.enabled``, else a JSON-lines file (``jsonl_path`` or ``data_dir/verdicts.jsonl``)."""
    if not cfg.mqtt.enabled:
        path = cfg.jsonl_path or cfg.station.data_dir / "verdicts.jsonl"
        return JsonlDelivery(path, outbox, metrics, warn_ratio=cfg.outbox.warn_ratio)
    try:
        from lineguard.edge.mqtt_delivery import MqttDelivery
    except ModuleNotFoundError as exc:
        if (exc.name or "").startswith("paho"):
            raise MissingDependencyError("paho-mqtt", "edge") from exc
        raise
    return MqttDelivery(
        cfg,
        outbox,
        metrics,
        on_trigger=on_trigger,
        on_feedback=on_feedback,
        on_model=on_model,
        on_control=on_control,
    )
