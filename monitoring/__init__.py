"""lineguard.monitoring: metric definitions, drift detection at the edge, alerts and reports."""

from lineguard.messages import ALERT_SCHEMA, Alert, AlertKind, AlertLevel, build_alert
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
from lineguard.monitoring.promql import metric_names_in, series_names
from lineguard.monitoring.report import (
    counter_rates,
    gauge_values,
    histogram_quantiles,
    render_report,
    write_report,
)
from lineguard.monitoring.scrape import (
    Sample,
    Scrape,
    append_history,
    fetch_metrics,
    load_history,
    metrics_url,
    scrape_series,
)

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
    "Sample",
    "Scrape",
    "append_history",
    "build_alert",
    "counter_rates",
    "fetch_metrics",
    "gauge_values",
    "histogram_quantiles",
    "load_history",
    "metric_names_in",
    "metrics_url",
    "next_level",
    "psi",
    "quantile_edges",
    "render_report",
    "scrape_series",
    "series_names",
    "two_proportion_z",
    "write_report",
]
