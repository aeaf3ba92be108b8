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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from xml.etree import ElementTree
from xml.sax.saxutils import quoteattr

from lineguard.config import SamplingConfig
from lineguard.errors import ConfigError, DeliveryError, InputError, MissingDependencyError
from lineguard.labeling.review_outbox import RefusedError, ReviewItem
from lineguard.secrets import read_secret

__all__ = [
    "FROM_NAME",
    "TO_NAME",
    "LabelStudioClient",
    "LabelStudioSink",
    "Project",
    "label_config",
    "label_config_classes",
    "read_token",
    "review_task",
    "sink_from_config",
]

FROM_NAME: Final = "label"
TO_NAME: Final = "image"
_REFUSED: Final = frozenset({400, 413, 415, 422})


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


def review_task(item: ReviewItem, image_url: str) -> dict[str, Any]:
    """One task: the image, the unit's traceability fields, and the model's boxes as a prediction."""
    result = []
    for i, box in enumerate(item.boxes):
        x1, y1, x2, y2 = box.xyxy
        result.append(
            {
                "id": f"p{i}",
                "from_name": FROM_NAME,
                "to_name": TO_NAME,
                "type": "rectanglelabels",
                "original_width": item.width,
                "original_height": item.height,
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
    model = f"{item.model_name}:{item.model_version}" if item.model_name else "none"
    return {
        "data": {
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
        "predictions": [{"model_version": model, "score": item.score, "result": result}],
    }


@dataclass(frozen=True)
class Project:
    id: int
    title: str
    classes: list[str]


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
        detail = resp.text[:300].replace("\n", " ")
        if resp.status_code in (401, 403):
            raise DeliveryError(
                f"Label Studio at {self.url} refused the token (HTTP {resp.status_code}); use a valid "
                "API token (legacy tokens need LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true)"
            )
        if resp.status_code in _REFUSED:
            raise RefusedError(f"Label Studio refused {method} {path} (HTTP {resp.status_code}): {detail}")
        raise DeliveryError(f"Label Studio {method} {path} failed (HTTP {resp.status_code}): {detail}")

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

    def download(self, url: str) -> bytes:
        """The bytes behind a task's image URL (``/data/upload/...`` on this server)."""
        if url.startswith(self.url):
            url = url[len(self.url) :]
        if not url.startswith("/"):
            raise InputError(f"task image {url[:60]!r} is not a file on this Label Studio; cannot fetch it")
        body = self._call("GET", url)
        if not isinstance(body, bytes):
            raise DeliveryError(f"Label Studio returned no file bytes for {url}")
        return body

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


def sink_from_config(cfg: SamplingConfig) -> LabelStudioSink | None:
    """The review queue's sink for a station, or None when no Label Studio is configured."""
    if not cfg.label_studio_url:
        return None
    if cfg.label_studio_token_file is None:
        raise ConfigError(
            "sampling.label_studio_url is set but sampling.label_studio_token_file is not; "
            "point it at a file holding the Label Studio API token"
        )
    client = LabelStudioClient(cfg.label_studio_url, read_token(cfg.label_studio_token_file))
    return LabelStudioSink(client, cfg.label_studio_project)
