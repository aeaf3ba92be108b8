"""A real Label Studio for tests: the shared server CI starts, or a private one a test may stop.

The shared server is started once by ``scripts/label_studio.sh start`` (``make test`` does it),
which prints ``LABEL_STUDIO_URL``, ``LABEL_STUDIO_API_KEY`` and ``LABEL_STUDIO_DATA_DIR``. Tests
marked ``labelstudio`` get it through ``require_label_studio``: when it is not reachable they are
skipped with the command to start it, except in CI (``CI=true``), where that is a failure (and
under ``make test`` any skip fails the run). Fault
tests must not stop the shared server, so ``PrivateLabelStudio`` copies its migrated data folder
(the SQLite database through the backup API, so the copy is consistent) and runs a second server
on a free port from the copy, which starts in seconds instead of migrating for half a minute.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import cv2
import httpx
import pytest

from lineguard.synthetic import CLASSES, render_unit
from support.mosquitto import free_port

__all__ = [
    "SCRIPT",
    "GTBox",
    "LabelStudioInfo",
    "PrivateLabelStudio",
    "ls_result",
    "predictions_by_unit",
    "require_label_studio",
    "seed_tasks_in_waiting",
]

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "label_studio.sh"
_START_HINT = 'start one with: eval "$(scripts/label_studio.sh start)"'

GTBox = tuple[int, float, float, float, float]  # a YOLO label row: class, cx, cy, w, h (0..1)


def ls_result(
    boxes: Sequence[GTBox], size: int = 160, names: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """The rectangles a QA person would draw for ``boxes`` (class names from the synthetic line)."""
    labels = names if names is not None else [CLASSES[c] for c, *_ in boxes]
    return [
        {
            "from_name": "label",
            "to_name": "image",
            "type": "rectanglelabels",
            "original_width": size,
            "original_height": size,
            "value": {
                "x": 100 * (cx - w / 2),
                "y": 100 * (cy - h / 2),
                "width": 100 * w,
                "height": 100 * h,
                "rotation": 0,
                "rectanglelabels": [name],
            },
        }
        for (_, cx, cy, w, h), name in zip(boxes, labels, strict=True)
    ]


@dataclass(frozen=True)
class LabelStudioInfo:
    url: str
    token: str
    data_dir: Path | None


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"Label Studio is required in CI: {reason}", pytrace=False)
    pytest.skip(f"Label Studio not available: {reason}; {_START_HINT}")


def _answers(url: str, token: str) -> str:
    """Empty when the server answers this token, else why not."""
    try:
        resp = httpx.get(
            f"{url}/api/projects",
            params={"page_size": 1},
            headers={"Authorization": f"Token {token}"},
            timeout=5,
        )
    except httpx.HTTPError as exc:
        return f"{url} does not answer ({type(exc).__name__})"
    if resp.status_code != 200:
        return f"{url} answered HTTP {resp.status_code} to the token in LABEL_STUDIO_API_KEY"
    return ""


def require_label_studio() -> LabelStudioInfo:
    """The shared server from the environment, or skip (fail in CI) saying how to start it."""
    url = os.environ.get("LABEL_STUDIO_URL", "").rstrip("/")
    token = os.environ.get("LABEL_STUDIO_API_KEY", "")
    if not url or not token:
        _unavailable("LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY are not set")
    problem = _answers(url, token)
    if problem:
        _unavailable(problem)
    data = os.environ.get("LABEL_STUDIO_DATA_DIR")
    return LabelStudioInfo(url, token, Path(data) if data else None)


@dataclass
class PrivateLabelStudio:
    """A second Label Studio process of this test's own, from a copy of the shared data folder."""

    workdir: Path
    shared: LabelStudioInfo
    port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        source = self.shared.data_dir
        if source is None or not (source / "label_studio.sqlite3").is_file():
            _unavailable("LABEL_STUDIO_DATA_DIR does not name a migrated data folder")
        self.data = self.workdir / "label-studio"
        (self.data / "media").mkdir(parents=True, exist_ok=True)
        with (
            sqlite3.connect(source / "label_studio.sqlite3") as src,
            sqlite3.connect(self.data / "label_studio.sqlite3") as dst,
        ):
            src.backup(dst)
        if (source / ".env").is_file():
            shutil.copy2(source / ".env", self.data / ".env")
        self.url = f"http://127.0.0.1:{self.port}"

    def _script(self, command: str) -> None:
        env = os.environ | {
            "LS_PORT": str(self.port),
            "LS_DATA_DIR": str(self.data),
            "LS_TOKEN": self.shared.token,
            "LS_START_TIMEOUT": "240",
        }
        subprocess.run([str(SCRIPT), command], env=env, check=True, stdout=subprocess.DEVNULL, timeout=300)

    def start(self) -> PrivateLabelStudio:
        self._script("start")
        return self

    def stop(self) -> None:
        self._script("stop")


def _auth(info: LabelStudioInfo) -> dict[str, str]:
    return {"Authorization": f"Token {info.token}"}


def seed_tasks_in_waiting(
    info: LabelStudioInfo, project_id: int, old_version: str, *, waiting: int = 2, annotated: int = 1
) -> None:
    """Tasks as the station leaves them: defective units with ``old_version``'s (empty) prediction.

    Units ``w0..`` wait for QA; units ``a0..`` were annotated already (QA confirmed them good).
    """
    units: list[tuple[str, bytes]] = []
    i = 0
    while len(units) < waiting + annotated:
        unit = render_unit(11, i, imgsz=160, defect_rate=0.9)  # the signal model sees each
        i += 1
        if unit.labels:
            n = len(units)
            name = f"w{n}" if n < waiting else f"a{n - waiting}"
            units.append((name, cv2.imencode(".jpg", unit.image)[1].tobytes()))
    tasks = []
    for name, jpeg in units:
        resp = httpx.post(
            f"{info.url}/api/projects/{project_id}/import",
            params={"commit_to_project": "false"},
            files={"file": (f"{name}.jpg", jpeg, "image/jpeg")},
            headers=_auth(info),
            timeout=30,
        )
        resp.raise_for_status()
        upload = httpx.get(
            f"{info.url}/api/projects/{project_id}/file-uploads",
            params={"ids": f"[{resp.json()['file_upload_ids'][0]}]"},
            headers=_auth(info),
            timeout=30,
        ).json()[0]["file"]
        prediction = {"model_version": old_version, "score": 0.0, "result": []}
        tasks.append({"data": {"image": f"/data/{upload}", "unit_id": name}, "predictions": [prediction]})
    resp = httpx.post(
        f"{info.url}/api/projects/{project_id}/import",
        params={"return_task_ids": "true"},
        json=tasks,
        headers=_auth(info),
        timeout=30,
    )
    resp.raise_for_status()
    for task_id in resp.json()["task_ids"][waiting:]:
        done = httpx.post(
            f"{info.url}/api/tasks/{task_id}/annotations",
            json={"result": []},
            headers=_auth(info),
            timeout=30,
        )
        assert done.status_code == 201, done.text


def predictions_by_unit(info: LabelStudioInfo, project_id: int) -> dict[str, dict[str, list[str]]]:
    """unit_id -> {model_version: the class names of that prediction's boxes} for every task."""
    resp = httpx.get(
        f"{info.url}/api/tasks",
        params={"project": project_id, "fields": "all", "page_size": 100},
        headers=_auth(info),
        timeout=30,
    )
    resp.raise_for_status()
    found: dict[str, dict[str, list[str]]] = {}
    for task in resp.json()["tasks"]:
        versions = found.setdefault(task["data"]["unit_id"], {})
        for pred in task["predictions"]:
            assert pred["model_version"] not in versions, f"two predictions of {pred['model_version']}"
            versions[pred["model_version"]] = [r["value"]["rectanglelabels"][0] for r in pred["result"]]
    return found
