"""Evaluate an ONNX model on a frozen evaluation set the way the station will run it.

The promotion gate must compare candidate and production on the same images, with the same code
that will judge units on the line: so this module runs the edge's own ``Detector`` (ONNX Runtime,
letterbox, decode, NMS) and ``VerdictPolicy`` (the card's thresholds), never torch or the
training code (the registry must not import them). It measures box quality (mAP50, all-point
interpolated AP per class at IoU 0.5), unit-level outcomes (escape, overkill, NO_DECISION rates,
accuracy) and the median detect + decide latency.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from lineguard.config import ModelConfig, PolicyConfig
from lineguard.errors import DatasetError, ModelError
from lineguard.inference import Detections
from lineguard.messages import ModelCard, VerdictKind, sha256_file

__all__ = [
    "EvalResult",
    "EvalSet",
    "EvalUnit",
    "Evaluator",
    "average_precision_50",
    "evaluate_model",
    "golden_problems",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


@dataclass(frozen=True)
class EvalUnit:
    """One evaluation image and its ground truth: (class id, x1, y1, x2, y2) normalised boxes."""

    image: Path
    boxes: tuple[tuple[int, float, float, float, float], ...]

    @property
    def defective(self) -> bool:
        return bool(self.boxes)


@dataclass(frozen=True)
class EvalSet:
    """A frozen list of labeled images; ``digest`` names exactly these files and labels."""

    root: Path
    units: tuple[EvalUnit, ...]
    digest: str

    @classmethod
    def load(cls, root: Path, split: str = "val") -> EvalSet:
        """Read a YOLO dataset (``images/<split>`` + ``labels/<split>``, or ``images`` + ``labels``)."""
        root = Path(root)
        images = root / "images" / split
        labels = root / "labels" / split
        if not images.is_dir():
            images, labels = root / "images", root / "labels"
        if not images.is_dir():
            raise DatasetError(
                f"evaluation set {root} has no images/{split} or images folder; "
                "point registry.eval_set at a YOLO dataset version"
            )
        files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DatasetError(f"evaluation set {images} holds no images")
        digest = hashlib.sha256()
        units = []
        for image in files:
            label = labels / f"{image.stem}.txt"
            text = label.read_text() if label.is_file() else ""
            digest.update(
                f"{image.name}:{sha256_file(image)}:{hashlib.sha256(text.encode()).hexdigest()}\n".encode()
            )
            units.append(EvalUnit(image, _parse_labels(text, label)))
        return cls(root=root, units=tuple(units), digest=digest.hexdigest())


def _parse_labels(text: str, where: Path) -> tuple[tuple[int, float, float, float, float], ...]:
    boxes = []
    for n, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 5:
            raise DatasetError(f"{where}:{n}: expected 'class cx cy w h', got {line!r}")
        c, cx, cy, w, h = int(parts[0]), *(float(p) for p in parts[1:])
        boxes.append((c, cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    return tuple(boxes)


@dataclass(frozen=True)
class EvalResult:
    """What one model scored on one evaluation set (rates are shares of units, 0..1)."""

    model: str
    sha256: str
    eval_digest: str
    units: int
    defective_units: int
    map50: float | None  # None when the set has no boxes at all
    unit_accuracy: float
    escape_rate: float
    overkill_rate: float
    no_decision_rate: float
    latency_median_ms: float
    errors: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# (onnx path, its card, evaluation set) -> result; the CLI passes ``evaluate_model``.
Evaluator = Callable[[Path, ModelCard, EvalSet], EvalResult]


def _iou(box: npt.NDArray[np.float32], boxes: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    out: npt.NDArray[np.float32] = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0).astype(
        np.float32
    )
    return out


def average_precision_50(
    predictions: Sequence[Detections], truths: Sequence[Sequence[tuple[int, float, float, float, float]]]
) -> float | None:
    """mAP at IoU 0.5 over the classes that have ground truth; None when no image has a box."""
    classes = sorted({b[0] for t in truths for b in t})
    if not classes:
        return None
    aps = []
    for c in classes:
        gts = [np.asarray([b[1:] for b in t if b[0] == c], np.float32).reshape(-1, 4) for t in truths]
        n_gt = sum(len(g) for g in gts)
        scored: list[tuple[float, int, npt.NDArray[np.float32]]] = []
        for i, det in enumerate(predictions):
            keep = det.class_id == c
            scored += [(float(s), i, b) for s, b in zip(det.confidence[keep], det.xyxy[keep], strict=True)]
        scored.sort(key=lambda item: -item[0])
        used = [np.zeros(len(g), bool) for g in gts]
        tp = np.zeros(len(scored))
        for k, (_, i, box) in enumerate(scored):
            if len(gts[i]) == 0:
                continue
            ious = _iou(box, gts[i])
            ious[used[i]] = -1.0
            j = int(ious.argmax())
            if ious[j] >= 0.5:
                used[i][j] = True
                tp[k] = 1.0
        if not scored:
            aps.append(0.0)
            continue
        ctp = np.cumsum(tp)
        recall = np.concatenate([[0.0], ctp / n_gt, [1.0]])
        precision = np.concatenate([[1.0], ctp / np.arange(1, len(scored) + 1), [0.0]])
        precision = np.maximum.accumulate(precision[::-1])[::-1]
        steps = np.flatnonzero(recall[1:] != recall[:-1])
        aps.append(float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1])))
    return float(np.mean(aps))


def evaluate_model(
    onnx_path: Path,
    card: ModelCard,
    eval_set: EvalSet,
    *,
    model_cfg: ModelConfig | None = None,
    policy_cfg: PolicyConfig | None = None,
) -> EvalResult:
    """Run the edge's detector and verdict policy over every unit; count outcomes and time."""
    import cv2

    from lineguard.inference import Detector, VerdictPolicy

    policy_cfg = policy_cfg or PolicyConfig()
    detector = Detector.load(
        onnx_path,
        model_cfg or ModelConfig(threads=1),
        min_confidence=policy_cfg.min_confidence,
        nms_iou=policy_cfg.nms_iou,
        card=card,
    )
    policy = VerdictPolicy(card, policy_cfg)
    preds: list[Detections] = []
    latencies: list[float] = []
    counts = {"escape": 0, "overkill": 0, "no_decision": 0, "correct": 0, "errors": 0}
    try:
        for unit in eval_set.units:
            frame = cv2.imread(str(unit.image), cv2.IMREAD_COLOR)
            if frame is None:
                raise DatasetError(f"cannot read evaluation image {unit.image}")
            t0 = time.perf_counter()
            try:
                detections, _ = detector.detect(np.asarray(frame, dtype=np.uint8))
            except Exception:  # a model that crashes on an image scores as an error, not a PASS
                counts["errors"] += 1
                counts["no_decision"] += 1
                preds.append(Detections.empty())
                continue
            decision = policy.decide(detections)
            latencies.append((time.perf_counter() - t0) * 1000.0)
            preds.append(detections)
            if decision.verdict is VerdictKind.NO_DECISION:
                counts["no_decision"] += 1
            elif unit.defective and decision.verdict is VerdictKind.PASS:
                counts["escape"] += 1
            elif not unit.defective and decision.verdict is VerdictKind.FAIL:
                counts["overkill"] += 1
            else:
                counts["correct"] += 1
    finally:
        detector.close()
    if not latencies:
        raise ModelError(f"{card.ref} failed on every evaluation image ({counts['errors']} errors)")
    n = len(eval_set.units)
    n_bad = sum(u.defective for u in eval_set.units)
    return EvalResult(
        model=card.ref,
        sha256=card.sha256,
        eval_digest=eval_set.digest,
        units=n,
        defective_units=n_bad,
        map50=average_precision_50(preds, [u.boxes for u in eval_set.units]),
        unit_accuracy=counts["correct"] / n,
        escape_rate=counts["escape"] / n_bad if n_bad else 0.0,
        overkill_rate=counts["overkill"] / (n - n_bad) if n > n_bad else 0.0,
        no_decision_rate=counts["no_decision"] / n,
        latency_median_ms=float(statistics.median(latencies)),
        errors=counts["errors"],
    )


def golden_problems(
    onnx_path: Path, card: ModelCard, folder: Path, *, model_cfg: ModelConfig | None = None
) -> list[str]:
    """Load the model as the edge would and run the golden images; the problems found (empty = ok)."""
    from lineguard.inference import Detector, check_golden

    try:
        detector = Detector.load(onnx_path, model_cfg or ModelConfig(threads=1), card=card)
    except ModelError as exc:
        return [str(exc)]
    try:
        return check_golden(detector, folder)
    finally:
        detector.close()
