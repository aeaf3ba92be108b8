"""Station logs: one JSON object per line, and libraries' request chatter kept out by default."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from lineguard.logs import QUIET_LIBRARIES, Events, setup_json_logging


@pytest.fixture
def library_levels() -> Iterator[None]:
    saved = {name: logging.getLogger(name).level for name in QUIET_LIBRARIES}
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


def _events(err: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def test_httpx_info_lines_are_left_out_at_info_but_warnings_stay(
    capsys: pytest.CaptureFixture[str], library_levels: None
) -> None:
    setup_json_logging("INFO")
    logging.getLogger("httpx").info('HTTP Request: POST http://ls/api/projects/1/import "HTTP/1.1 201"')
    logging.getLogger("urllib3.connectionpool").info("Starting new HTTP connection")
    logging.getLogger("httpx").warning("retrying")
    Events("lineguard.edge")(logging.INFO, "started", station="l1/s1")
    lines = _events(capsys.readouterr().err)
    assert [(r["logger"], r.get("event") or r.get("msg")) for r in lines] == [
        ("httpx", "retrying"),
        ("lineguard.edge", "started"),
    ]


def test_debug_level_lets_library_lines_through(
    capsys: pytest.CaptureFixture[str], library_levels: None
) -> None:
    setup_json_logging("DEBUG")
    logging.getLogger("httpx").info("HTTP Request: GET http://ls/api/version")
    assert [r["logger"] for r in _events(capsys.readouterr().err)] == ["httpx"]
