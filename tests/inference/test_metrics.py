"""The numpy detection metrics: known cases, and agreement with ultralytics' own functions."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from lineguard.inference import (
    ap_per_class,
    box_iou,
    confusion_matrix,
    match_predictions,
    unit_rates,
    unit_rates_at,
)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (np.zeros((0, 4)), np.zeros((0, 4)), np.zeros((0, 0))),
        ([[0, 0, 1, 1]], [[0, 0, 1, 1]], [[1.0]]),
        ([[0, 0, 1, 1]], [[0.5, 0, 1.5, 1]], [[1 / 3]]),
        ([[0, 0, 1, 1]], [[2, 2, 3, 3]], [[0.0]]),
    ],
)
def test_box_iou(a: object, b: object, expected: object) -> None:
    assert box_iou(a, b) == pytest.approx(np.asarray(expected), abs=1e-6)  # type: ignore[arg-type]


def test_no_predictions_give_zero_ap() -> None:
    result = ap_per_class(np.zeros((0, 10), bool), [], [], [0, 1])
    assert result.map50 == 0.0
    assert list(result.classes) == [0, 1]


def test_perfect_predictions_give_full_ap() -> None:
    boxes = np.array([[0.1, 0.1, 0.3, 0.3], [0.5, 0.5, 0.9, 0.8]])
    classes = np.array([0, 1])
    tp = match_predictions(classes, classes, box_iou(boxes, boxes))
    result = ap_per_class(tp, [0.9, 0.8], classes, classes)
    # 101-point interpolation tops out at 0.995, as in ultralytics and COCO
    assert result.map50 == pytest.approx(0.995, abs=1e-6)
    assert result.map50_95 == pytest.approx(0.995, abs=1e-6)


def test_a_box_of_the_wrong_class_is_not_a_hit() -> None:
    boxes = np.array([[0.1, 0.1, 0.3, 0.3]])
    tp = match_predictions(np.array([1]), np.array([0]), box_iou(boxes, boxes))
    assert not tp.any()


def _random_case(rng: np.random.Generator) -> tuple[list[npt.NDArray[Any]], ...]:
    gts, gcls, preds, pcls, confs = [], [], [], [], []
    for _ in range(30):
        n = int(rng.integers(0, 4))
        xy = rng.uniform(0, 0.7, (n, 2))
        gt = np.concatenate([xy, xy + rng.uniform(0.05, 0.3, (n, 2))], axis=1)
        gc = rng.integers(0, 3, n)
        keep = rng.random(n) < 0.8
        jitter = gt[keep] + rng.normal(0, 0.02, (int(keep.sum()), 4))
        m = int(rng.integers(0, 4))
        xy2 = rng.uniform(0, 0.7, (m, 2))
        spurious = np.concatenate([xy2, xy2 + rng.uniform(0.05, 0.3, (m, 2))], axis=1)
        pred = np.concatenate([jitter, spurious])
        pc = np.concatenate(
            [np.where(rng.random(int(keep.sum())) < 0.9, gc[keep], rng.integers(0, 3)), rng.integers(0, 3, m)]
        )
        conf = rng.uniform(0.01, 1, len(pred))
        order = np.argsort(-conf)
        gts.append(gt)
        gcls.append(gc)
        preds.append(pred[order])
        pcls.append(pc[order])
        confs.append(conf[order])
    return gts, gcls, preds, pcls, confs


def test_metrics_agree_with_ultralytics() -> None:
    from lineguard.training.offline import load_ultralytics

    load_ultralytics(threads=1)
    import torch
    from ultralytics.models.yolo.detect import DetectionValidator
    from ultralytics.utils.metrics import ap_per_class as ul_ap_per_class
    from ultralytics.utils.metrics import box_iou as ul_box_iou

    validator = DetectionValidator()
    gts, gcls, preds, pcls, confs = _random_case(np.random.default_rng(0))
    ours, theirs = [], []
    for gt, gc, pred, pc in zip(gts, gcls, preds, pcls, strict=True):
        ours.append(match_predictions(pc, gc, box_iou(gt, pred)))
        iou = ul_box_iou(torch.tensor(gt, dtype=torch.float32), torch.tensor(pred, dtype=torch.float32))
        theirs.append(validator.match_predictions(torch.tensor(pc), torch.tensor(gc), iou).numpy())
    tp = np.concatenate(ours)
    assert np.array_equal(tp, np.concatenate(theirs))

    conf, pred_cls, target_cls = np.concatenate(confs), np.concatenate(pcls), np.concatenate(gcls)
    result = ap_per_class(tp, conf, pred_cls, target_cls)
    _, _, p, r, _, ap, *_ = ul_ap_per_class(tp, conf, pred_cls, target_cls)
    assert result.map50 > 0.3  # a case with real content, not all zeros
    assert result.ap == pytest.approx(ap, abs=1e-9)
    assert result.precision == pytest.approx(p, abs=1e-9)
    assert result.recall == pytest.approx(r, abs=1e-9)


def test_confusion_matrix_counts_misses_and_spurious_boxes() -> None:
    gt = np.array([[0.1, 0.1, 0.3, 0.3], [0.6, 0.6, 0.9, 0.9]])
    pred = np.array([[0.1, 0.1, 0.3, 0.31], [0.0, 0.6, 0.05, 0.7]])
    m = confusion_matrix([(gt, np.array([0, 1]), pred, np.array([1, 0]))], 2)
    # gt 0 predicted as class 1; gt 1 missed; one spurious class-0 box.
    assert m.tolist() == [[0, 1, 0], [0, 0, 1], [1, 0, 0]]


def test_unit_rates_count_undecided_units_in_the_denominator_only() -> None:
    defective = [True, True, True, False, False]
    passed = [True, False, False, True, False]
    failed = [False, True, False, False, False]  # unit 2 and unit 4: NO_DECISION
    rates = unit_rates(defective, passed, failed)
    assert (rates.escape_rate, rates.overkill_rate, rates.defective, rates.good) == (1 / 3, 0.0, 3, 2)
    assert unit_rates([False], [True], [False]).escape_rate is None


def test_unit_rates_at_thresholds_fail_a_unit_when_any_class_reaches_its_threshold() -> None:
    scores = np.array([[0.6, 0.0], [0.0, 0.3], [0.2, 0.2]])
    rates = unit_rates_at(scores, np.array([True, True, False]), np.array([0.5, 0.4]))
    assert (rates.escape_rate, rates.overkill_rate) == (0.5, 0.0)


def test_a_unit_in_the_review_band_is_no_decision_neither_escape_nor_overkill() -> None:
    scores = np.array([[0.45, 0.0], [0.0, 0.0], [0.0, 0.45], [0.6, 0.0], [0.0, 0.04]])
    defective = np.array([True, True, False, False, False])
    thresholds = np.array([0.5, 0.5])

    plain = unit_rates_at(scores, defective, thresholds)
    band = unit_rates_at(scores, defective, thresholds, review_band=0.1, min_confidence=0.05)
    fails = unit_rates_at(scores, defective, thresholds, review_band=0.1, uncertain_fails=True)

    assert (plain.escape_rate, plain.overkill_rate, plain.no_decision_rate) == (1.0, 1 / 3, 0.0)
    # unit 0 (defective, 0.45) and unit 2 (good, 0.45) are doubtful; unit 4's 0.04 is under the floor
    assert (band.escape_rate, band.overkill_rate, band.no_decision_rate) == (0.5, 1 / 3, 2 / 5)
    assert (fails.escape_rate, fails.overkill_rate, fails.no_decision_rate) == (0.5, 2 / 3, 0.0)
