"""The shared dataset readers: YOLO labels refuse malformed lines by file and line; Label Studio
rectangles (rotated too) become the same boxes whether QA pulls them or training imports them."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from lineguard.datasets import (
    MAX_LABEL_BYTES,
    iter_split,
    labelstudio_boxes,
    read_class_names,
    read_yolo_labels,
)
from lineguard.errors import DatasetError
from lineguard.labeling import annotation_boxes
from lineguard.training.importers import import_dataset

CLASSES = ["scratch", "pit"]


def _rect(name: str, x: float, y: float, w: float, h: float, rotation: float = 0.0) -> dict[str, object]:
    return {
        "type": "rectanglelabels",
        "original_width": 200,
        "original_height": 100,
        "value": {"x": x, "y": y, "width": w, "height": h, "rotation": rotation, "rectanglelabels": [name]},
    }


def test_a_rotated_rectangle_becomes_its_axis_aligned_bounding_box() -> None:
    # 20% x 10% rotated 90 degrees clockwise about its top-left corner (50%, 10%).
    (box,) = labelstudio_boxes([_rect("scratch", 50, 10, 20, 10, rotation=90)])
    assert (box.name, box.x1, box.y1, box.x2, box.y2) == pytest.approx(("scratch", 0.40, 0.10, 0.50, 0.30))


def test_regions_that_are_not_labeled_rectangles_are_ignored_and_clipped_ones_kept_inside() -> None:
    result = [
        {"type": "choices", "value": {"choices": ["ok"]}},
        {
            "type": "rectanglelabels",
            "value": {"x": 1, "y": 1, "width": 5, "height": 5, "rectanglelabels": []},
        },
        _rect("pit", 90, 90, 30, 30),
        _rect("pit", 120, 10, 5, 5),  # wholly outside: nothing left after clipping
    ]
    (box,) = labelstudio_boxes(result)
    assert (box.x1, box.y1, box.x2, box.y2) == pytest.approx((0.9, 0.9, 1.0, 1.0))


@pytest.mark.parametrize(
    "result",
    [
        {"not": "a list"},
        [
            {
                "type": "rectanglelabels",
                "value": {"x": "left", "y": 0, "width": 1, "height": 1, "rectanglelabels": ["pit"]},
            }
        ],
        [{"type": "rectanglelabels", "value": {"y": 0, "width": 1, "height": 1, "rectanglelabels": ["pit"]}}],
        [{"type": "rectanglelabels", "value": "oops"}],
    ],
)
def test_a_malformed_annotation_is_one_error_naming_the_task(result: object) -> None:
    with pytest.raises(DatasetError, match=r"^task 7: "):
        labelstudio_boxes(result, "task 7")


def test_pull_and_import_turn_the_same_rotated_annotation_into_the_same_label(tmp_path: Path) -> None:
    result = [_rect("scratch", 50, 10, 20, 10, rotation=90), _rect("pit", 10, 20, 30, 40, rotation=30)]
    pulled, unknown = annotation_boxes(result, CLASSES)
    assert not unknown and len(pulled) == 2

    media = tmp_path / "media"
    media.mkdir()
    cv2.imwrite(str(media / "unit.png"), np.full((100, 200, 3), 128, np.uint8))
    export = tmp_path / "export.json"
    export.write_text(
        json.dumps([{"id": 1, "data": {"image": "unit.png"}, "annotations": [{"id": 2, "result": result}]}])
    )
    report = import_dataset("labelstudio", export, tmp_path / "v1", image_dirs=[media], classes=CLASSES)
    assert report.skipped == {}
    (label,) = (tmp_path / "v1" / "labels").glob("*/unit.txt")
    imported = [tuple(float(v) for v in line.split()) for line in label.read_text().splitlines()]
    assert imported == [pytest.approx(row, abs=2e-6) for row in pulled]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("0 0.5 0.5 0.1", "expected 'class cx cy w h'"),
        ("0 0.5 0.5 0.1 0.1 0.9", "expected 'class cx cy w h'"),
        ("scratch 0.5 0.5 0.1 0.1", "integer class and four numbers"),
        ("-1 0.5 0.5 0.1 0.1", "class must be >= 0"),
        ("0 nan 0.5 0.1 0.1", "numbers finite"),
        ("2 0.5 0.5 0.1 0.1", "class id 2; data.yaml has 2 classes"),
    ],
)
def test_a_malformed_label_line_is_one_error_naming_file_and_line(
    tmp_path: Path, line: str, problem: str
) -> None:
    label = tmp_path / "a.txt"
    label.write_text(f"1 0.5 0.5 0.2 0.2\n\n{line}\n")
    with pytest.raises(DatasetError, match=rf"a\.txt:3: .*{problem}"):
        read_yolo_labels(label, len(CLASSES))


def test_an_oversized_label_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    label = tmp_path / "big.txt"
    label.write_bytes(b"0 0.5 0.5 0.1 0.1\n" * (MAX_LABEL_BYTES // 18 + 1))
    with pytest.raises(DatasetError, match="not a YOLO label file"):
        read_yolo_labels(label)


def test_split_reader_gives_normalised_xyxy_and_treats_a_missing_label_as_defect_free(tmp_path: Path) -> None:
    for stem in ("a", "b"):
        (tmp_path / "images" / "val").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / "images" / "val" / f"{stem}.TIFF"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "labels" / "val").mkdir(parents=True)
    (tmp_path / "labels" / "val" / "a.txt").write_text("1 0.5 0.5 0.2 0.4\n")
    a, b = iter_split(tmp_path, "val")
    assert a.path.name == "a.TIFF" and a.class_id.tolist() == [1]
    assert a.xyxy.tolist() == [pytest.approx([0.4, 0.3, 0.6, 0.7])]
    assert not b.defective and b.xyxy.shape == (0, 4)


def test_class_names_come_from_data_yaml_as_a_list_or_a_mapping(tmp_path: Path) -> None:
    (tmp_path / "data.yaml").write_text("names: {1: pit, 0: scratch}\n")
    assert read_class_names(tmp_path) == CLASSES
    (tmp_path / "data.yaml").write_text("names: [\n")
    with pytest.raises(DatasetError, match="not valid YAML"):
        read_class_names(tmp_path)
