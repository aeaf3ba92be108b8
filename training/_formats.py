"""Readers for foreign label formats (YOLO, Pascal VOC, Label Studio JSON) into one sample list.

Each reader turns its format into ``Sample`` rows (image path, boxes in pixels, class names, an
optional split) and counts what it had to leave out by reason, so the importer can write any of
them the same way and nothing is dropped silently. Checks shared by all formats (box inside the
image, known class) live in ``check_sample``. Parsing a YOLO label file or a Label Studio
annotation is ``lineguard.datasets``' job (the same parser as the QA pull and the gate); this
module only turns its normalised boxes into pixels and a malformed one into a counted skip.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import cv2

from lineguard.datasets import (
    IMAGE_SUFFIXES,
    image_files,
    labelstudio_boxes,
    read_class_names,
    read_yolo_labels,
)
from lineguard.errors import DatasetError

__all__ = ["Box", "Sample", "check_sample", "read_labelstudio", "read_voc", "read_yolo"]
# A box may overhang the image by this many pixels (rounding in annotation tools); it is clipped.
_OVERHANG_PX = 1.0


@dataclass(frozen=True)
class Box:
    name: str
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass
class Sample:
    stem: str
    image: Path
    boxes: list[Box]
    split: str | None = None
    provenance: list[str] = field(default_factory=list)
    width: int = 0
    height: int = 0


def _image_size(path: Path) -> tuple[int, int] | None:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        return None
    return int(image.shape[1]), int(image.shape[0])


def check_sample(sample: Sample, classes: list[str] | None, skipped: Counter[str]) -> Sample | None:
    """Read the image size, clip tiny overhangs; None (and a counted reason) if unusable."""
    if not sample.image.is_file():
        skipped["missing_image"] += 1
        return None
    size = _image_size(sample.image)
    if size is None:
        skipped["unreadable_image"] += 1
        return None
    w, h = size
    boxes = []
    for box in sample.boxes:
        if classes is not None and box.name not in classes:
            skipped["unknown_class"] += 1
            return None
        if box.x2 <= box.x1 or box.y2 <= box.y1:
            skipped["empty_box"] += 1
            return None
        lo, hi_x, hi_y = -_OVERHANG_PX, w + _OVERHANG_PX, h + _OVERHANG_PX
        if box.x1 < lo or box.y1 < lo or box.x2 > hi_x or box.y2 > hi_y:
            skipped["box_outside_image"] += 1
            return None
        boxes.append(
            Box(box.name, max(0.0, box.x1), max(0.0, box.y1), min(float(w), box.x2), min(float(h), box.y2))
        )
    sample.boxes, sample.width, sample.height = boxes, w, h
    return sample


def _find_image(folders: list[Path], stem: str) -> Path | None:
    for folder in folders:
        for suffix in IMAGE_SUFFIXES:
            for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
                if candidate.is_file():
                    return candidate
    return None


def _first_dir(root: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if (root / name).is_dir():
            return root / name
    return None


# --- YOLO -------------------------------------------------------------------------------------


def read_yolo(src: Path, skipped: Counter[str]) -> tuple[list[Sample], list[str]]:
    """``src/data.yaml`` + ``images/<split>/`` and ``labels/<split>/`` (or flat images/, labels/)."""
    if not (src / "data.yaml").is_file():
        raise DatasetError(f"{src} has no data.yaml; a YOLO source needs one with a 'names' list")
    classes = read_class_names(src)
    images_root = src / "images"
    if not images_root.is_dir():
        raise DatasetError(f"{src} has no images/ folder; expected images/<split>/ and labels/<split>/")
    split_dirs = [p for p in sorted(images_root.iterdir()) if p.is_dir()]
    groups: list[tuple[str | None, Path, Path]] = [(p.name, p, src / "labels" / p.name) for p in split_dirs]
    groups = groups or [(None, images_root, src / "labels")]
    samples: list[Sample] = []
    for split, image_dir, label_dir in groups:
        images = {p.stem: p for p in image_files(image_dir)}
        labels = {p.stem: p for p in label_dir.glob("*.txt")} if label_dir.is_dir() else {}
        skipped["missing_image"] += len(set(labels) - set(images))
        for stem, image in sorted(images.items()):
            boxes = _yolo_boxes(labels.get(stem), image, classes, skipped)
            if boxes is not None:
                samples.append(Sample(stem, image, boxes, split=split))
    return samples, classes


def _yolo_boxes(
    label: Path | None, image: Path, classes: list[str], skipped: Counter[str]
) -> list[Box] | None:
    """Pixel boxes of one image's label file; None (and a counted reason) if it is unusable."""
    if label is None:
        return []  # no label file = a defect-free image, as in ultralytics
    size = _image_size(image)
    if size is None:
        skipped["unreadable_image"] += 1
        return None
    try:
        rows = read_yolo_labels(label)
    except DatasetError:  # the importer counts what it leaves out rather than stopping
        skipped["malformed_label"] += 1
        return None
    if any(cls >= len(classes) for cls, *_ in rows):
        skipped["unknown_class"] += 1
        return None
    w, h = size
    return [
        Box(classes[cls], (cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h)
        for cls, cx, cy, bw, bh in rows
    ]


# --- Pascal VOC -------------------------------------------------------------------------------


def read_voc(src: Path, skipped: Counter[str]) -> tuple[list[Sample], list[str]]:
    """XML files in ``Annotations/`` (any case) or ``src``; images in ``JPEGImages/``/``IMAGES/``.

    NEU-DET quirks: the class comes from each ``<object><name>``, never from the file name; the
    image is matched by the XML file's own stem because ``<filename>`` may lack its extension;
    one image may hold boxes of several classes.
    """
    xml_dir = _first_dir(src, ("Annotations", "ANNOTATIONS", "annotations")) or src
    image_dirs = [
        d for d in (_first_dir(src, ("JPEGImages", "IMAGES", "images", "Images")), src) if d is not None
    ]
    xml_files = sorted(xml_dir.glob("*.xml"))
    if not xml_files:
        raise DatasetError(
            f"no Pascal VOC .xml files in {xml_dir}; point SRC at the folder holding Annotations/"
        )
    samples = []
    names: set[str] = set()
    for xml_file in xml_files:
        try:
            root = ET.parse(xml_file).getroot()
        except ET.ParseError:
            skipped["malformed_label"] += 1
            continue
        boxes = []
        try:
            for obj in root.iter("object"):
                name = (obj.findtext("name") or "").strip()
                bnd = obj.find("bndbox")
                if not name or bnd is None:
                    raise ValueError(name)
                coords = [float(bnd.findtext(k) or "nan") for k in ("xmin", "ymin", "xmax", "ymax")]
                boxes.append(Box(name, *coords))
        except ValueError:
            skipped["malformed_label"] += 1
            continue
        image = _find_image(image_dirs, xml_file.stem)
        if image is None:
            skipped["missing_image"] += 1
            continue
        names.update(b.name for b in boxes)
        samples.append(Sample(xml_file.stem, image, boxes))
    return samples, sorted(names)


# --- Label Studio -----------------------------------------------------------------------------

_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")


def read_labelstudio(
    src: Path, skipped: Counter[str], image_dirs: list[Path]
) -> tuple[list[Sample], list[str]]:
    """A Label Studio JSON export (list of tasks with ``annotations[].result[]`` rectangles)."""
    try:
        tasks = json.loads(src.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(
            f"cannot read Label Studio export {src}: {exc}; export the project as JSON"
        ) from exc
    if not isinstance(tasks, list):
        raise DatasetError(f"{src} is not a Label Studio JSON export (expected a list of tasks)")
    folders = [*image_dirs, src.parent, src.parent / "images"]
    samples = []
    names: set[str] = set()
    seen: Counter[str] = Counter()
    for task in tasks:
        annotation = _final_annotation(task)
        if annotation is None:
            skipped["unlabeled_task"] += 1
            continue
        url = str((task.get("data") or {}).get("image", ""))
        image = _resolve_ls_image(url, folders)
        if image is None:
            skipped["missing_image"] += 1
            continue
        try:
            found = labelstudio_boxes(annotation.get("result") or [], f"{src} task {task.get('id')}")
        except DatasetError:
            skipped["malformed_label"] += 1
            continue
        w, h = _ls_image_size(annotation.get("result") or [], image)
        boxes = [Box(b.name, b.x1 * w, b.y1 * h, b.x2 * w, b.y2 * h) for b in found]
        names.update(b.name for b in boxes)
        stem = _UPLOAD_PREFIX.sub("", image.stem)
        seen[stem] += 1
        if seen[stem] > 1:
            stem = f"{stem}_{seen[stem]}"
        provenance = [f"task:{task.get('id')}", f"annotation:{annotation.get('id')}"]
        samples.append(Sample(stem, image, boxes, provenance=provenance))
    return samples, sorted(names)


def _ls_image_size(result: list[Any], image: Path) -> tuple[float, float]:
    """The pixel size the regions were drawn on (``original_width/height``), else the image's own."""
    for region in result:
        if isinstance(region, dict):
            try:
                w, h = float(region.get("original_width") or 0), float(region.get("original_height") or 0)
            except (TypeError, ValueError):
                continue
            if w > 0 and h > 0:
                return w, h
    size = _image_size(image)
    return (float(size[0]), float(size[1])) if size else (0.0, 0.0)


def _final_annotation(task: dict[str, Any]) -> dict[str, Any] | None:
    done = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    if not done:
        return None
    latest: dict[str, Any] = max(done, key=lambda a: (str(a.get("updated_at") or ""), int(a.get("id") or 0)))
    return latest


def _resolve_ls_image(url: str, folders: list[Path]) -> Path | None:
    """Local-files URLs (``?d=path``), uploads (``/data/upload/1/abcd1234-name.jpg``) or paths."""
    if not url:
        return None
    parsed = urlparse(url)
    if "d" in parse_qs(parsed.query):
        candidate = Path(unquote(parse_qs(parsed.query)["d"][0]))
        names = [candidate]
    else:
        candidate = Path(unquote(parsed.path))
        names = [candidate]
    base = candidate.name
    for name in [*names, Path(base), Path(_UPLOAD_PREFIX.sub("", base))]:
        if name.is_absolute() and name.is_file():
            return name
        for folder in folders:
            for path in (folder / name, folder / name.name):
                if path.is_file():
                    return path
    return None
