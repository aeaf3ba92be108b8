"""Evaluate an ONNX model on a frozen evaluation set the way the station will run it.

The promotion gate must compare candidate and production on the same images, with the same code
that will judge units on the line: so this module runs the edge's own ``Detector`` (ONNX Runtime,
letterbox, decode, NMS) and ``VerdictPolicy`` (the card's thresholds), never torch or the
training code (the registry must not import them). It measures box quality (mAP50, all-point
interpolated AP per class at IoU 0.5), unit-level outcomes (escape, overkill, NO_DECISION rates,
accuracy) and the median detect + decide latency. Reading the set (``lineguard.datasets``) and
the arithmetic (``lineguard.inference``'s IoU, matching, AP and unit rates) are shared with
training, so a figure here means what it means in a training report.
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

from lineguard.config import ModelConfig, PolicyConfig
from lineguard.datasets import LabeledImage, labeled_images
from lineguard.errors import DatasetError, ModelError
from lineguard.inference import Detections, map50_all_point, read_image_file, unit_rates
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

Box = tuple[int, float, float, float, float]  # class id, x1, y1, x2, y2 (normalised)


@dataclass(frozen=True)
class EvalUnit:
    """One evaluation image and its ground truth: (class id, x1, y1, x2, y2) normalised boxes."""

    image: Path
    boxes: tuple[Box, ...]

    @property
    def defective(self) -> bool:
        return bool(self.boxes)

    @classmethod
    def from_labeled(cls, item: LabeledImage) -> EvalUnit:
        rows = zip(item.class_id.tolist(), item.xyxy.tolist(), strict=True)
        return cls(
            item.path, tuple((int(c), float(a), float(b), float(x), float(y)) for c, (a, b, x, y) in rows)
        )


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
        items = list(labeled_images(images, labels))
        if not items:
            raise DatasetError(f"evaluation set {images} holds no images")
        digest = hashlib.sha256()
        for item in items:
            text_hash = hashlib.sha256(item.label_text.encode()).hexdigest()
            digest.update(f"{item.path.name}:{sha256_file(item.path)}:{text_hash}\n".encode())
        units = tuple(EvalUnit.from_labeled(item) for item in items)
        return cls(root=root, units=units, digest=digest.hexdigest())


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


def average_precision_50(predictions: Sequence[Detections], truths: Sequence[Sequence[Box]]) -> float | None:
    """mAP at IoU 0.5 (all-point) over the classes that have ground truth; None when no image has a box."""
    arrays = [
        (np.asarray([b[1:] for b in t], np.float64).reshape(-1, 4), np.asarray([b[0] for b in t], np.int64))
        for t in truths
    ]
    return map50_all_point(predictions, arrays)


def evaluate_model(
    onnx_path: Path,
    card: ModelCard,
    eval_set: EvalSet,
    *,
    model_cfg: ModelConfig | None = None,
    policy_cfg: PolicyConfig | None = None,
) -> EvalResult:
    """Run the edge's detector and verdict policy over every unit; count outcomes and time."""

    from lineguard.inference import Detector, VerdictPolicy

    policy_cfg = policy_cfg or PolicyConfig()
    detector = Detector.load(
        onnx_path,
        model_cfg or ModelConfig(threads=1, precision="fp32"),
        min_confidence=policy_cfg.min_confidence,
        nms_iou=policy_cfg.nms_iou,
        card=card,
    )
    if (
        detector.variant_failure
    ):  # asked for a variant, got fp32: measuring it would vouch for the wrong thing
        detector.close()
        raise ModelError(detector.variant_failure)
    policy = VerdictPolicy(card, policy_cfg)
    preds: list[Detections] = []
    latencies: list[float] = []
    verdicts: list[VerdictKind] = []  # NO_DECISION for an image the model crashed on
    errors = 0
    try:
        for unit in eval_set.units:
            frame = read_image_file(unit.image)
            t0 = time.perf_counter()
            try:
                detections, _ = detector.detect(np.asarray(frame, dtype=np.uint8))
            except Exception:  # a model that crashes on an image scores as an error, not a PASS
                errors += 1
                verdicts.append(VerdictKind.NO_DECISION)
                preds.append(Detections.empty())
                continue
            decision = policy.decide(detections)
            latencies.append((time.perf_counter() - t0) * 1000.0)
            preds.append(detections)
            verdicts.append(decision.verdict)
    finally:
        detector.close()
    if not latencies:
        raise ModelError(f"{card.ref} failed on every evaluation image ({errors} errors)")
    return _result(card, eval_set, preds, verdicts, latencies, errors)


def _result(
    card: ModelCard,
    eval_set: EvalSet,
    preds: list[Detections],
    verdicts: list[VerdictKind],
    latencies: list[float],
    errors: int,
) -> EvalResult:
    """Score the verdicts and detections of every unit; a unit is correct unless it escaped, was
    overkilled or got no decision."""
    n = len(eval_set.units)
    defective = np.array([u.defective for u in eval_set.units], dtype=bool)
    passed = np.array([v is VerdictKind.PASS for v in verdicts], dtype=bool)
    failed = np.array([v is VerdictKind.FAIL for v in verdicts], dtype=bool)
    undecided = ~(passed | failed)
    rates = unit_rates(defective, passed, failed)
    correct = (defective & failed) | (~defective & passed)
    return EvalResult(
        model=card.ref,
        sha256=card.sha256,
        eval_digest=eval_set.digest,
        units=n,
        defective_units=rates.defective,
        map50=average_precision_50(preds, [u.boxes for u in eval_set.units]),
        unit_accuracy=int(correct.sum()) / n,
        escape_rate=rates.escape_rate or 0.0,
        overkill_rate=rates.overkill_rate or 0.0,
        no_decision_rate=int(undecided.sum()) / n,
        latency_median_ms=float(statistics.median(latencies)),
        errors=errors,
    )


def golden_problems(
    onnx_path: Path, card: ModelCard, folder: Path, *, model_cfg: ModelConfig | None = None
) -> list[str]:
    """Load the model as the edge would and run the golden images; the problems found (empty = ok)."""
    from lineguard.inference import Detector, check_golden

    try:
        detector = Detector.load(onnx_path, model_cfg or ModelConfig(threads=1, precision="fp32"), card=card)
    except ModelError as exc:
        return [str(exc)]
    try:
        return check_golden(detector, folder)
    finally:
        detector.close()
