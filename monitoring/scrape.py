"""Scrapes of an edge's ``/metrics`` and the JSON-lines history they are kept in.

The monitoring report needs metrics over time but must not need a Prometheus server: it scrapes
the station a few times itself, or reads a history file that earlier scrapes appended to (one
JSON object per line: ``{"ts": <unix seconds>, "url": ..., "text": <exposition text>}``). The raw
exposition text is kept, so a history file loses nothing and any later report can use it.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lineguard.errors import InputError

__all__ = [
    "Sample",
    "Scrape",
    "append_history",
    "fetch_metrics",
    "load_history",
    "metrics_url",
    "scrape_series",
]

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Labels
    value: float

    def label(self, key: str) -> str:
        return dict(self.labels).get(key, "")


@dataclass
class Scrape:
    """One scrape: when, from where, and the exposition text (parsed on first use)."""

    ts: float
    text: str
    url: str = ""
    _samples: list[Sample] | None = field(default=None, repr=False)

    @property
    def samples(self) -> list[Sample]:
        if self._samples is None:
            from prometheus_client.parser import text_string_to_metric_families

            try:
                self._samples = [
                    Sample(s.name, tuple(sorted(s.labels.items())), float(s.value))
                    for family in text_string_to_metric_families(self.text)
                    for s in family.samples
                ]
            except ValueError as exc:
                raise InputError(
                    f"metrics scraped at {self.ts:.0f} from {self.url or 'history'} are not in the "
                    f"Prometheus text format ({exc}); point --url at a lineguard edge"
                ) from exc
        return self._samples

    def select(self, name: str) -> list[Sample]:
        return [s for s in self.samples if s.name == name]

    def to_json(self) -> str:
        return json.dumps({"ts": self.ts, "url": self.url, "text": self.text})


def metrics_url(url: str) -> str:
    """``http://edge:8080`` -> ``http://edge:8080/metrics``; a URL ending in /metrics is kept."""
    if not url.startswith(("http://", "https://")):
        raise InputError(f"--url must start with http:// or https://; got {url!r} (e.g. http://edge:8080)")
    url = url.rstrip("/")
    return url if url.endswith("/metrics") else url + "/metrics"


def fetch_metrics(url: str, timeout_s: float = 5.0) -> Scrape:
    """One GET of ``/metrics``; an unreachable or non-2xx endpoint is an ``InputError``."""
    target = metrics_url(url)
    try:
        with urllib.request.urlopen(target, timeout=timeout_s) as resp:
            text = resp.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        raise InputError(f"{target} answered HTTP {exc.code}; is this a lineguard edge's HTTP port?") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise InputError(f"cannot reach {target} ({reason}); check the edge runs and http.port") from exc
    return Scrape(ts=time.time(), text=text, url=target)


def scrape_series(
    url: str,
    count: int,
    interval_s: float,
    *,
    timeout_s: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Scrape]:
    """``count`` scrapes ``interval_s`` apart."""
    scrapes = []
    for i in range(count):
        if i:
            sleep(interval_s)
        scrapes.append(fetch_metrics(url, timeout_s))
    return scrapes


def load_history(path: Path) -> list[Scrape]:
    """Read a JSON-lines history; a bad line is an ``InputError`` naming the line."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError as exc:
        raise InputError(f"metrics history not found: {path}") from exc
    scrapes = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            scrapes.append(Scrape(ts=float(obj["ts"]), text=str(obj["text"]), url=str(obj.get("url", ""))))
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(
                f"{path}:{number} is not a metrics scrape ({exc}); expected "
                '{"ts": <unix seconds>, "text": <exposition text>} per line'
            ) from exc
    scrapes.sort(key=lambda s: s.ts)
    return scrapes


def append_history(path: Path, scrapes: list[Scrape]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        for scrape in scrapes:
            fh.write(scrape.to_json() + "\n")
