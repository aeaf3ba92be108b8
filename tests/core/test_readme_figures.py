"""The figures README.md publishes are the ones in the results files it points to.

A figure typed into the README drifts from the run that made it; each quoted figure here is read
from its file in ``benchmarks/results/``, rounded as printed, and must appear in the README.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"


def _truth(data: dict[str, Any], imgsz: int, label: str) -> dict[str, Any]:
    """One variant of a several-sizes latency report, by its size and its label."""
    (report,) = [r for r in data["reports"] if r["settings"]["imgsz"] == imgsz]
    return _trained(report, label)


def _trained(data: dict[str, Any], label: str) -> dict[str, Any]:
    """One variant of a one-size latency report, by its label."""
    (only,) = [v for v in data["variants"] if v["label"].startswith(label)]
    return only  # type: ignore[no-any-return]


# (results file, what the README says with {} for the figure, the figure read from the file)
FIGURES: list[tuple[str, str, Callable[[dict[str, Any]], str]]] = [
    (
        "latency_160_avx2.json",
        "committed verdict in {} ms (p50, as configured here",
        lambda d: f"{_trained(d, 'default')['stages']['frame_to_verdict']['p50_ms']:.1f}",
    ),
    (
        "latency_160_avx2.json",
        "`precision: auto` ran OpenVINO {}",
        lambda d: _trained(d, "default")["label"].removeprefix("default (auto → openvino ").rstrip(")"),
    ),
    (
        "latency_160_avx2.json",
        "at load; bf16 needs avx512_bf16 or AMX), {}x faster than ultralytics predict",
        lambda d: f"{_trained(d, 'default')['ratios']['predict_over_frame_to_verdict']:.2f}",
    ),
    (
        "latency_160_avx2.json",
        "MQTT hop included, costs {} ms",
        lambda d: f"{_trained(d, 'default')['stages']['overhead_e2e_fsync']['p50_ms']:.1f}",
    ),
    (
        "opcua.json",
        "sees each verdict within {} ms of its MQTT arrival",
        lambda d: f"{d['mirror_delay']['abs_p50_ms']:.1f}",
    ),
    (
        "opcua.json",
        "`Trigger` answers in {} ms (p50",
        lambda d: f"{d['trigger_round_trip']['p50_ms']:.1f}",
    ),
    (
        "flywheel.json",
        "from a median {}% back to",
        lambda d: f"{100 * d['spread']['condition_b_before_retrain']['accuracy']['median']:.1f}",
    ),
    (
        "flywheel.json",
        "back to {}% unit accuracy",
        lambda d: f"{100 * d['spread']['condition_b_after_retrain']['accuracy']['median']:.1f}",
    ),
    (
        "latency_truth.json",
        "as configured here is {}x faster than ultralytics predict",
        lambda d: f"{_truth(d, 640, 'default')['ratios']['predict_over_frame_to_verdict']:.2f}",
    ),
    (
        "latency_truth.json",
        "OpenVINO bf16 {}x,",
        lambda d: f"{_truth(d, 640, 'openvino bf16')['ratios']['predict_over_frame_to_verdict']:.2f}",
    ),
    (
        "latency_truth.json",
        "its inference takes {}x the time",
        lambda d: f"{_truth(d, 640, 'openvino bf16')['floor_ratio']:.2f}",
    ),
    (
        "latency_640_trained.json",
        "picks bf16 and is {}x faster than ultralytics predict",
        lambda d: f"{_trained(d, 'default')['ratios']['predict_over_frame_to_verdict']:.2f}",
    ),
    (
        "latency_640_trained.json",
        "its certified INT8 variant is {}x",
        lambda d: f"{_trained(d, 'openvino int8')['ratios']['predict_over_frame_to_verdict']:.2f}",
    ),
    (
        "latency_640_trained_avx2.json",
        "runs it and is {}x faster than ultralytics predict",
        lambda d: f"{_trained(d, 'default')['ratios']['predict_over_frame_to_verdict']:.2f}",
    ),
    (
        "latency_640_trained_avx2.json",
        "its inference takes {}x its int8 floor time",
        lambda d: f"{_trained(d, 'default')['floor_ratio']:.2f}",
    ),
    (
        "latency_640_trained_avx2.json",
        "mAP50 {} vs 27.3)",
        lambda d: f"{100 * _trained(d, 'default')['map50']:.1f}",
    ),
    ("fleet_20.json", "3 canaries in {} s", lambda d: f"{d['good_rollout_s']:.1f}"),
    ("fleet_20.json", "FAILs every unit {} s after wave 1", lambda d: f"{d['bad_halt_s']:.1f}"),
]


@pytest.mark.parametrize(("name", "phrase", "figure"), FIGURES, ids=[p for _, p, _ in FIGURES])
def test_readme_quotes_the_results_file(
    name: str, phrase: str, figure: Callable[[dict[str, Any]], str]
) -> None:
    readme = " ".join((ROOT / "README.md").read_text().split())  # line breaks as the reader sees them
    value = figure(json.loads((RESULTS / name).read_text()))
    quoted = phrase.format(value)
    assert quoted in readme, f"README.md should say {quoted!r}, as benchmarks/results/{name} holds"
    assert "benchmarks/results/" in readme  # the README names where its figures come from


def _origins(data: dict[str, Any]) -> list[Any]:
    """Where a results file keeps its provenance: at the top, per report (several sizes), or per run."""
    if "provenance" in data:
        return [data["provenance"]]
    return [part.get("provenance") for part in data.get("reports", []) + data.get("runs", [])] or [None]


@pytest.mark.parametrize("name", sorted(p.name for p in RESULTS.glob("*.json")))
def test_every_results_file_names_its_date_revision_machine_and_command(name: str) -> None:
    for origin in _origins(json.loads((RESULTS / name).read_text())):
        assert origin, f"benchmarks/results/{name} has no provenance: rerun the command that made it"
        assert origin["date"] and origin["git_revision"] and origin["command"], name
        assert origin["machine"]["cpu"] and origin["machine"]["cores"], name
