"""Which series names ``Metrics`` exposes, and which lineguard names a PromQL expression uses.

Dashboards and alert rules name metrics in strings that no type checker reads; one renamed metric
silently blanks a panel or mutes an alert. These two functions let a test check every expression
in ``grafana/lineguard.json`` and ``prometheus/rules.yml`` against the metric definitions.
"""

from __future__ import annotations

import re

from lineguard.monitoring.metrics import Metrics

__all__ = ["metric_names_in", "series_names"]

_NAME = re.compile(r"(?<![A-Za-z0-9_:])(lineguard_[A-Za-z0-9_]+)")
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "gauge": ("",),
}


def series_names(metrics: Metrics) -> set[str]:
    """Every sample name the registry can expose (``_total``, ``_bucket``, ``_info``, ...)."""
    names: set[str] = set()
    for family in metrics.registry.collect():
        for suffix in _SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names


def metric_names_in(expr: str) -> set[str]:
    """The ``lineguard_*`` metric names a PromQL expression refers to (recording rules excluded)."""
    return set(_NAME.findall(expr))
