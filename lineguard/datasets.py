"""Dataset readers shared by every part: image files, YOLO splits, class names, Label Studio boxes.

Training's importer, the evaluators, the registry's gate, the QA pull and the station's folder
source must agree on what an image file is and what a label says, or a ``.tif`` that training
learned from is silently skipped by the gate, or a rotated Label Studio box becomes a defect in one
dataset version and nothing in another. So each of those readers lives here once.

Box convention: every box leaving this module is **normalised xyxy** (x1, y1, x2, y2 as shares of
the image's width and height, 0..1) with an integer class id, the convention of
``lineguard.inference.Detections`` and its metrics, so labels and predictions compare directly.
YOLO label files hold ``class cx cy w h`` (normalised); ``LabeledImage.xyxy`` is their conversion.
Label Studio rectangles (percent x, y, width, height, rotated about their top-left corner) become
the axis-aligned bounding box of the rotated rectangle, clipped to the image.

Label files are hostile input: a line that is not exactly ``class cx cy w h`` with a non-negative
integer class and finite numbers is a ``DatasetError`` naming the file and line.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import yaml

from lineguard.errors import DatasetError

__all__ = [
    "CALIB_SPLIT",
    "IMAGE_SUFFIXES",
    "MAX_LABEL_BYTES",
    "LabeledImage",
    "NamedBox",
    "YoloRow",
    "has_split",
    "image_files",
    "iter_split",
    "labeled_images",
    "labelstudio_boxes",
    "parse_yolo_labels",
    "read_class_names",
    "read_yolo_labels",
    "spread_indices",
]

# Images held out from training and from model selection, for threshold calibration only: the
# escape promised on images the weights never learned from nor were picked on predicts the line.
CALIB_SPLIT: Final = "calib"
IMAGE_SUFFIXES: Final = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# A label file is a few lines per image; anything this large is not one (and is not read whole).
MAX_LABEL_BYTES: Final = 1 << 20

YoloRow = tuple[int, float, float, float, float]  # class, cx, cy, w, h (normalised)


def image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, sorted by name (any suffix case)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def spread_indices(total: int, limit: int) -> list[int]:
    """At most ``limit`` indices spread evenly over ``range(total)``, in order.

    A sample of a folder's first files stands for one stretch of it (one class of a folder sorted
    by class, one hour of a capture); an even spread keeps both the whole and its order.
    """
    if total <= limit:
        return list(range(total))
    return sorted({round(i * (total - 1) / max(1, limit - 1)) for i in range(limit)})


# --- YOLO ---------------------------------------------------------------------------------------


def read_class_names(root: Path) -> list[str]:
    """The class names of a YOLO dataset version, from ``root/data.yaml``'s ``names`` (list or dict)."""
    data_yaml = root / "data.yaml"
    if not data_yaml.is_file():
        raise DatasetError(f"{root} has no data.yaml; is it a YOLO dataset version?")
    try:
        body = yaml.safe_load(data_yaml.read_text())
    except yaml.YAMLError as exc:
        raise DatasetError(
            f"{data_yaml} is not valid YAML ({type(exc).__name__}); fix or re-export it"
        ) from exc
    names = body.get("names") if isinstance(body, dict) else None
    if isinstance(names, dict) and names:
        return [str(names[k]) for k in sorted(names)]
    if isinstance(names, list) and names:
        return [str(n) for n in names]
    raise DatasetError(f"{data_yaml} has no 'names' list of classes")


def parse_yolo_labels(text: str, where: Path, num_classes: int | None = None) -> list[YoloRow]:
    """The rows ``(class, cx, cy, w, h)`` of a YOLO label file's text; blank lines are skipped."""
    rows: list[YoloRow] = []
    for n, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 5:
            raise DatasetError(f"{where}:{n}: expected 'class cx cy w h', got {line[:80]!r}")
        try:
            cls = int(parts[0])
            cx, cy, w, h = (float(p) for p in parts[1:])
        except ValueError:
            raise DatasetError(
                f"{where}:{n}: expected an integer class and four numbers, got {line[:80]!r}"
            ) from None
        if cls < 0 or not all(math.isfinite(v) for v in (cx, cy, w, h)):
            raise DatasetError(f"{where}:{n}: class must be >= 0 and numbers finite, got {line[:80]!r}")
        if num_classes is not None and cls >= num_classes:
            raise DatasetError(f"{where}:{n}: class id {cls}; data.yaml has {num_classes} classes")
        rows.append((cls, cx, cy, w, h))
    return rows


def _label_text(path: Path) -> str:
    """The text of a label file; a missing file is a defect-free image (as in ultralytics)."""
    if not path.is_file():
        return ""
    if path.stat().st_size > MAX_LABEL_BYTES:
        raise DatasetError(f"{path} is over {MAX_LABEL_BYTES} bytes; that is not a YOLO label file")
    try:
        return path.read_text()
    except UnicodeDecodeError:
        raise DatasetError(f"{path} is not text; a YOLO label file holds 'class cx cy w h' lines") from None


def read_yolo_labels(path: Path, num_classes: int | None = None) -> list[YoloRow]:
    """YOLO rows ``(class, cx, cy, w, h)`` of a label file; a missing file is a defect-free image."""
    return parse_yolo_labels(_label_text(path), path, num_classes)


@dataclass(frozen=True)
class LabeledImage:
    """One image and its labels: ``xyxy`` (n, 4) normalised, ``class_id`` (n,); ``label_text`` raw."""

    path: Path
    xyxy: npt.NDArray[np.float64]
    class_id: npt.NDArray[np.int64]
    label_text: str = ""

    @classmethod
    def from_rows(cls, path: Path, rows: list[YoloRow], label_text: str = "") -> LabeledImage:
        arr = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
        cx, cy, w, h = arr[:, 1], arr[:, 2], arr[:, 3], arr[:, 4]
        xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        return cls(path, xyxy, arr[:, 0].astype(np.int64), label_text)

    @property
    def defective(self) -> bool:
        return len(self.class_id) > 0


def labeled_images(images: Path, labels: Path, num_classes: int | None = None) -> Iterator[LabeledImage]:
    """Every image in ``images`` with its ``labels/<stem>.txt`` (none = defect-free), by name."""
    for path in image_files(images):
        label = labels / f"{path.stem}.txt"
        text = _label_text(label)
        yield LabeledImage.from_rows(path, parse_yolo_labels(text, label, num_classes), text)


def has_split(data: Path, split: str) -> bool:
    """Whether ``data`` holds images in ``split`` (``images/<split>`` with at least one image)."""
    folder = data / "images" / split
    return folder.is_dir() and bool(image_files(folder))


def iter_split(data: Path, split: str = "val") -> Iterator[LabeledImage]:
    """Images of one split (``images/<split>``, ``labels/<split>``) with their labels."""
    folder = data / "images" / split
    if not folder.is_dir():
        raise DatasetError(f"{data} has no images/{split}; pick --split from the dataset's splits")
    return labeled_images(folder, data / "labels" / split)


# --- Label Studio ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class NamedBox:
    """A box by class name, normalised xyxy (the Label Studio label may not be a known class)."""

    name: str
    x1: float
    y1: float
    x2: float
    y2: float

    def cxcywh(self) -> tuple[float, float, float, float]:
        return (self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2, self.x2 - self.x1, self.y2 - self.y1


def _ls_rectangle(value: dict[str, Any], where: str) -> tuple[float, float, float, float]:
    """Percent rectangle rotated about its top-left corner -> its clipped axis-aligned xyxy (0..1)."""
    try:
        x, y = float(value["x"]) / 100, float(value["y"]) / 100
        w, h = float(value["width"]) / 100, float(value["height"]) / 100
        angle = math.radians(float(value.get("rotation") or 0.0))
    except (KeyError, TypeError, ValueError):
        raise DatasetError(f"{where}: a rectangle needs numeric x, y, width and height") from None
    if not all(math.isfinite(v) for v in (x, y, w, h, angle)):
        raise DatasetError(f"{where}: a rectangle's x, y, width, height and rotation must be finite")
    if angle:
        c, s = math.cos(angle), math.sin(angle)
        xs = [x + dx * c - dy * s for dx, dy in ((0, 0), (w, 0), (w, h), (0, h))]
        ys = [y + dx * s + dy * c for dx, dy in ((0, 0), (w, 0), (w, h), (0, h))]
    else:
        xs, ys = [x, x + w], [y, y + h]
    return max(0.0, min(xs)), max(0.0, min(ys)), min(1.0, max(xs)), min(1.0, max(ys))


def labelstudio_boxes(result: object, where: str = "annotation") -> list[NamedBox]:
    """The boxes of an annotation's ``result``: one per label of each rectangle with an area.

    Non-rectangle regions are ignored; a rotated rectangle becomes its axis-aligned bounding box;
    a rectangle clipped to nothing is dropped. ``where`` names the task in error messages.
    """
    if not isinstance(result, list):
        raise DatasetError(f"{where}: 'result' must be a list of regions")
    boxes: list[NamedBox] = []
    for region in result:
        if not isinstance(region, dict) or region.get("type") != "rectanglelabels":
            continue
        value = region.get("value")
        names = value.get("rectanglelabels") if isinstance(value, dict) else None
        if not isinstance(value, dict) or not isinstance(names, list):
            raise DatasetError(f"{where}: a rectanglelabels region needs a 'value' with 'rectanglelabels'")
        if not names:
            continue
        x1, y1, x2, y2 = _ls_rectangle(value, where)
        if x2 > x1 and y2 > y1:
            boxes.extend(NamedBox(str(name), x1, y1, x2, y2) for name in names)
    return boxes
