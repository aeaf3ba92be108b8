"""Label Studio's shapes: label config from classes, percent boxes both ways, task payloads."""

from __future__ import annotations

import pytest

from lineguard.errors import InputError
from lineguard.labeling import (
    ReviewBox,
    ReviewItem,
    annotation_boxes,
    label_config,
    label_config_classes,
    review_task,
)
from lineguard.messages import utc_now

CLASSES = ["scratch", "pit", "crack"]


def rect(name: str, x: float, y: float, w: float, h: float, rotation: float = 0.0) -> dict[str, object]:
    return {
        "type": "rectanglelabels",
        "from_name": "label",
        "to_name": "image",
        "value": {"x": x, "y": y, "width": w, "height": h, "rotation": rotation, "rectanglelabels": [name]},
    }


@pytest.mark.parametrize(
    ("result", "boxes", "unknown"),
    [
        ([], [], []),
        ([rect("pit", 10, 20, 30, 40)], [(1, 0.25, 0.40, 0.30, 0.40)], []),
        ([rect("dent", 10, 20, 30, 40), rect("crack", 0, 0, 50, 50)], [(2, 0.25, 0.25, 0.5, 0.5)], ["dent"]),
        ([rect("scratch", 90, 90, 20, 20)], [(0, 0.95, 0.95, 0.10, 0.10)], []),  # clipped to the frame
        ([rect("scratch", 50, 10, 20, 10, rotation=90)], [(0, 0.45, 0.20, 0.10, 0.20)], []),
        ([{"type": "choices", "value": {"choices": ["ok"]}}], [], []),
    ],
)
def test_annotation_rectangles_become_yolo_boxes(
    result: list[dict[str, object]], boxes: list[tuple[int, float, float, float, float]], unknown: list[str]
) -> None:
    got, missing = annotation_boxes(result, CLASSES)
    assert missing == unknown
    assert len(got) == len(boxes)
    for g, b in zip(got, boxes, strict=True):
        assert g[0] == b[0]
        assert g[1:] == pytest.approx(b[1:], abs=1e-6)


def test_label_config_keeps_model_order_and_escapes_names() -> None:
    names = ["scratch", "pit", 'odd "name" & <tag>']
    assert label_config_classes(label_config(names)) == names


@pytest.mark.parametrize("names", [[], ["a", "a"]])
def test_label_config_refuses_bad_class_lists(names: list[str]) -> None:
    with pytest.raises(InputError):
        label_config(names)


def test_review_task_carries_prediction_in_percent_of_the_frame() -> None:
    item = ReviewItem(
        review_id="r1",
        unit_id="U1",
        line="l",
        station="s",
        captured_at=utc_now(),
        reason="uncertain",
        model_name="m",
        model_version="3",
        score=0.55,
        width=640,
        height=480,
        boxes=(ReviewBox(class_name="pit", confidence=0.55, xyxy=(0.1, 0.2, 0.4, 0.6)),),
    )
    task = review_task(item, "/data/upload/1/r1.jpg")
    assert task["data"]["image"] == "/data/upload/1/r1.jpg"
    assert {k: task["data"][k] for k in ("unit_id", "station", "reason")} == {
        "unit_id": "U1",
        "station": "s",
        "reason": "uncertain",
    }
    assert task["data"]["captured_at"].endswith("Z")
    (prediction,) = task["predictions"]
    assert (prediction["model_version"], prediction["score"]) == ("m:3", 0.55)
    (region,) = prediction["result"]
    assert (region["original_width"], region["original_height"]) == (640, 480)
    assert region["value"]["rectanglelabels"] == ["pit"]
    assert [region["value"][k] for k in ("x", "y", "width", "height")] == pytest.approx([10, 20, 30, 40])
    back, _ = annotation_boxes(prediction["result"], CLASSES)
    assert back[0][1:] == pytest.approx((0.25, 0.4, 0.3, 0.4))
