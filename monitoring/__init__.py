"""lineguard.monitoring: metric definitions, drift detection at the edge, alerts and reports."""

from lineguard.monitoring.alerts import ALERT_SCHEMA, Alert, AlertKind, AlertLevel
from lineguard.monitoring.drift import (
    IMAGE_SIGNALS,
    LEVEL_VALUES,
    DriftEvent,
    DriftLevel,
    DriftMonitor,
    next_level,
    psi,
    quantile_edges,
    two_proportion_z,
)
from lineguard.monitoring.metrics import LATENCY_BUCKETS_S, STAGES, Metrics

__all__ = [
    "ALERT_SCHEMA",
    "IMAGE_SIGNALS",
    "LATENCY_BUCKETS_S",
    "LEVEL_VALUES",
    "STAGES",
    "Alert",
    "AlertKind",
    "AlertLevel",
    "DriftEvent",
    "DriftLevel",
    "DriftMonitor",
    "Metrics",
    "next_level",
    "psi",
    "quantile_edges",
    "two_proportion_z",
]
