"""The HTML report: rates, quantiles and gauges over a history of scrapes, drawn as PNGs."""

from __future__ import annotations

import base64
import re

import pytest

from lineguard.errors import InputError
from lineguard.monitoring import (
    Metrics,
    Scrape,
    counter_rates,
    gauge_values,
    histogram_quantiles,
    render_report,
)


def _history(steps: int = 4) -> list[Scrape]:
    """Every 10 s: 20 PASS and 10 FAIL, inference takes 12 ms, brightness drifts upward."""
    m = Metrics()
    scrapes = []
    for i in range(steps):
        m.verdicts.labels(verdict="PASS", reason="no_defect").inc(20)
        m.verdicts.labels(verdict="FAIL", reason="defect").inc(10)
        for _ in range(30):
            m.observe_stage("inference", 0.012)
        m.drift_score.labels(signal="brightness").set(0.1 * i)
        m.drift_alarm.labels(signal="brightness").set(2 if i == steps - 1 else 0)
        scrapes.append(Scrape(ts=1_700_000_000 + 10 * i, text=m.render().decode()))
    return scrapes


def _pngs(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_counter_rates_are_per_second_between_scrapes() -> None:
    rates = counter_rates(_history(), "lineguard_verdicts_total", by="verdict")
    assert rates["PASS"][1] == pytest.approx([2.0, 2.0, 2.0])
    assert rates["FAIL"][1] == pytest.approx([1.0, 1.0, 1.0])


def test_counter_reset_counts_from_zero() -> None:
    a, b = _history(2)
    restarted = Scrape(ts=b.ts + 10, text=Metrics().render().decode())
    assert counter_rates([a, b, restarted], "lineguard_verdicts_total", by="verdict") == {
        "PASS": ([b.ts], [2.0]),
        "FAIL": ([b.ts], [1.0]),
    }


def test_histogram_quantile_interpolates_within_the_bucket_like_prometheus() -> None:
    # all 30 observations of 12 ms fall in (10 ms, 20 ms]: p95 = 10 + 10 * 0.95 ms
    p95 = histogram_quantiles(_history(), "lineguard_stage_latency_seconds", 0.95, by="stage")
    assert p95["inference"][1] == pytest.approx([0.0195] * 3)


def test_gauges_are_read_per_scrape() -> None:
    scores = gauge_values(_history(), "lineguard_drift_score", by="signal")
    assert scores["brightness"][1] == pytest.approx([0.0, 0.1, 0.2, 0.3])


def test_report_page_has_summary_and_four_png_plots() -> None:
    page = render_report(_history(), title="station s1")
    assert "<title>station s1</title>" in page
    assert "FAIL 40, PASS 80" in page
    assert "brightness: alarm" in page
    pngs = _pngs(page)
    assert len(pngs) == 4
    assert all(p.startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)


def test_one_scrape_gives_a_page_that_says_rates_need_two() -> None:
    page = render_report(_history(1))
    assert "latency and verdict rates need at least two" in page
    assert len(_pngs(page)) == 4
    assert "One scrape only" not in render_report(_history(2))


def test_no_scrapes_is_a_user_error() -> None:
    with pytest.raises(InputError, match="no metrics scrapes"):
        render_report([])
