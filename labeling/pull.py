"""QA labels back into training data: finished Label Studio tasks become a new dataset version.

``pull_dataset`` exports the project's tasks, keeps each task's latest finished annotation and
writes a YOLO dataset version (``images/{train,val}``, ``labels/{train,val}``, ``data.yaml``,
``manifest.json``) that extends a parent version: the parent's images and labels are carried
over (hard links when possible) and the new frames added. Corrected and deleted boxes are simply
what the annotation holds; an empty annotation is a confirmed good unit (an empty label file);
skipped (cancelled) tasks and tasks not yet labeled are left out. Classes are matched by name;
a task naming a class the dataset does not have is reported and left out whole, because dropping
one of its boxes would teach the model a defect is not there. The manifest's ``provenance`` lists
the Label Studio task id of every image, cumulatively along the parent chain, so pulling again
from the newest version adds only tasks finished since. No torch, no ultralytics: the edge-side
labeling extra can run it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import yaml

from lineguard.datasets import labelstudio_boxes, read_yolo_labels
from lineguard.errors import DatasetError, InputError
from lineguard.labeling.label_studio import LabelStudioClient
from lineguard.messages import DatasetManifest

__all__ = ["TASK_PREFIX", "LabeledTask", "PullReport", "annotation_boxes", "pull_dataset", "pulled_task_ids"]

TASK_PREFIX: Final = "label_studio_task:"
Box = tuple[int, float, float, float, float]


@dataclass(frozen=True)
class LabeledTask:
    task_id: int
    annotation_id: int
    unit_id: str
    image_url: str
    boxes: tuple[Box, ...]


@dataclass
class PullReport:
    out: Path | None = None
    added: int = 0
    confirmed_good: int = 0
    boxes: int = 0
    already_pulled: int = 0
    not_labeled: int = 0
    cancelled: int = 0
    unknown_classes: dict[str, list[int]] = field(default_factory=dict)
    manifest: DatasetManifest | None = None
    provenance: dict[str, list[str]] = field(default_factory=dict)

    def summary(self) -> str:
        where = f"new dataset version {self.out}" if self.out else "no new dataset version (nothing new)"
        text = (
            f"{where}: {self.added} images added ({self.confirmed_good} confirmed good, {self.boxes} boxes); "
            f"{self.already_pulled} already pulled, {self.not_labeled} not labeled yet, "
            f"{self.cancelled} skipped by QA"
        )
        for name, tasks in sorted(self.unknown_classes.items()):
            text += f"; unknown class {name!r} in tasks {tasks} (left out: add the class or fix the label)"
        return text


def annotation_boxes(
    result: object, classes: list[str], where: str = "annotation"
) -> tuple[list[Box], list[str]]:
    """YOLO boxes of an annotation's rectangles, and the label names not in ``classes``."""
    index = {name: i for i, name in enumerate(classes)}
    boxes: list[Box] = []
    unknown: list[str] = []
    for box in labelstudio_boxes(result, where):
        if box.name not in index:
            unknown.append(box.name)
            continue
        boxes.append((index[box.name], *box.cxcywh()))
    return boxes, unknown


def _finished_annotation(task: dict[str, Any]) -> dict[str, Any] | str | None:
    """The latest non-cancelled annotation; ``"cancelled"`` if QA only skipped; None if none yet."""
    annotations = task.get("annotations") or []
    done = [a for a in annotations if not a.get("was_cancelled")]
    if done:
        latest: dict[str, Any] = max(
            done, key=lambda a: (str(a.get("updated_at") or ""), int(a.get("id") or 0))
        )
        return latest
    return "cancelled" if annotations else None


def pulled_task_ids(manifest: DatasetManifest) -> set[int]:
    return {
        int(tag[len(TASK_PREFIX) :])
        for tags in manifest.provenance.values()
        for tag in tags
        if tag.startswith(TASK_PREFIX)
    }


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _stem(task: LabeledTask) -> str:
    unit = re.sub(r"[^A-Za-z0-9_-]+", "_", task.unit_id)[:40] or "unit"
    return f"ls{task.task_id:07d}_{unit}"


def _split(task_id: int, val_share: float) -> str:
    bucket = int(hashlib.sha256(str(task_id).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "val" if bucket < val_share else "train"


def _counts(root: Path, classes: list[str]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for label in sorted((root / "labels").glob("*/*.txt")):
        tally = counts.setdefault(
            label.parent.name, {"images": 0, "defect_free": 0} | dict.fromkeys(classes, 0)
        )
        rows = read_yolo_labels(label, len(classes))
        tally["images"] += 1
        tally["defect_free"] += 0 if rows else 1
        for cls, *_ in rows:
            tally[classes[cls]] += 1
    return counts


def _collect(
    tasks: list[dict[str, Any]], classes: list[str], done: set[int], report: PullReport
) -> list[LabeledTask]:
    found: list[LabeledTask] = []
    for task in sorted(tasks, key=lambda t: int(t["id"])):
        task_id = int(task["id"])
        if task_id in done:
            report.already_pulled += 1
            continue
        annotation = _finished_annotation(task)
        if annotation is None:
            report.not_labeled += 1
            continue
        if isinstance(annotation, str):
            report.cancelled += 1
            continue
        boxes, unknown = annotation_boxes(annotation.get("result") or [], classes, f"task {task_id}")
        if unknown:
            for name in unknown:
                report.unknown_classes.setdefault(name, []).append(task_id)
            continue
        data = task.get("data") or {}
        found.append(
            LabeledTask(
                task_id=task_id,
                annotation_id=int(annotation.get("id") or 0),
                unit_id=str(data.get("unit_id") or f"task{task_id}"),
                image_url=str(data.get("image") or ""),
                boxes=tuple(boxes),
            )
        )
    return found


def pull_dataset(
    client: LabelStudioClient,
    project: str,
    out: Path,
    *,
    parent: Path | None = None,
    classes: list[str] | None = None,
    val_share: float = 0.2,
) -> PullReport:
    """Write the project's newly finished tasks (plus the parent's data) as a dataset version."""
    if not 0.0 <= val_share < 1.0:
        raise InputError(f"--val-share must be in [0, 1); got {val_share}")
    if out.exists() and any(out.iterdir()):
        raise DatasetError(f"{out} exists and is not empty; dataset versions are immutable, pick a new --out")
    parent_manifest = DatasetManifest.load(parent) if parent is not None else None
    ls_project = client.project(project)
    names = parent_manifest.classes if parent_manifest else (classes or ls_project.classes)
    if not names:
        raise InputError(f"project {project!r} has no RectangleLabels classes; pass --classes")
    if classes and parent_manifest and classes != parent_manifest.classes:
        raise InputError(f"--classes {classes} differ from the parent's classes {parent_manifest.classes}")

    report = PullReport()
    done = pulled_task_ids(parent_manifest) if parent_manifest else set()
    found = _collect(client.export_tasks(ls_project.id), names, done, report)
    if not found:
        return report

    # Build beside ``out`` and rename at the end: a failed pull leaves no half-written version.
    work = out.parent / f".{out.name}.partial"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        _write_version(client, work, parent, parent_manifest, found, names, val_share, report)
        manifest = _finish(client, work, out.name, ls_project.id, parent_manifest, names, report)
        if out.exists():
            out.rmdir()
        work.replace(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    report.out = out
    report.manifest = manifest
    return report


def _write_version(
    client: LabelStudioClient,
    out: Path,
    parent: Path | None,
    parent_manifest: DatasetManifest | None,
    found: list[LabeledTask],
    names: list[str],
    val_share: float,
    report: PullReport,
) -> None:
    if parent is not None:
        for src in sorted(
            p for sub in ("images", "labels") for p in (parent / sub).rglob("*") if p.is_file()
        ):
            _link_or_copy(src, out / src.relative_to(parent))
    provenance = dict(parent_manifest.provenance) if parent_manifest else {}
    report.provenance = provenance
    for task in found:
        image = client.download(task.image_url)
        split = _split(task.task_id, val_share)
        stem = _stem(task)
        suffix = Path(task.image_url).suffix.lower() or ".jpg"
        for sub in ("images", "labels"):
            (out / sub / split).mkdir(parents=True, exist_ok=True)
        (out / "images" / split / f"{stem}{suffix}").write_bytes(image)
        (out / "labels" / split / f"{stem}.txt").write_text(
            "".join(f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in task.boxes)
        )
        provenance[stem] = [
            f"{TASK_PREFIX}{task.task_id}",
            f"annotation:{task.annotation_id}",
            f"unit:{task.unit_id}",
        ]
        report.added += 1
        report.boxes += len(task.boxes)
        report.confirmed_good += 0 if task.boxes else 1
    for split in ("train", "val"):  # ultralytics wants both folders, even when one is empty
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
    (out / "data.yaml").write_text(
        yaml.safe_dump(
            {"train": "images/train", "val": "images/val", "names": dict(enumerate(names))}, sort_keys=False
        )
    )


def _finish(
    client: LabelStudioClient,
    out: Path,
    name: str,
    project_id: int,
    parent_manifest: DatasetManifest | None,
    names: list[str],
    report: PullReport,
) -> DatasetManifest:
    manifest = DatasetManifest.scan(
        out,
        name=name,
        classes=list(names),
        source=f"label-studio:{client.url}/projects/{project_id}",
        created_at=datetime.now(UTC),
        parent=parent_manifest.content_hash if parent_manifest else None,
    )
    manifest.counts = _counts(out, list(names))
    skipped = Counter({"cancelled": report.cancelled, "not_labeled": report.not_labeled})
    skipped["unknown_class"] = len({t for ids in report.unknown_classes.values() for t in ids})
    manifest.skipped = {k: v for k, v in skipped.items() if v}
    manifest.provenance = report.provenance
    manifest.save(out)
    return manifest
