"""Export checks that need no training: parity verdicts on given detections, a named confusion matrix."""

from __future__ import annotations

import numpy as np
import pytest

from lineguard.errors import InputError
from lineguard.inference import Detections
from lineguard.training._parity import compare_detections
from lineguard.training.evaluate import Evaluation

FLOOR = 0.05
THRESHOLDS = [0.5, 0.5]


def _boxes(n: int, *, conf: float = 0.6, shift: float = 0.0, cls: int = 0) -> Detections:
    xyxy = [(0.1 * i + shift, 0.1, 0.1 * i + 0.05 + shift, 0.2) for i in range(n)]
    return Detections.from_arrays(xyxy, [conf] * n, [cls] * n)


def test_agreeing_paths_pass_and_the_report_counts_the_boxes() -> None:
    dets = [_boxes(5), _boxes(5, conf=0.3)] * 2  # 20 boxes, 10 of them at the 0.5 threshold
    parity = compare_detections(dets, dets, THRESHOLDS, floor=FLOOR, tolerance=0.01)

    assert parity.passed
    assert (parity.images, parity.boxes, parity.boxes_at_threshold, parity.min_boxes) == (4, 20, 10, 20)
    assert parity.confidence_floor == FLOOR


def test_agreement_over_too_few_boxes_fails() -> None:
    """The demo model's old report: 'passed' with 0 boxes compared."""
    empty = [Detections.empty()] * 16
    assert not compare_detections(empty, empty, THRESHOLDS, floor=FLOOR, tolerance=0.01).passed
    few = [_boxes(19)]
    parity = compare_detections(few, few, THRESHOLDS, floor=FLOOR, tolerance=0.01)
    assert not parity.passed and parity.boxes == 19 and parity.max_box_diff == 0.0


def test_boxes_that_moved_beyond_tolerance_fail() -> None:
    torch = [_boxes(10), _boxes(10)]
    onnx = [_boxes(10), _boxes(10, shift=0.015)]  # still the same boxes (IoU 0.54)
    parity = compare_detections(torch, onnx, THRESHOLDS, floor=FLOOR, tolerance=0.01)

    assert not parity.passed and parity.boxes == 20
    assert parity.max_box_diff == pytest.approx(0.015)


def test_a_confidence_change_beyond_tolerance_fails() -> None:
    parity = compare_detections(
        [_boxes(20, conf=0.52)], [_boxes(20, conf=0.48)], THRESHOLDS, floor=FLOOR, tolerance=0.01
    )
    assert not parity.passed and parity.max_conf_diff == pytest.approx(0.04)


def test_a_box_only_one_path_sees_fails_unless_it_sits_at_the_floor() -> None:
    base = _boxes(20)
    extra = Detections.from_arrays([*base.xyxy, (0.8, 0.8, 0.9, 0.9)], [*base.confidence, 0.3], [0] * 21)
    assert not compare_detections([base], [extra], THRESHOLDS, floor=FLOOR, tolerance=0.01).passed
    near_floor = Detections.from_arrays(
        [*base.xyxy, (0.8, 0.8, 0.9, 0.9)], [*base.confidence, 0.07], [0] * 21
    )
    assert compare_detections([base], [near_floor], THRESHOLDS, floor=FLOOR, tolerance=0.01).passed


def test_other_class_is_not_a_match() -> None:
    parity = compare_detections([_boxes(20)], [_boxes(20, cls=1)], THRESHOLDS, floor=FLOOR, tolerance=0.01)
    assert not parity.passed and parity.boxes == 0


def test_paths_must_cover_the_same_images() -> None:
    with pytest.raises(InputError, match="one result per image"):
        compare_detections([_boxes(1)], [], THRESHOLDS, floor=FLOOR, tolerance=0.01)


def test_confusion_matrix_prints_class_names() -> None:
    evaluation = Evaluation(
        model="m.onnx",
        data="d",
        split="val",
        classes=["scratch", "pit"],
        map50=0.0,
        map50_95=0.0,
        per_class={},
        confusion=[[3, 0, 1], [0, 2, 0], [1, 0, 0]],
        thresholds={},
        units=3,
        escape_rate=None,
        overkill_rate=None,
        unit_scores=np.zeros((3, 2)),
        unit_defective=np.zeros(3, bool),
    )
    lines = evaluation.confusion_lines()
    assert lines[0].split() == ["scratch", "pit", "background"]
    assert lines[1].split() == ["scratch", "3", "0", "1"]
    assert lines[3].split() == ["background", "1", "0", "0"]
    assert "confusion (rows true, columns predicted):\n" + "\n".join(lines) in evaluation.report()
