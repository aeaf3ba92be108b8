"""Fresh predictions for work in waiting, against a real Label Studio and a model that sees defects.

A project holds what the station left: two defective units waiting for QA and one QA already
confirmed, each with the old model's prediction. Refreshing with a new model must put its boxes
beside the old prediction on the waiting tasks only, add nothing on a second run, count a task
whose image is too large or gone without stopping, and say in one line when the server refuses
the token.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.label_studio import LabelStudioInfo, predictions_by_unit, seed_tasks_in_waiting
from support.signal_model import build_signal_onnx

from lineguard.config import ModelConfig
from lineguard.inference import Detector
from lineguard.labeling import LabelStudioClient, Project, refresh_predictions
from lineguard.synthetic import CLASSES

pytestmark = pytest.mark.labelstudio

OLD = "signal:1.0.0"


@pytest.fixture(scope="module")
def new_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_signal_onnx(tmp_path_factory.mktemp("signal") / "v2", version="2.0.0")


@pytest.fixture
def ls_client(label_studio: LabelStudioInfo) -> Iterator[LabelStudioClient]:
    client = LabelStudioClient(label_studio.url, label_studio.token)
    yield client
    client.close()


@pytest.fixture
def waiting_project(label_studio: LabelStudioInfo, ls_client: LabelStudioClient) -> Iterator[Project]:
    """Two tasks waiting for QA (w0, w1) and one annotated (a0), all with OLD's prediction."""
    project, _ = ls_client.ensure_project(f"test-refresh-{uuid.uuid4().hex[:10]}", list(CLASSES))
    seed_tasks_in_waiting(label_studio, project.id, OLD)
    yield project
    ls_client.delete_project(project.id)


def test_waiting_tasks_get_the_new_models_boxes_beside_the_old_prediction_once(
    label_studio: LabelStudioInfo, ls_client: LabelStudioClient, waiting_project: Project, new_model: Path
) -> None:
    (gone,) = ls_client.import_tasks(
        waiting_project.id,
        [{"data": {"image": f"/data/upload/{waiting_project.id}/gone.jpg", "unit_id": "gone"}}],
    )
    with Detector.load(new_model, ModelConfig()) as detector:
        too_small = refresh_predictions(ls_client, waiting_project.title, detector, max_image_bytes=100)
        assert (too_small.waiting, too_small.refreshed, len(too_small.failed)) == (3, 0, 3)
        assert all("over 100 bytes" in why for task, why in too_small.failed.items() if task != gone)

        lines: list[str] = []
        report = refresh_predictions(
            ls_client, waiting_project.title, detector, page_size=1, progress=lines.append
        )
        again = refresh_predictions(ls_client, waiting_project.title, detector)

    # Label Studio 1.23.2 answers 500 for an upload it has no record of.
    assert report.summary().startswith(
        f"refreshed 2 waiting tasks with signal:2.0.0; 1 failed (task {gone}: "
        "Label Studio cannot serve the task's image (HTTP "
    )
    assert lines[-1] == "3/3 tasks done"
    assert (again.refreshed, again.already, list(again.failed)) == (0, 2, [gone])
    seen = predictions_by_unit(label_studio, waiting_project.id)
    assert sorted(seen) == ["a0", "gone", "w0", "w1"]
    assert seen["gone"] == {}
    for unit in ("w0", "w1"):
        assert sorted(seen[unit]) == [OLD, "signal:2.0.0"]
        assert seen[unit][OLD] == []  # the old prediction is kept as it was
        assert seen[unit]["signal:2.0.0"], f"the new model drew no box on defective unit {unit}"
        assert set(seen[unit]["signal:2.0.0"]) <= set(CLASSES)
    assert seen["a0"] == {OLD: []}  # QA's finished task is left alone


def run_label_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY")}
    return subprocess.run(
        [sys.executable, "-m", "lineguard.cli", "label", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )


def test_cli_refreshes_from_the_station_config_and_a_refused_token_is_one_line(
    tmp_path: Path, label_studio: LabelStudioInfo, waiting_project: Project, new_model: Path
) -> None:
    token = tmp_path / "ls-token"
    token.write_text(label_studio.token + "\n")
    station = tmp_path / "station.yaml"
    station.write_text(
        f"station:\n  data_dir: {tmp_path / 'var'}\nsampling:\n  label_studio_url: {label_studio.url}\n"
        f"  label_studio_token_file: {token}\n  label_studio_project: {waiting_project.title}\n"
    )
    out = run_label_cli("refresh", "--config", str(station), "--model", str(new_model))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "refreshed 2 waiting tasks with signal:2.0.0"

    token.write_text("0" * 40 + "\n")
    out = run_label_cli("refresh", "--config", str(station), "--model", str(new_model))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "refused the token" in lines[0], out.stderr
