"""Summarise a YOLO dataset version: counts per split and class, and a grid of labeled samples.

Before training on a folder, an engineer wants to see that the classes are there in the numbers
expected and that the boxes sit on the defects; the PNG grid answers the second question at a
glance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2

from lineguard.datasets import image_files, read_class_names, read_yolo_labels
from lineguard.errors import DatasetError
from lineguard.inference import read_image_file, write_tile_grid

__all__ = [
    "DatasetStats",
    "SampleGrid",
    "dataset_stats",
    "write_sample_grid",
]


_RED, _GREEN = (0, 0, 255), (0, 170, 0)


@dataclass
class DatasetStats:
    classes: list[str]
    images: dict[str, int] = field(default_factory=dict)
    defect_free: dict[str, int] = field(default_factory=dict)
    boxes: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> class -> count

    def table(self) -> str:
        splits = sorted(self.images)
        head = ["class", *splits]
        rows = [[name, *(str(self.boxes[s].get(name, 0)) for s in splits)] for name in self.classes]
        rows.append(["(images)", *(str(self.images[s]) for s in splits)])
        rows.append(["(defect-free)", *(str(self.defect_free[s]) for s in splits)])
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
        return "\n".join(fmt.format(*r) for r in [head, *rows])


def _pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    folder = root / "images" / split
    images = image_files(folder) if folder.is_dir() else []
    return [(p, root / "labels" / split / f"{p.stem}.txt") for p in images]


def dataset_stats(root: Path) -> DatasetStats:
    classes = read_class_names(root)
    splits = (
        sorted(p.name for p in (root / "images").iterdir() if p.is_dir())
        if (root / "images").is_dir()
        else []
    )
    if not splits:
        raise DatasetError(f"{root} has no images/<split> folders")
    stats = DatasetStats(classes=classes)
    for split in splits:
        pairs = _pairs(root, split)
        stats.images[split] = len(pairs)
        stats.defect_free[split] = 0
        per_class = dict.fromkeys(classes, 0)
        for _, label in pairs:
            rows = read_yolo_labels(label, len(classes))
            if not rows:
                stats.defect_free[split] += 1
            for c, *_ in rows:
                per_class[classes[c]] += 1
        stats.boxes[split] = per_class
    return stats


@dataclass(frozen=True)
class SampleGrid:
    path: Path
    defective: int  # tiles with boxes (red)
    good: int  # defect-free tiles (green frame): what the model must leave alone


def write_sample_grid(root: Path, out_png: Path, *, samples: int = 16, tile: int = 200) -> SampleGrid:
    """Draw up to ``samples`` images with their boxes into one PNG grid: defective ones, and a row
    of defect-free ones (a reviewer checks that good units look good as much as the boxes)."""
    classes = read_class_names(root)
    pairs = [pair for split in ("train", "val") for pair in _pairs(root, split)]
    good = [pair for pair in pairs if not read_yolo_labels(pair[1])]
    bad = [pair for pair in pairs if read_yolo_labels(pair[1])]
    n_good = min(len(good), max(samples // 4, 1), samples)
    n_bad = min(len(bad), samples - n_good)
    n_good = min(len(good), samples - n_bad)  # fewer defective images than asked: more good ones
    tiles = []
    for image_path, label_path in [*bad[:n_bad], *good[:n_good]]:
        image = cv2.resize(read_image_file(image_path), (tile, tile))
        rows = read_yolo_labels(label_path)
        for c, x, y, w, h in rows:
            p1 = (int((x - w / 2) * tile), int((y - h / 2) * tile))
            p2 = (int((x + w / 2) * tile), int((y + h / 2) * tile))
            cv2.rectangle(image, p1, p2, _RED, 1)
            name = classes[c] if 0 <= c < len(classes) else str(c)
            cv2.putText(
                image, name, (p1[0], max(10, p1[1] - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 255, 255), 1
            )
        if not rows:
            cv2.rectangle(image, (0, 0), (tile - 1, tile - 1), _GREEN, 3)
            cv2.putText(image, "defect-free", (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, _GREEN, 1)
        tiles.append(image)
    if not tiles:
        raise DatasetError(f"{root} has no images to draw")
    return SampleGrid(write_tile_grid(tiles, out_png), n_bad, n_good)
