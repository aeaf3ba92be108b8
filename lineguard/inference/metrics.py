"""Detection and unit metrics in numpy: box IoU, matching, AP, confusion matrix, escape/overkill.

The ``.pt`` and ``.onnx`` paths of one model must be scored by the same arithmetic, and that
arithmetic must agree with the figures ultralytics prints during training, or nobody can compare
a model card with a training log. So this module reproduces ultralytics 8.4's definitions:
confidence-ordered greedy matching at IoU 0.50:0.95, 101-point interpolated AP averaged over the
classes that have labels, and precision/recall at the confidence of the best smoothed mean F1.
The promotion gate's ``map50_all_point`` uses the same IoU and matching but all-point (VOC 2010)
interpolation at IoU 0.5, the figure its reports have always carried. The line's own outcome,
escape and overkill per unit, is ``unit_rates``: one definition for training, calibration and
the gate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lineguard.inference.detections import Detections

__all__ = [
    "IOU_THRESHOLDS",
    "ApResult",
    "UnitRates",
    "ap_per_class",
    "box_iou",
    "confusion_matrix",
    "map50_all_point",
    "match_predictions",
    "unit_rates",
    "unit_rates_at",
]

FloatArray = npt.NDArray[np.float64]
IOU_THRESHOLDS: npt.NDArray[np.float64] = np.linspace(0.5, 0.95, 10, dtype=np.float64)
_AP_X = np.linspace(0, 1, 101)
_EPS = 1e-16


def box_iou(a: npt.ArrayLike, b: npt.ArrayLike) -> FloatArray:
    """IoU of every box in ``a`` (m, 4) with every box in ``b`` (n, 4), xyxy; shape (m, n)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return np.asarray(inter / (area_a[:, None] + area_b[None, :] - inter + 1e-7), dtype=np.float64)


def match_predictions(
    pred_cls: npt.ArrayLike, true_cls: npt.ArrayLike, iou: FloatArray
) -> npt.NDArray[np.bool_]:
    """(n_pred, 10) correct flags; predictions must come in descending confidence order.

    Each prediction, best first, claims the unclaimed label of its class it overlaps most; it is
    correct at every IoU threshold that overlap reaches.
    """
    pred = np.asarray(pred_cls).reshape(-1)
    true = np.asarray(true_cls).reshape(-1)
    correct = np.zeros((len(pred), len(IOU_THRESHOLDS)), dtype=bool)
    if len(pred) == 0 or len(true) == 0:
        return correct
    iou = iou * (true[:, None] == pred[None, :])
    matched = np.zeros((len(true), len(IOU_THRESHOLDS)), dtype=bool)
    cols = np.arange(len(IOU_THRESHOLDS))
    for j in np.flatnonzero((iou >= IOU_THRESHOLDS.min()).any(0)):
        available = np.where(matched, 0.0, iou[:, j, None])
        k = available.argmax(0)
        correct[j] = available[k, cols] >= IOU_THRESHOLDS
        matched[k, cols] |= correct[j]
    return correct


@dataclass(frozen=True)
class ApResult:
    """Per labeled class (``classes``): AP at the 10 IoU thresholds, P and R at the best F1."""

    classes: npt.NDArray[np.int64]
    ap: FloatArray  # (nc, 10)
    precision: FloatArray  # (nc,)
    recall: FloatArray  # (nc,)
    labels: npt.NDArray[np.int64]  # (nc,) label count per class

    @property
    def map50(self) -> float:
        return float(self.ap[:, 0].mean()) if len(self.ap) else 0.0

    @property
    def map50_95(self) -> float:
        return float(self.ap.mean()) if len(self.ap) else 0.0


def _compute_ap(recall: FloatArray, precision: FloatArray) -> float:
    mrec = np.concatenate(([0.0], recall, [recall[-1] if len(recall) else 1.0], [1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0], [0.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    return float(np.trapezoid(np.interp(_AP_X, mrec, mpre), _AP_X))


def _smooth(y: FloatArray, f: float) -> FloatArray:
    nf = round(len(y) * f * 2) // 2 + 1
    pad = np.ones(nf // 2)
    return np.asarray(np.convolve(np.concatenate((pad * y[0], y, pad * y[-1])), np.ones(nf) / nf, "valid"))


def ap_per_class(
    tp: npt.NDArray[np.bool_], conf: npt.ArrayLike, pred_cls: npt.ArrayLike, target_cls: npt.ArrayLike
) -> ApResult:
    """AP per class from all predictions of a dataset (``tp`` from ``match_predictions``)."""
    conf = np.asarray(conf, dtype=np.float64).reshape(-1)
    pred_cls = np.asarray(pred_cls).reshape(-1)
    order = np.argsort(-conf, kind="stable")
    tp, conf, pred_cls = tp[order].astype(np.float64), conf[order], pred_cls[order]
    classes, counts = np.unique(np.asarray(target_cls, dtype=np.int64), return_counts=True)
    x = np.linspace(0, 1, 1000)
    ap = np.zeros((len(classes), tp.shape[1]))
    p_curve = np.zeros((len(classes), 1000))
    r_curve = np.zeros((len(classes), 1000))
    for ci, c in enumerate(classes):
        mask = pred_cls == c
        if not mask.any():
            continue
        tpc = tp[mask].cumsum(0)
        fpc = (1 - tp[mask]).cumsum(0)
        recall = tpc / (counts[ci] + _EPS)
        precision = tpc / (tpc + fpc)
        r_curve[ci] = np.interp(-x, -conf[mask], recall[:, 0], left=0)
        p_curve[ci] = np.interp(-x, -conf[mask], precision[:, 0], left=1)
        for j in range(tp.shape[1]):
            ap[ci, j] = _compute_ap(recall[:, j], precision[:, j])
    f1 = 2 * p_curve * r_curve / (p_curve + r_curve + _EPS)
    best = int(_smooth(f1.mean(0), 0.1).argmax()) if len(classes) else 0
    return ApResult(
        classes=classes.astype(np.int64),
        ap=ap,
        precision=p_curve[:, best],
        recall=r_curve[:, best],
        labels=counts.astype(np.int64),
    )


def confusion_matrix(
    rows: list[tuple[FloatArray, npt.NDArray[np.int64], FloatArray, npt.NDArray[np.int64]]],
    num_classes: int,
    *,
    conf: float = 0.25,
    iou: float = 0.45,
) -> npt.NDArray[np.int64]:
    """``m[true, predicted]`` over images; index ``num_classes`` is background (missed / spurious).

    ``rows`` holds per image (label boxes, label classes, predicted boxes, predicted classes) with
    predictions already filtered to confidence >= ``conf``. Pairs overlapping more than ``iou`` are
    matched one to one, largest overlap first, regardless of class (that is what confuses).
    """
    bg = num_classes
    m = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    for gt_boxes, gt_cls, pred_boxes, pred_cls in rows:
        overlap = box_iou(gt_boxes, pred_boxes)
        pairs = np.argwhere(overlap > iou)
        used_gt: set[int] = set()
        used_pred: set[int] = set()
        for g, p in sorted(pairs.tolist(), key=lambda gp: -overlap[gp[0], gp[1]]):
            if g in used_gt or p in used_pred:
                continue
            used_gt.add(g)
            used_pred.add(p)
            m[gt_cls[g], pred_cls[p]] += 1
        for g in set(range(len(gt_cls))) - used_gt:
            m[gt_cls[g], bg] += 1
        for p in set(range(len(pred_cls))) - used_pred:
            m[bg, pred_cls[p]] += 1
    return m


def _ap_all_point(tp: FloatArray, n_labels: int) -> float:
    """All-point interpolated AP of confidence-ordered correct flags against ``n_labels`` labels."""
    if len(tp) == 0:
        return 0.0
    ctp = np.cumsum(tp)
    recall = np.concatenate([[0.0], ctp / n_labels, [1.0]])
    precision = np.concatenate([[1.0], ctp / np.arange(1, len(tp) + 1), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def map50_all_point(
    predictions: Sequence[Detections], truths: Sequence[tuple[npt.ArrayLike, npt.ArrayLike]]
) -> float | None:
    """mAP at IoU 0.5, all-point interpolation, over the classes that have labels; None if none has.

    ``truths`` holds per image (label boxes xyxy (n, 4), label classes (n,)), in the same
    normalisation as the predictions. Matching is ``match_predictions`` per image; predictions of
    all images are then ranked by confidence (ties keep image, then detection order).
    """
    correct, conf, pred_cls, true_cls = [], [], [], []
    for det, (gt_xyxy, gt_cls) in zip(predictions, truths, strict=True):
        labels = np.asarray(gt_cls, dtype=np.int64).reshape(-1)
        order = np.argsort(-det.confidence, kind="stable")
        flags = np.zeros(len(det), dtype=bool)
        flags[order] = match_predictions(det.class_id[order], labels, box_iou(gt_xyxy, det.xyxy[order]))[:, 0]
        correct.append(flags)
        conf.append(det.confidence.astype(np.float64))
        pred_cls.append(det.class_id)
        true_cls.append(labels)
    all_labels = np.concatenate(true_cls) if true_cls else np.zeros(0, dtype=np.int64)
    if len(all_labels) == 0:
        return None
    tp, scores, classes = np.concatenate(correct), np.concatenate(conf), np.concatenate(pred_cls)
    aps = []
    for c in np.unique(all_labels):
        mine = np.flatnonzero(classes == c)
        ranked = mine[np.argsort(-scores[mine], kind="stable")]
        aps.append(_ap_all_point(tp[ranked].astype(np.float64), int((all_labels == c).sum())))
    return float(np.mean(aps))


@dataclass(frozen=True)
class UnitRates:
    """Unit-level outcomes; a rate is None when there is no unit of its kind to divide by."""

    escape_rate: float | None  # defective units judged PASS / defective units
    overkill_rate: float | None  # good units judged FAIL / good units
    defective: int
    good: int
    no_decision_rate: float | None = None  # units judged neither PASS nor FAIL / all units


def unit_rates(defective: npt.ArrayLike, passed: npt.ArrayLike, failed: npt.ArrayLike) -> UnitRates:
    """Escape and overkill rates of units judged ``passed`` / ``failed`` (flags per unit).

    A unit neither passed nor failed (NO_DECISION, or an error) is neither an escape nor an
    overkill, but still counts in the denominator: it is a unit the line had to handle.
    """
    bad = np.asarray(defective, dtype=bool).reshape(-1)
    ok = np.asarray(passed, dtype=bool).reshape(-1)
    ng = np.asarray(failed, dtype=bool).reshape(-1)
    n_bad, n_good = int(bad.sum()), int((~bad).sum())
    return UnitRates(
        escape_rate=int((bad & ok).sum()) / n_bad if n_bad else None,
        overkill_rate=int((~bad & ng).sum()) / n_good if n_good else None,
        defective=n_bad,
        good=n_good,
        no_decision_rate=int((~ok & ~ng).sum()) / len(bad) if len(bad) else None,
    )


def unit_rates_at(
    scores: npt.NDArray[np.float64],
    defective: npt.NDArray[np.bool_],
    thresholds: npt.NDArray[np.float64],
    *,
    review_band: float = 0.0,
    uncertain_fails: bool = False,
    min_confidence: float = 0.0,
) -> UnitRates:
    """Rates when a unit FAILs as soon as any class's top confidence reaches that class's threshold.

    ``scores`` is (units, classes) top confidence per class. Without a ``review_band`` every unit
    gets PASS or FAIL. With one, a unit that does not FAIL but has a class within the band below
    its threshold is doubtful, as ``VerdictPolicy`` decides: NO_DECISION, or FAIL when
    ``uncertain_fails``. The top confidence per class settles both, because a class whose best box
    reaches its threshold FAILs the unit whatever its other boxes score. A score of 0 is no box, and
    a box under ``min_confidence`` never reaches the edge's policy, so neither is doubtful.
    """
    fail = np.asarray((scores >= thresholds[None, :]).any(axis=1), dtype=bool)
    doubtful = np.zeros_like(fail)
    if review_band > 0:
        lower = np.maximum(thresholds - review_band, min_confidence)[None, :]
        doubtful = ~fail & ((scores > 0) & (scores >= lower)).any(axis=1)
    if uncertain_fails:
        fail, doubtful = fail | doubtful, np.zeros_like(fail)
    return unit_rates(defective, ~fail & ~doubtful, fail)
