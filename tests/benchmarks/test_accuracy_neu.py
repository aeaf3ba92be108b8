"""The NEU-DET benchmark publishes the spread over its seed runs, each run's row beside it.

The benchmark itself trains for an hour on real data (never in tests); what a reader of
``benchmarks/results/neu_det_*.md`` relies on is that the headline figure is the median over every
seed file present, with the extremes, and that each run stays traceable to its revision and command.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lineguard.benchmarks.accuracy_neu import PUBLISHED, write_spread


def _run(seed: int, map50: float, validator: float | None, escape: float) -> dict[str, Any]:
    return {
        "provenance": {
            "date": "2026-12-03T12:00:00+00:00",
            "git_revision": f"{seed:040d}",
            "machine": {"cpu": "Test CPU", "cores": 2},
        },
        "command": f"python -m lineguard.benchmarks.accuracy_neu --seed {seed}",
        "model": "yolov8n.yaml",
        "imgsz": 256,
        "seed": seed,
        "epochs": 5 + seed,
        "train_seconds": 900.0,
        "ultralytics_val": None if validator is None else {"map50": validator},
        "pt": {"map50": map50, "map50_95": map50 / 3},
        "onnx": {"map50": map50},
        "calibration": {"escape_rate": escape, "no_decision_rate": 0.05, "split": "val"},
        "published": PUBLISHED["yolov8n"],
    }


def test_spread_is_min_median_max_over_every_seed_file(tmp_path: Path) -> None:
    runs = [_run(0, 0.30, 0.29, 0.04), _run(1, 0.20, None, 0.10), _run(2, 0.25, 0.27, 0.06)]
    for r in runs:
        (tmp_path / f"neu_det_yolov8n_256-seed{r['seed']}.json").write_text(json.dumps(r))
    (tmp_path / "neu_det_yolov8n_320-seed0.json").write_text(json.dumps(_run(0, 0.9, 0.9, 0.0)))

    summary = write_spread(tmp_path, "neu_det_yolov8n_256")

    assert summary["seeds"] == [0, 1, 2]  # the 320 px run is another benchmark
    assert summary["spread"]["mAP50 (.pt)"] == {"min": 0.20, "median": 0.25, "max": 0.30}
    # a run whose validator figure is missing is left out of that row, not counted as zero
    assert summary["spread"]["mAP50 (ultralytics' validator)"]["min"] == 0.27
    written = json.loads((tmp_path / "neu_det_yolov8n_256.json").read_text())
    assert [r["seed"] for r in written["runs"]] == [0, 1, 2]
    page = (tmp_path / "neu_det_yolov8n_256.md").read_text()
    assert "| mAP50 (.pt) | 25.0 (20.0 – 30.0) | 77.7 |" in page
    assert "| escape at calibrated thresholds | 6.0 (4.0 – 10.0) |" in page
    assert "measured on the val split the thresholds were chosen on" in page  # not passed off as held out
    for r in runs:  # each run traceable: its revision and exact command
        assert r["provenance"]["git_revision"][:12] in page
        assert f"`{r['command']}`" in page
