"""A production promotion gives the Label Studio tasks waiting for QA the new model's boxes.

Against the real server: after each promotion the waiting tasks carry the new version's
prediction next to the older ones, and the annotated task is left alone. With Label Studio down
the promotion still happens and says so in one warning line.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.label_studio import LabelStudioInfo, predictions_by_unit, seed_tasks_in_waiting
from support.mosquitto import free_port

from lineguard.cli import main
from lineguard.labeling import LabelStudioClient, Project
from lineguard.registry import Registry, Stage
from lineguard.synthetic import CLASSES


def config(tmp_path: Path, url: str, token: str, project: str) -> Path:
    token_file = tmp_path / "ls-token"
    token_file.write_text(token + "\n")
    path = tmp_path / "lineguard.yaml"
    path.write_text(
        f"registry:\n  root: {tmp_path / 'reg'}\n"
        f"sampling:\n  label_studio_url: {url}\n  label_studio_token_file: {token_file}\n"
        f"  label_studio_project: {project}\n"
    )
    return path


@pytest.fixture
def waiting_project(label_studio: LabelStudioInfo) -> Iterator[Project]:
    client = LabelStudioClient(label_studio.url, label_studio.token)
    project, _ = client.ensure_project(f"test-promote-{uuid.uuid4().hex[:10]}", list(CLASSES))
    seed_tasks_in_waiting(label_studio, project.id, "station:0.9")
    yield project
    client.delete_project(project.id)
    client.close()


@pytest.mark.labelstudio
def test_each_production_promotion_adds_its_prediction_to_the_waiting_tasks(
    tmp_path: Path,
    label_studio: LabelStudioInfo,
    waiting_project: Project,
    models: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = config(tmp_path, label_studio.url, label_studio.token, waiting_project.title)
    base = ["registry", "--config", str(cfg)]
    for key in ("weak", "good"):
        assert main([*base, "add", str(models[key])]) == 0
    assert main([*base, "promote", "signal:1.0.0", "--to", "production", "--no-publish"]) == 0
    assert "refreshed 2 waiting tasks with signal:1.0.0" in capsys.readouterr().out
    forced = ["--force", "--reason", "test", "--no-publish"]
    assert main([*base, "promote", "signal:2.0.0", "--to", "production", *forced]) == 0
    assert "refreshed 2 waiting tasks with signal:2.0.0" in capsys.readouterr().out

    seen = predictions_by_unit(label_studio, waiting_project.id)
    for unit in ("w0", "w1"):
        assert sorted(seen[unit]) == ["signal:1.0.0", "signal:2.0.0", "station:0.9"]
        assert seen[unit]["signal:2.0.0"], f"production drew no box on defective unit {unit}"
    assert seen["a0"] == {"station:0.9": []}


def test_promotion_stands_with_one_warning_line_when_label_studio_is_down(
    tmp_path: Path, models: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(tmp_path, f"http://127.0.0.1:{free_port()}", "t" * 40, "qa")
    base = ["registry", "--config", str(cfg)]
    assert main([*base, "add", str(models["weak"])]) == 0
    assert main([*base, "promote", "signal:1.0.0", "--to", "production", "--no-publish"]) == 0
    out = capsys.readouterr().out
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "not refreshed" in warnings[0] and "not reachable" in warnings[0], out
    assert Registry(tmp_path / "reg").get("signal", "1.0.0").stage is Stage.PRODUCTION
