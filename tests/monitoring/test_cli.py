"""``lineguard monitor report`` against a live /metrics endpoint and a saved history."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lineguard.cli import main
from lineguard.monitoring import Metrics


@pytest.fixture
def edge_metrics() -> Iterator[tuple[str, Metrics]]:
    """A tiny HTTP server whose /metrics serves ``Metrics.render()``; each scrape adds 5 PASS verdicts."""
    metrics = Metrics()
    metrics.camera_up.set(1)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/metrics":
                self.send_error(404)
                return
            metrics.verdicts.labels(verdict="PASS", reason="no_defect").inc(5)
            metrics.observe_stage("inference", 0.011)
            body = metrics.render()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", metrics
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_report_from_a_live_edge_appends_history_and_writes_html(
    tmp_path: Path, edge_metrics: tuple[str, Metrics], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = edge_metrics
    out, history = tmp_path / "report.html", tmp_path / "history.jsonl"
    args = ["monitor", "report", "--url", url, "--scrapes", "3", "--interval", "0.1"]
    assert main([*args, "--history", str(history), "--out", str(out)]) == 0
    page = out.read_text()
    assert page.count("data:image/png;base64,") == 4
    assert "PASS 15" in page
    lines = [json.loads(line) for line in history.read_text().splitlines()]
    assert len(lines) == 3 and lines[0]["url"] == url + "/metrics"

    # a second run reports on the history alone, and a later scrape adds to it
    capsys.readouterr()
    assert main(["monitor", "report", "--history", str(history), "--out", str(out)]) == 0
    assert "(3 scrapes)" in capsys.readouterr().out
    assert len(history.read_text().splitlines()) == 3
    assert main([*args[:-4], "--scrapes", "1", "--history", str(history), "--out", str(out)]) == 0
    assert "(4 scrapes)" in capsys.readouterr().out
    assert len(history.read_text().splitlines()) == 4


def test_unreachable_edge_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from support.mosquitto import free_port

    url = f"http://127.0.0.1:{free_port()}"
    assert main(["monitor", "report", "--url", url, "--out", str(tmp_path / "r.html")]) == 2
    progress, error = capsys.readouterr().err.strip().splitlines()
    assert progress.startswith("scraping")
    assert error.startswith(f"error: cannot reach {url}/metrics (")
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "needs --url of a running edge or a --history file"),
        (["--url", "edge:8080"], "must start with http://"),
        (["--history", "missing.jsonl"], "metrics history not found"),
    ],
)
def test_report_usage_mistakes_are_one_line_errors(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["monitor", "report", *args]) == 2
    assert message in capsys.readouterr().err


def test_a_corrupt_history_line_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    history = tmp_path / "h.jsonl"
    history.write_text('{"ts": 1, "text": ""}\nnot json\n')
    assert main(["monitor", "report", "--history", str(history), "--out", str(tmp_path / "r.html")]) == 2
    assert f"{history}:2 is not a metrics scrape" in capsys.readouterr().err
