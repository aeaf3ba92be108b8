"""The latency benchmark runs on the tiny model and writes its three reports; no time is asserted."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from lineguard.benchmarks.cli import bench
from lineguard.benchmarks.latency import EDGE_STAGES, run_latency_benchmark, write_report


def test_benchmark_reports_every_stage_and_the_ratio_to_ultralytics(tiny_model: Path, tmp_path: Path) -> None:
    report = run_latency_benchmark(
        tiny_model / "model.onnx", frames=4, warmup=1, frame_size=(320, 240), backend="onnxruntime"
    )
    assert set(EDGE_STAGES) <= set(report.edge)
    assert all(report.edge[stage].n == 4 for stage in EDGE_STAGES)
    assert report.ultralytics["predict"].n == 4
    assert report.ratios["ultralytics_predict_over_edge_frame_to_verdict"] > 0
    paths = write_report(report, tmp_path)
    data = json.loads(paths["json"].read_text())
    assert data["settings"]["imgsz"] == 160
    assert "| edge | inference |" in paths["markdown"].read_text()
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


def test_bench_latency_command_writes_into_out(tiny_model: Path, tmp_path: Path) -> None:
    args = ["latency", "--model", str(tiny_model / "model.onnx"), "--frames", "3", "--frame-size", "200x100"]
    result = CliRunner().invoke(bench, [*args, "--no-ultralytics", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "latency.json",
        "latency.md",
        "latency.png",
    ]
