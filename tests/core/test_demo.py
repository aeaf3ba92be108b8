"""``lineguard demo`` end to end on a pre-cached model: verdicts, the summary table, a rerun."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.label_studio import LabelStudioInfo
from support.mosquitto import free_port

from lineguard.demo import DemoSettings
from lineguard.labeling import LabelStudioClient
from lineguard.labeling.review_outbox import read_stats


def _demo(
    cache: Path, out: Path, port: int, label_studio: LabelStudioInfo | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABEL_STUDIO_")}
    if label_studio is not None:
        env |= {"LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": label_studio.token}
        env["LINEGUARD_SAMPLING__AUDIT_SHARE"] = "1"  # the random tiny model doubts nothing: audit all
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "lineguard.cli",
            "demo",
            "--units",
            "30",
            "--out",
            str(out),
            "--mqtt-port",
            str(port),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env={**env, "LINEGUARD_CACHE_DIR": str(cache)},
    )


def test_demo_scores_every_unit_and_can_run_again(tmp_path: Path, tiny_model: Path) -> None:
    cache = tmp_path / "cache"
    shutil.copytree(tiny_model, cache / "demo" / DemoSettings().key() / "model")  # skip training
    no_broker = free_port()
    first = _demo(cache, tmp_path / "out", no_broker)
    assert first.returncode == 0, first.stderr[-2000:]
    assert f"no MQTT broker at 127.0.0.1:{no_broker}: verdicts go to" in first.stdout
    assert "  units          30" in first.stdout
    # Which precision the station runs, and why (the tiny model's card lists no faster variant).
    assert any(
        line.startswith("  model ") and line.endswith(": auto: fp32") for line in first.stdout.splitlines()
    )
    for row in ("escape rate", "overkill rate", "latency p99", "sample verdicts"):
        assert row in first.stdout
    assert len(list((tmp_path / "out").glob("*/sample_verdicts.png"))) == 1
    verdict_files = list((tmp_path / "out").glob("*/verdicts.jsonl"))
    assert len(verdict_files) == 1 and len(verdict_files[0].read_text().splitlines()) == 30
    again = _demo(cache, tmp_path / "out", no_broker)  # the registry already holds the model
    assert again.returncode == 0, again.stderr[-2000:]


@pytest.mark.labelstudio
def test_demo_sends_doubtful_frames_to_its_own_label_studio_project(
    tmp_path: Path, tiny_model: Path, label_studio: LabelStudioInfo
) -> None:
    client = LabelStudioClient(label_studio.url, label_studio.token)
    stale = client.find_project("lineguard demo")
    if stale is not None:  # an earlier run's tasks would blur the count below
        client.delete_project(stale.id)
    cache = tmp_path / "cache"
    shutil.copytree(tiny_model, cache / "demo" / DemoSettings().key() / "model")
    run = _demo(cache, tmp_path / "out", free_port(), label_studio)
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"doubtful frames go to the review queue and Label Studio at {label_studio.url}" in run.stdout
    project = client.project("lineguard demo")
    assert project.classes == json.loads((tiny_model / "model_card.json").read_text())["classes"]
    (station,) = (tmp_path / "out").glob("*/station")
    queue = read_stats(station / "review")
    assert queue is not None and queue.sent + queue.depth > 0, "no frame was sampled for review"
    assert client.project_counts(project.id)["tasks"] == queue.sent  # the rest wait, none lost
    client.close()
