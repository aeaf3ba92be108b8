"""Label Studio client: project setup, review tasks with pre-annotations, export of annotations.

Built on label-studio-sdk 2.1.2's authenticated HTTP client (``core.client_wrapper``: it sends
legacy tokens and refreshes personal access tokens), calling the REST endpoints directly where the SDK's typed
methods fall short: it has no helper to upload image files, wants predictions as plain dicts and
ignores ``ids=`` on export. A task's image is an uploaded file (``/data/upload/...``), never a
``data:`` URL, which breaks Label Studio's YOLO export. Uploading is two steps (store the file
without a task, then import one task JSON that names it and carries the prediction), so a task
appears complete or not at all; ``review_id`` in the task data lets a retry find a task that was
created just before the connection dropped, so nothing is sent twice.

Errors: unreachable, timeouts, 5xx, 401/403/404 and 429 are ``DeliveryError`` (retry later); a
400/413/422 on a task is ``RefusedError`` (the payload itself is wrong).
"""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NoReturn
from xml.etree import ElementTree
from xml.sax.saxutils import quoteattr

from lineguard.config import SamplingConfig
from lineguard.errors import ConfigError, DeliveryError, InputError, MissingDependencyError
from lineguard.labeling.review_outbox import RefusedError, ReviewBox, ReviewItem
from lineguard.secrets import read_secret

__all__ = [
    "FROM_NAME",
    "MAX_IMAGE_BYTES",
    "MAX_PAGE_SIZE",
    "TO_NAME",
    "LabelStudioClient",
    "LabelStudioSink",
    "Project",
    "WaitingTask",
    "client_from_config",
    "label_config",
    "label_config_classes",
    "prediction",
    "read_token",
    "review_task",
    "sink_from_config",
]

FROM_NAME: Final = "label"
TO_NAME: Final = "image"
_REFUSED: Final = frozenset({400, 413, 415, 422})
MAX_IMAGE_BYTES: Final = 50 * 1024 * 1024  # a task image larger than this is not a camera frame
MAX_PAGE_SIZE: Final = 1000
_MAX_TEXT: Final = 2048  # longest task image URL or model_version kept from a task listing
_WAITING: Final = {
    "filters": {
        "conjunction": "and",
        "items": [
            {"filter": f"filter:tasks:{field}", "operator": "equal", "type": "Number", "value": 0}
            for field in ("total_annotations", "cancelled_annotations")
        ],
    }
}


def label_config(classes: list[str]) -> str:
    """The labeling interface: the image and one rectangle label per model class, in model order."""
    if not classes:
        raise InputError("a Label Studio project needs at least one class; pass --classes or --model-card")
    if len(set(classes)) != len(classes):
        raise InputError(f"class names must be unique; got {classes}")
    labels = "".join(f"    <Label value={quoteattr(name)}/>\n" for name in classes)
    return (
        "<View>\n"
        f'  <Image name="{TO_NAME}" value="$image" zoom="true"/>\n'
        f'  <RectangleLabels name="{FROM_NAME}" toName="{TO_NAME}">\n'
        f"{labels}"
        "  </RectangleLabels>\n"
        "</View>\n"
    )


def label_config_classes(config: str) -> list[str]:
    """Class names of the first RectangleLabels block, in config order."""
    try:
        root = ElementTree.fromstring(config)
    except ElementTree.ParseError as exc:
        raise InputError(f"the project's label config is not valid XML: {exc}") from exc
    block = root.find(".//RectangleLabels")
    if block is None:
        return []
    return [str(label.get("value")) for label in block.findall("Label") if label.get("value")]


def prediction(
    boxes: Sequence[ReviewBox], width: int, height: int, model_version: str, score: float
) -> dict[str, Any]:
    """A Label Studio prediction: ``boxes`` as percent rectangles, labelled with ``model_version``.

    ``model_version`` is what tells staff (and a later refresh) which model drew the boxes.
    """
    result = []
    for i, box in enumerate(boxes):
        x1, y1, x2, y2 = box.xyxy
        result.append(
            {
                "id": f"p{i}",
                "from_name": FROM_NAME,
                "to_name": TO_NAME,
                "type": "rectanglelabels",
                "original_width": width,
                "original_height": height,
                "image_rotation": 0,
                "value": {
                    "x": 100.0 * x1,
                    "y": 100.0 * y1,
                    "width": 100.0 * (x2 - x1),
                    "height": 100.0 * (y2 - y1),
                    "rotation": 0,
                    "rectanglelabels": [box.class_name],
                },
                "score": box.confidence,
            }
        )
    return {"model_version": model_version, "score": score, "result": result}


def review_task(item: ReviewItem, image_url: str) -> dict[str, Any]:
    """One task: the image, the unit's traceability fields, and the model's boxes as a prediction."""
    model = f"{item.model_name}:{item.model_version}" if item.model_name else "none"
    view = {"view": item.view} if item.view else {}  # several views: which camera's frame this is
    return {
        "data": view
        | {
            "image": image_url,
            "review_id": item.review_id,
            "unit_id": item.unit_id,
            "line": item.line,
            "station": item.station,
            "captured_at": item.captured_at.isoformat().replace("+00:00", "Z"),
            "reason": item.reason,
            "verdict": item.verdict,
            "model": model,
            "score": item.score,
        },
        "predictions": [prediction(item.boxes, item.width, item.height, model, item.score)],
    }


@dataclass(frozen=True)
class Project:
    id: int
    title: str
    classes: list[str]


@dataclass(frozen=True)
class WaitingTask:
    """A task nobody has annotated or skipped yet, and the models that already drew boxes on it."""

    id: int
    image_url: str
    model_versions: frozenset[str]


def _text(value: object) -> str:
    return value if isinstance(value, str) and len(value) <= _MAX_TEXT else ""


def _waiting_task(row: object) -> WaitingTask | None:
    """A listed task as a ``WaitingTask``; None for one annotated, skipped or malformed."""
    if not isinstance(row, dict) or row.get("total_annotations") or row.get("cancelled_annotations"):
        return None
    task_id = row.get("id")
    if not isinstance(task_id, int) or isinstance(task_id, bool):
        return None
    data = row.get("data")
    predictions = row.get("predictions")
    return WaitingTask(
        id=task_id,
        image_url=_text(data.get("image")) if isinstance(data, dict) else "",
        model_versions=frozenset(
            _text(p.get("model_version"))
            for p in (predictions if isinstance(predictions, list) else [])
            if isinstance(p, dict)
        ),
    )


class LabelStudioClient:
    """The few Label Studio calls lineguard makes, with errors mapped to lineguard's tree."""

    def __init__(self, url: str, token: str, *, timeout: float = 15.0) -> None:
        try:
            import httpx
            from label_studio_sdk.core.client_wrapper import SyncClientWrapper
        except ModuleNotFoundError as exc:
            raise MissingDependencyError("label_studio_sdk", "label") from exc
        if not url.startswith(("http://", "https://")):
            raise InputError(f"Label Studio URL must start with http:// or https://; got {url!r}")
        if not token:
            raise InputError("no Label Studio token; pass --token or set LABEL_STUDIO_API_KEY")
        self.url = url.rstrip("/")
        # The SDK's transport without ``LabelStudio`` itself, whose import pulls in pandas (~3 s
        # per CLI call). Retries are ours (the uploader backs off): the SDK must not retry too.
        wrapper = SyncClientWrapper(
            base_url=self.url,
            api_key=token,
            httpx_client=httpx.Client(timeout=timeout, follow_redirects=True),
            timeout=timeout,
            max_retries=0,
        )
        self._http = wrapper.httpx_client

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            resp = self._http.request(path, method=method, **kwargs)
        except httpx.HTTPError as exc:
            raise DeliveryError(
                f"Label Studio at {self.url} is not reachable ({type(exc).__name__}: {exc}); "
                "start it or fix the URL"
            ) from exc
        if resp.status_code < 300:
            if not resp.content:
                return None
            if resp.headers.get("content-type", "").startswith("application/json"):
                return resp.json()
            return resp.content
        self._raise_for(resp.status_code, resp.text[:300], method, path)

    def _raise_for(self, status: int, detail: str, method: str, path: str) -> NoReturn:
        detail = detail.replace("\n", " ")
        if status in (401, 403):
            raise DeliveryError(
                f"Label Studio at {self.url} refused the token (HTTP {status}); use a valid "
                "API token (legacy tokens need LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true)"
            )
        if status in _REFUSED:
            raise RefusedError(f"Label Studio refused {method} {path} (HTTP {status}): {detail}")
        raise DeliveryError(f"Label Studio {method} {path} failed (HTTP {status}): {detail}")

    # -- projects ------------------------------------------------------------------------------

    def find_project(self, title: str) -> Project | None:
        page = 1
        while True:
            body = self._call("GET", "/api/projects", params={"page": page, "page_size": 100})
            rows = body.get("results", []) if isinstance(body, dict) else body
            for row in rows:
                if row.get("title") == title:
                    return Project(int(row["id"]), title, label_config_classes(row.get("label_config", "")))
            if not isinstance(body, dict) or not body.get("next"):
                return None
            page += 1

    def project(self, title: str) -> Project:
        found = self.find_project(title)
        if found is None:
            raise DeliveryError(
                f"Label Studio at {self.url} has no project {title!r}; create it with "
                "'lineguard label setup --project NAME --classes ...'"
            )
        return found

    def ensure_project(self, title: str, classes: list[str]) -> tuple[Project, str]:
        """Create the project, or update its label config to ``classes``; say which happened."""
        config = label_config(classes)
        found = self.find_project(title)
        if found is None:
            body = self._call("POST", "/api/projects", json={"title": title, "label_config": config})
            return Project(int(body["id"]), title, list(classes)), "created"
        if found.classes == list(classes):
            return found, "unchanged"
        try:
            self._call("PATCH", f"/api/projects/{found.id}", json={"label_config": config})
        except RefusedError as exc:
            raise InputError(
                f"Label Studio would not change project {title!r} from classes {found.classes} to "
                f"{classes} (labels in use cannot be removed): {exc}"
            ) from exc
        return Project(found.id, title, list(classes)), "updated"

    def delete_project(self, project_id: int) -> None:
        self._call("DELETE", f"/api/projects/{project_id}")

    def project_counts(self, project_id: int) -> dict[str, int]:
        body = self._call("GET", f"/api/projects/{project_id}")
        tasks = int(body.get("task_number") or 0)
        labeled = int(body.get("num_tasks_with_annotations") or 0)
        return {
            "tasks": tasks,
            "labeled": labeled,
            "pending": max(0, tasks - labeled),
            "skipped": int(body.get("skipped_annotations_number") or 0),
        }

    # -- tasks ---------------------------------------------------------------------------------

    def upload_file(self, project_id: int, name: str, data: bytes, mime: str = "image/jpeg") -> str:
        """Store a file in the project without making a task; return its ``/data/upload/...`` URL."""
        body = self._call(
            "POST",
            f"/api/projects/{project_id}/import",
            params={"commit_to_project": "false"},
            files={"file": (name, data, mime)},
        )
        ids = body.get("file_upload_ids") if isinstance(body, dict) else None
        if not ids:
            raise DeliveryError(f"Label Studio stored no file for {name}: {str(body)[:200]}")
        files = self._call(
            "GET", f"/api/projects/{project_id}/file-uploads", params={"ids": json.dumps(ids[:1])}
        )
        if not files:
            raise DeliveryError(f"Label Studio lost the upload {ids[0]} of {name}")
        return "/data/" + str(files[0]["file"]).lstrip("/")

    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> list[int]:
        body = self._call(
            "POST", f"/api/projects/{project_id}/import", params={"return_task_ids": "true"}, json=tasks
        )
        return [int(i) for i in body.get("task_ids", [])]

    def find_task(self, project_id: int, field: str, value: str) -> int | None:
        """Id of a task whose ``data[field]`` equals ``value``, or None."""
        query = {
            "filters": {
                "conjunction": "and",
                "items": [
                    {
                        "filter": f"filter:tasks:data.{field}",
                        "operator": "equal",
                        "type": "String",
                        "value": value,
                    }
                ],
            }
        }
        body = self._call(
            "GET", "/api/tasks", params={"project": project_id, "query": json.dumps(query), "page_size": 1}
        )
        tasks = body.get("tasks", []) if isinstance(body, dict) else []
        return int(tasks[0]["id"]) if tasks else None

    def create_review_task(
        self, project_id: int, item: ReviewItem, image: bytes, *, retry: bool = False, filename: str = ""
    ) -> int:
        """Upload the frame and create its task with the prediction; return the task id."""
        if retry:
            existing = self.find_task(project_id, "review_id", item.review_id)
            if existing is not None:
                return existing
        name = filename or f"{item.review_id}.jpg"
        mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
        url = self.upload_file(project_id, name, image, mime)
        ids = self.import_tasks(project_id, [review_task(item, url)])
        if len(ids) != 1:
            raise DeliveryError(f"Label Studio created {len(ids)} tasks for review item {item.review_id}")
        return ids[0]

    def export_tasks(self, project_id: int, ids: list[int] | None = None) -> list[dict[str, Any]]:
        """Every task with its annotations (JSON export); ``ids`` narrows it (sent as ``ids[]``)."""
        params: dict[str, Any] = {"exportType": "JSON", "download_all_tasks": "true"}
        if ids:
            params["ids[]"] = [str(i) for i in ids]
        body = self._call("GET", f"/api/projects/{project_id}/export", params=params)
        if isinstance(body, bytes):
            body = json.loads(body)
        return list(body or [])

    def waiting_tasks(self, project_id: int, *, page_size: int = 100) -> list[WaitingTask]:
        """Every task of the project with no annotation and no skip, fetched ``page_size`` at a time."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise InputError(f"page size must be 1..{MAX_PAGE_SIZE}; got {page_size}")
        found: list[WaitingTask] = []
        page = 1
        while True:
            params = {
                "project": project_id,
                "fields": "all",
                "page": page,
                "page_size": page_size,
                "query": json.dumps(_WAITING | {"ordering": ["tasks:id"]}),
            }
            body = self._call("GET", "/api/tasks", params=params)
            rows = body.get("tasks", []) if isinstance(body, dict) else []
            found += [task for task in map(_waiting_task, rows) if task is not None]
            total = body.get("total") if isinstance(body, dict) else None
            if len(rows) < page_size or (isinstance(total, int) and page * page_size >= total):
                return found
            page += 1

    def add_prediction(self, task_id: int, pred: dict[str, Any]) -> int:
        """Attach one more prediction to a task (the task's other predictions stay); its id."""
        body = self._call("POST", "/api/predictions", json={"task": task_id, **pred})
        return int(body["id"])

    def download(self, url: str, *, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
        """The bytes behind a task's image URL (``/data/upload/...`` here), at most ``max_bytes``."""
        import httpx

        if url.startswith(self.url):
            url = url[len(self.url) :]
        if not url.startswith("/"):
            raise InputError("the task's image is not a file on this Label Studio; cannot fetch it")
        too_big = InputError(f"the task's image is over {max_bytes} bytes; not fetched")
        try:
            with self._http.stream(url, method="GET") as resp:
                if resp.status_code in (401, 403, 429):
                    self._raise_for(resp.status_code, "", "GET", "the task's image")
                if resp.status_code >= 300:  # that task's file is gone or broken; the others may be fine
                    raise InputError(f"Label Studio cannot serve the task's image (HTTP {resp.status_code})")
                declared = resp.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise too_big
                chunks: list[bytes] = []
                size = 0
                for chunk in resp.iter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise too_big
                    chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise DeliveryError(
                f"Label Studio at {self.url} is not reachable ({type(exc).__name__}: {exc}); "
                "start it or fix the URL"
            ) from exc
        if not chunks:
            raise InputError("Label Studio returned an empty file for the task's image")
        return b"".join(chunks)

    def close(self) -> None:
        self._http.httpx_client.close()


class LabelStudioSink:
    """A ``ReviewSink`` for the review queue: resolves the project by name on first use."""

    def __init__(self, client: LabelStudioClient, project: str) -> None:
        self.client = client
        self.project_title = project
        self._project_id: int | None = None

    def send(self, item: ReviewItem, jpeg: bytes, *, retry: bool) -> int:
        if self._project_id is None:
            self._project_id = self.client.project(self.project_title).id
        try:
            return self.client.create_review_task(self._project_id, item, jpeg, retry=retry)
        except RefusedError:
            raise
        except DeliveryError:
            self._project_id = None  # the project may have been recreated: look it up again
            raise


def read_token(path: Path) -> str:
    """The Label Studio API token from ``sampling.label_studio_token_file``."""
    return read_secret(path, "sampling.label_studio_token_file")


def client_from_config(cfg: SamplingConfig) -> LabelStudioClient | None:
    """A client for the station's Label Studio, or None when no Label Studio is configured."""
    if not cfg.label_studio_url:
        return None
    if cfg.label_studio_token_file is None:
        raise ConfigError(
            "sampling.label_studio_url is set but sampling.label_studio_token_file is not; "
            "point it at a file holding the Label Studio API token"
        )
    return LabelStudioClient(cfg.label_studio_url, read_token(cfg.label_studio_token_file))


def sink_from_config(cfg: SamplingConfig) -> LabelStudioSink | None:
    """The review queue's sink for a station, or None when no Label Studio is configured."""
    client = client_from_config(cfg)
    return None if client is None else LabelStudioSink(client, cfg.label_studio_project)
