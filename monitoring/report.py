"""The monitoring report: one self-contained HTML page of a station's metrics over time.

A quality engineer without Grafana wants to see, for a shift, how fast the station decided, what
it decided and whether the line drifted. From a series of scrapes (see ``scrape``) this module
computes per-interval rates of counters, quantiles of histograms (interpolated within buckets as
Prometheus' ``histogram_quantile`` does) and gauge values, draws them with matplotlib's Agg
canvas and embeds the PNGs as base64, so the page is one file that mails and archives well.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

from lineguard.errors import InputError, MissingDependencyError
from lineguard.monitoring.scrape import Scrape

__all__ = ["Series", "counter_rates", "gauge_values", "histogram_quantiles", "render_report", "write_report"]

# label value -> (unix times, values)
Series = dict[str, tuple[list[float], list[float]]]


def _grouped(scrape: Scrape, name: str, by: str, match: dict[str, str] | None = None) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for s in scrape.select(name):
        if match and any(s.label(k) != v for k, v in match.items()):
            continue
        totals[s.label(by) if by else "all"] += s.value
    return totals


def counter_rates(
    scrapes: Sequence[Scrape], name: str, by: str = "", match: dict[str, str] | None = None
) -> Series:
    """Per-second increase of counter ``name`` between consecutive scrapes, summed by label ``by``."""
    out: Series = {}
    for prev, cur in pairwise(scrapes):
        dt = cur.ts - prev.ts
        if dt <= 0:
            continue
        before, after = _grouped(prev, name, by, match), _grouped(cur, name, by, match)
        for key, value in after.items():
            old = before.get(key, 0.0)
            delta = value - old if value >= old else value  # a counter reset restarts from 0
            times, values = out.setdefault(key, ([], []))
            times.append(cur.ts)
            values.append(delta / dt)
    return out


def gauge_values(scrapes: Sequence[Scrape], name: str, by: str = "") -> Series:
    out: Series = {}
    for scrape in scrapes:
        for key, value in _grouped(scrape, name, by).items():
            times, values = out.setdefault(key, ([], []))
            times.append(scrape.ts)
            values.append(value)
    return out


def _bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """``histogram_quantile`` on cumulative ``(le, count)`` pairs sorted by ``le``."""
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    rank = q * buckets[-1][1]
    lower_le, lower_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return lower_le  # above the top finite bucket: report its bound, as Prometheus does
            if count == lower_count:
                return le
            return lower_le + (le - lower_le) * (rank - lower_count) / (count - lower_count)
        lower_le, lower_count = le, count
    return lower_le


def histogram_quantiles(scrapes: Sequence[Scrape], family: str, q: float, by: str = "") -> Series:
    """Quantile ``q`` of histogram ``family`` over each interval between scrapes, by label ``by``."""
    out: Series = {}

    def cumulative(scrape: Scrape) -> dict[str, dict[float, float]]:
        table: dict[str, dict[float, float]] = defaultdict(dict)
        for s in scrape.select(family + "_bucket"):
            key = s.label(by) if by else "all"
            le = float(s.label("le"))
            table[key][le] = table[key].get(le, 0.0) + s.value
        return table

    for prev, cur in pairwise(scrapes):
        before, after = cumulative(prev), cumulative(cur)
        for key, buckets in after.items():
            old = before.get(key, {})
            deltas = sorted((le, count - old.get(le, 0.0)) for le, count in buckets.items())
            if any(d < 0 for _, d in deltas):  # reset: this interval's counts are the new totals
                deltas = sorted(buckets.items())
            times, values = out.setdefault(key, ([], []))
            times.append(cur.ts)
            values.append(_bucket_quantile(q, deltas))
    return out


def _plot(series_list: list[tuple[str, Series]], title: str, ylabel: str, empty_note: str) -> str:
    """One PNG (base64) with a line per series; a note instead of lines when there is no data."""
    try:
        from matplotlib.dates import DateFormatter
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingDependencyError("matplotlib", "train") from exc
    fig = Figure(figsize=(9, 3.4), dpi=90)
    ax = fig.add_subplot()
    drawn = 0
    for prefix, series in series_list:
        for key in sorted(series):
            times, values = series[key]
            if not any(math.isfinite(v) for v in values):
                continue
            days = [t / 86400.0 for t in times]  # matplotlib date numbers: days since 1970 UTC
            ax.plot(days, values, marker="o", markersize=3, label=f"{prefix}{key}".strip())
            drawn += 1
    if drawn:
        ax.legend(loc="upper left", fontsize=7, ncol=3)
        ax.xaxis.set_major_formatter(DateFormatter("%H:%M:%S", tz=UTC))  # type: ignore[no-untyped-call]
    else:
        ax.text(0.5, 0.5, empty_note, ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.set_xlabel("time (UTC)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _last(scrape: Scrape, name: str) -> str:
    values = [s.value for s in scrape.select(name)]
    return "—" if not values else f"{sum(values):g}"


def _summary_rows(scrapes: Sequence[Scrape]) -> list[tuple[str, str]]:
    first, last = scrapes[0], scrapes[-1]
    span = last.ts - first.ts
    rows = [
        ("source", last.url or "history file"),
        ("scrapes", f"{len(scrapes)} over {span:.0f} s"),
        ("last scrape (UTC)", datetime.fromtimestamp(last.ts, UTC).isoformat(timespec="seconds")),
    ]
    for s in last.select("lineguard_model_info"):
        rows.append(("model", ", ".join(f"{k}={v}" for k, v in s.labels)))
    verdicts = _grouped(last, "lineguard_verdicts_total", "verdict")
    rows.append(("verdicts (total)", ", ".join(f"{k} {v:g}" for k, v in sorted(verdicts.items())) or "—"))
    for label, name in (
        ("camera up", "lineguard_camera_up"),
        ("broker up", "lineguard_broker_up"),
        ("deadline misses (total)", "lineguard_deadline_misses_total"),
        ("outbox pending", "lineguard_outbox_pending"),
        ("outbox oldest age (s)", "lineguard_outbox_oldest_age_seconds"),
        ("review queue", "lineguard_review_queue_pending"),
    ):
        rows.append((label, _last(last, name)))
    levels = {s.label("signal"): int(s.value) for s in last.select("lineguard_drift_alarm")}
    names = {0: "ok", 1: "warning", 2: "alarm"}
    raised = [f"{sig}: {names.get(v, v)}" for sig, v in sorted(levels.items()) if v]
    rows.append(("drift", ", ".join(raised) if raised else f"ok ({len(levels)} signals)"))
    return rows


def render_report(scrapes: Sequence[Scrape], title: str = "lineguard station report") -> str:
    """The HTML page for ``scrapes`` (sorted by time; at least one)."""
    if not scrapes:
        raise InputError("no metrics scrapes to report on; pass --url of a running edge or a --history file")
    need_two = "needs at least two scrapes"
    stage_p95 = histogram_quantiles(scrapes, "lineguard_stage_latency_seconds", 0.95, by="stage")
    decision = histogram_quantiles(scrapes, "lineguard_capture_to_decision_seconds", 0.95)
    if "all" in decision:
        stage_p95["capture to decision"] = decision["all"]
    latency_ms = {k: (t, [v * 1000 for v in vals]) for k, (t, vals) in stage_p95.items()}
    figures = [
        ("Latency", _plot([("", latency_ms)], "p95 latency per interval, by stage", "ms", need_two)),
        (
            "Verdict rates",
            _plot(
                [("", counter_rates(scrapes, "lineguard_verdicts_total", by="verdict"))],
                "verdicts per second",
                "units / s",
                need_two,
            ),
        ),
        (
            "Drift scores",
            _plot(
                [("", gauge_values(scrapes, "lineguard_drift_score", by="signal"))],
                "drift score by signal (PSI excess or rate |z|)",
                "score",
                "no drift signals exported",
            ),
        ),
        (
            "Delivery",
            _plot(
                [
                    ("pending ", gauge_values(scrapes, "lineguard_outbox_pending")),
                    ("oldest age s ", gauge_values(scrapes, "lineguard_outbox_oldest_age_seconds")),
                ],
                "outbox: unacknowledged verdicts and the oldest one's age",
                "count / s",
                "no outbox metrics",
            ),
        ),
    ]
    rows = "\n".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in _summary_rows(scrapes)
    )
    note = (
        "<p><strong>One scrape only: latency and verdict rates need at least two.</strong></p>\n"
        if len(scrapes) < 2
        else ""
    )
    sections = "\n".join(
        f'<h2>{html.escape(name)}</h2>\n<img alt="{html.escape(name)}" src="data:image/png;base64,{png}">'
        for name, png in figures
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>\n<style>body{{font-family:sans-serif;margin:2em}}"
        "th{text-align:left;padding-right:1em}img{max-width:100%}</style></head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n<table>\n{rows}\n</table>\n{note}{sections}\n</body></html>\n"
    )


def write_report(scrapes: Sequence[Scrape], out: Path, title: str = "lineguard station report") -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_report(scrapes, title))
    return out
