"""``lineguard label`` as QA leads and station engineers run it."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import cv2
import pytest
from support.label_studio import LabelStudioInfo

from lineguard.labeling import LabelStudioClient, ReviewItem, ReviewQueue
from lineguard.messages import ModelCard, utc_now
from lineguard.synthetic import CLASSES, render_unit

_LS_ENV = ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "LINEGUARD_CONFIG")


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in _LS_ENV}
    return subprocess.run(
        [sys.executable, "-m", "lineguard.cli", "label", *args],
        capture_output=True,
        text=True,
        env=base | (env or {}),
        check=False,
        timeout=120,
    )


def station(tmp_path: Path, **sampling: str) -> Path:
    lines = "".join(f"  {k}: {v}\n" for k, v in sampling.items())
    path = tmp_path / "station.yaml"
    path.write_text(f"station:\n  data_dir: {tmp_path / 'var'}\nsampling:\n  max_queue: 50\n{lines}")
    return path


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ["setup", "--url", "http://127.0.0.1:9", "--token", "t", "--project", "p"],
            "exactly one of --classes",
        ),
        (["send"], "nothing to send"),
        (["setup", "--classes", "a", "--project", "p"], "no Label Studio URL"),
        (["setup", "--url", "ftp://x", "--token", "t", "--classes", "a"], "must start with http"),
        (["setup", "--url", "http://127.0.0.1:9", "--token", "t", "--classes", "a"], "not reachable"),
    ],
)
def test_mistakes_and_outages_are_one_line_with_exit_code_2(args: list[str], needle: str) -> None:
    out = run_cli(*args)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], out.stderr


def test_status_without_a_queue_or_server_says_so(tmp_path: Path) -> None:
    out = run_cli("status", "--config", str(station(tmp_path)))
    assert out.returncode == 0, out.stderr
    assert "none yet" in out.stdout and "not configured" in out.stdout


def test_status_counts_the_local_queue_while_label_studio_is_down(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("abc\n")
    cfg = station(tmp_path, label_studio_url="http://127.0.0.1:9", label_studio_token_file=str(token))
    queue = ReviewQueue(tmp_path / "var" / "review", max_items=50)
    for i in range(2):
        item = ReviewItem(
            review_id=f"r{i}", unit_id=f"u{i}", line="l", station="s", captured_at=utc_now(), reason="x"
        )
        queue.submit(render_unit(0, i, imgsz=64).image, item)
    assert queue.flush()
    queue.close()
    out = run_cli("status", "--config", str(cfg))
    assert out.returncode == 0, out.stderr
    assert "depth 2/50, sent 0, failed 0" in out.stdout
    assert "label studio: unavailable" in out.stdout


@pytest.mark.labelstudio
def test_setup_send_status_pull_against_label_studio(tmp_path: Path, label_studio: LabelStudioInfo) -> None:
    env = {"LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": label_studio.token}
    name = f"cli-{uuid.uuid4().hex[:8]}"
    card = tmp_path / "model_card.json"
    ModelCard(
        name="m", version="1", sha256="0" * 64, classes=list(CLASSES), input_size=160, thresholds={}
    ).save(card)
    client = LabelStudioClient(label_studio.url, label_studio.token)
    try:
        out = run_cli("setup", "--project", name, "--classes", "scratch,pit", env=env)
        assert out.returncode == 0, out.stderr
        assert "created" in out.stdout
        out = run_cli("setup", "--project", name, "--model-card", str(card), env=env)
        assert "updated" in out.stdout and "scratch, pit, crack, inclusion" in out.stdout
        assert client.project(name).classes == list(CLASSES)
        out = run_cli("setup", "--project", name, "--model-card", str(card), env=env)
        assert "unchanged" in out.stdout

        image = tmp_path / "U42.png"
        cv2.imwrite(str(image), render_unit(2, 0, imgsz=96).image)
        out = run_cli("send", "--project", name, str(image), env=env)
        assert out.returncode == 0, out.stderr
        cfg = station(tmp_path, label_studio_project=name)
        queue = ReviewQueue(tmp_path / "var" / "review", max_items=50)
        item = ReviewItem(
            review_id="q1", unit_id="U43", line="l", station="s", captured_at=utc_now(), reason="x"
        )
        queue.submit(render_unit(2, 1, imgsz=96).image, item)
        assert queue.flush()
        queue.close()
        out = run_cli("send", "--config", str(cfg), "--drain", env=env)
        assert "sent 1 queued frames; 0 left" in out.stdout, out.stderr

        out = run_cli("status", "--config", str(cfg), env=env)
        assert out.returncode == 0, out.stderr
        assert "depth 0/50, sent 1" in out.stdout
        assert "2 tasks, labeled 0, pending 2" in out.stdout

        out = run_cli("pull", "--project", name, "--out", str(tmp_path / "ds"), env=env)
        assert out.returncode == 0, out.stderr
        assert "nothing new" in out.stdout and "2 not labeled yet" in out.stdout
    finally:
        found = client.find_project(name)
        if found is not None:
            client.delete_project(found.id)
        client.close()
