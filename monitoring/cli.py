"""``lineguard monitor``: monitoring commands for people at a workstation (the edge needs none).

``monitor report`` scrapes a station's ``/metrics`` a few times, or reads a history of earlier
scrapes, and writes one HTML page with plots of latency, verdict rates and drift over time. Given
both ``--url`` and ``--history`` it appends the new scrapes to the history first, so running it
from cron builds a record of the shift.
"""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["monitor"]


@click.group()
def monitor() -> None:
    """Drift and metrics reports."""


@monitor.command()
@click.option("--url", default=None, help="Edge HTTP base URL, e.g. http://edge:8080 (scrapes /metrics).")
@click.option(
    "--history",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="JSON-lines file of scrapes: read it; with --url, append the new scrapes to it first.",
)
@click.option("--scrapes", type=click.IntRange(1, 10_000), default=5, show_default=True)
@click.option(
    "--interval", type=click.FloatRange(0.0, 3600.0), default=5.0, show_default=True, help="Seconds."
)
@click.option("--timeout", type=click.FloatRange(0.1, 120.0), default=5.0, show_default=True, help="Seconds.")
@click.option("--title", default="lineguard station report", show_default=True)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("report.html"),
    show_default=True,
)
def report(
    url: str | None,
    history: Path | None,
    scrapes: int,
    interval: float,
    timeout: float,
    title: str,
    out: Path,
) -> None:
    """Write an HTML report of latency, verdict rates and drift over time."""
    from lineguard.errors import InputError
    from lineguard.monitoring.report import write_report
    from lineguard.monitoring.scrape import append_history, load_history, scrape_series

    if url is None and history is None:
        raise InputError("monitor report needs --url of a running edge or a --history file (or both)")
    taken = []
    if url is not None:
        click.echo(f"scraping {url} {scrapes} times, {interval:g} s apart", err=True)
        taken = scrape_series(url, scrapes, interval, timeout_s=timeout)
    if history is not None:
        if taken:
            append_history(history, taken)
        series = load_history(history)
    else:
        series = taken
    write_report(series, out, title)
    click.echo(f"wrote {out} ({len(series)} scrapes)")
