"""The Grafana dashboard: importable JSON whose every query names metrics the edge exports."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lineguard.monitoring import Metrics, metric_names_in, series_names

DASHBOARD = Path(__file__).resolve().parents[2] / "monitoring" / "grafana" / "lineguard.json"


def _panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from _panels(panel.get("panels", []))


def _load() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def test_dashboard_is_json_with_unique_panel_ids_and_a_datasource_input() -> None:
    doc = _load()
    ids = [p["id"] for p in _panels(doc["panels"])]
    assert len(ids) == len(set(ids))
    assert doc["uid"] and doc["title"]
    assert [i["name"] for i in doc["__inputs"]] == ["DS_PROMETHEUS"]


def test_every_query_names_only_metrics_the_edge_exports() -> None:
    known = series_names(Metrics())
    doc = _load()
    exprs = [t["expr"] for p in _panels(doc["panels"]) for t in p.get("targets", [])]
    exprs += [v["definition"] for v in doc["templating"]["list"] if v["type"] == "query"]
    assert exprs
    for expr in exprs:
        used = metric_names_in(expr)
        assert used, f"query names no lineguard metric: {expr}"
        assert used <= known, f"unknown metrics {sorted(used - known)} in: {expr}"


def test_dashboard_covers_latency_verdicts_drift_delivery_review_and_health() -> None:
    used = {
        name
        for p in _panels(_load()["panels"])
        for t in p.get("targets", [])
        for name in metric_names_in(t["expr"])
    }
    assert {
        "lineguard_stage_latency_seconds_bucket",
        "lineguard_verdicts_total",
        "lineguard_drift_score",
        "lineguard_outbox_pending",
        "lineguard_outbox_oldest_age_seconds",
        "lineguard_review_queue_pending",
        "lineguard_camera_up",
        "lineguard_broker_up",
    } <= used
