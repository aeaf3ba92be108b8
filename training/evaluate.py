"""Evaluate a ``.pt`` or ``.onnx`` detector on a dataset version: mAP, per class, units.

Box metrics tell a data scientist whether the model finds defects; the line cares about units:
every image is a unit, defective if it has a labeled box, and at the shipped per-class thresholds
an *escape* is a defective unit judged PASS and an *overkill* a good unit judged FAIL. The ONNX
path runs through the edge's own ``Detector`` (letterbox, ONNX Runtime, decode, NMS), so the
figures describe what the edge will do; the ``.pt`` path runs ultralytics' predictor. Both feed
the same numpy metrics (``lineguard.inference.metrics``). Like the edge, both keep each box's best
class (single-label NMS at conf 0.001, IoU 0.7), as training's validator does
(``lineguard.training.station_val``): the mAP training prints is this one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from lineguard.datasets import iter_split, read_class_names
from lineguard.errors import DatasetError, InputError, ModelError
from lineguard.inference import (
    Detections,
    UnitRates,
    ap_per_class,
    box_iou,
    confusion_matrix,
    match_predictions,
    read_image_file,
    unit_rates_at,
)

__all__ = [
    "EVAL_CONF",
    "EVAL_IOU",
    "Evaluation",
    "evaluate",
    "predictor_for",
]

Backend = Literal["onnxruntime", "openvino"]
Precision = Literal["fp32", "bf16", "int8"]
EVAL_CONF = 0.001  # ultralytics' validation settings, so mAPs are comparable
EVAL_IOU = 0.7
Predictor = Callable[[npt.NDArray[np.uint8]], Detections]


@dataclass
class Evaluation:
    model: str
    data: str
    split: str
    classes: list[str]
    map50: float
    map50_95: float
    per_class: dict[str, dict[str, float]]
    confusion: list[list[int]]  # [true][predicted], last index = background
    thresholds: dict[str, float]
    units: int
    escape_rate: float | None
    overkill_rate: float | None
    unit_scores: npt.NDArray[np.float64] = field(repr=False)  # (units, classes) top confidence
    unit_defective: npt.NDArray[np.bool_] = field(repr=False)
    top_confidence: list[float] = field(default_factory=list, repr=False)
    computed_in: str = ""  # what the runtime computed in (f32, bf16, int8 QDQ); "" for .pt

    def threshold_array(self, thresholds: dict[str, float]) -> npt.NDArray[np.float64]:
        unknown = sorted(set(thresholds) - set(self.classes))
        if unknown:
            raise InputError(f"thresholds name unknown classes {unknown}; classes: {self.classes}")
        return np.array([thresholds.get(c, 0.5) for c in self.classes], dtype=np.float64)

    def at_thresholds(self, thresholds: dict[str, float]) -> UnitRates:
        return unit_rates_at(self.unit_scores, self.unit_defective, self.threshold_array(thresholds))

    def summary(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "data": self.data,
            "split": self.split,
            "classes": self.classes,
            "map50": self.map50,
            "map50_95": self.map50_95,
            "per_class": self.per_class,
            "confusion_matrix": {
                "rows_true_cols_predicted": self.confusion,
                "labels": [*self.classes, "background"],
            },
            "thresholds": self.thresholds,
            "units": self.units,
            "defective_units": int(self.unit_defective.sum()),
            "escape_rate": self.escape_rate,
            "overkill_rate": self.overkill_rate,
        }

    def write_json(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.summary(), indent=2) + "\n")
        return path

    def per_class_table(self) -> str:
        head = "| class | labels | P | R | AP50 | AP50-95 |\n|---|---:|---:|---:|---:|---:|"
        rows = [
            f"| {name} | {int(m['labels'])} | {100 * m['precision']:.1f} | {100 * m['recall']:.1f} "
            f"| {100 * m['ap50']:.1f} | {100 * m['ap50_95']:.1f} |"
            for name, m in self.per_class.items()
        ]
        return "\n".join([head, *rows])

    def confusion_lines(self) -> list[str]:
        """The confusion matrix with class names on both axes, so nobody counts columns."""
        labels = [*self.classes, "background"]
        width = max(5, *(len(n) for n in labels))
        head = " " * width + " " + " ".join(f"{n:>{width}}" for n in labels)
        rows = [
            f"{name:>{width}} " + " ".join(f"{v:>{width}d}" for v in row)
            for name, row in zip(labels, self.confusion, strict=False)
        ]
        return ["  " + line for line in [head, *rows]]

    def report(self) -> str:
        def pct(v: float | None) -> str:
            return "n/a" if v is None else f"{100 * v:.2f}%"

        lines = [
            f"{self.model} on {self.data} ({self.split}, {self.units} units)",
            f"mAP50 {100 * self.map50:.1f}  mAP50-95 {100 * self.map50_95:.1f}",
            self.per_class_table(),
            "confusion (rows true, columns predicted):",
            *self.confusion_lines(),
            f"at thresholds {self.thresholds}: "
            f"escape {pct(self.escape_rate)}, overkill {pct(self.overkill_rate)}",
        ]
        return "\n".join(lines)


def _pt_predictor(weights: Path, imgsz: int | None, conf: float, iou: float) -> Predictor:
    from lineguard.training.offline import load_ultralytics

    load_ultralytics()
    from ultralytics import YOLO

    model = YOLO(str(weights))
    size = imgsz or int(getattr(model.model, "args", {}).get("imgsz", 640))

    def predict(image: npt.NDArray[np.uint8]) -> Detections:
        result = model.predict(
            image, imgsz=size, conf=conf, iou=iou, max_det=300, verbose=False, device="cpu"
        )[0]
        boxes = result.boxes
        return Detections.from_arrays(boxes.xyxyn.numpy(), boxes.conf.numpy(), boxes.cls.numpy())

    return predict


def _onnx_card(onnx_path: Path, classes: list[str]) -> Any:
    """The card beside the ONNX file, or a minimal one (for a bare export) with its real hash."""
    from datetime import UTC, datetime

    import onnx

    from lineguard.messages import ModelCard, sha256_file

    card_path = onnx_path.parent / "model_card.json"
    if card_path.is_file():
        card = ModelCard.load(card_path)
        if card.sha256 == sha256_file(onnx_path):
            # Evaluation runs this file at the precision it is asked for, certified or not (it is
            # how a variant gets measured), so the card's variant list has no say here.
            return card.model_copy(update={"variants": []})
    dims = onnx.load(str(onnx_path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    size = int(dims[-1].dim_value)
    if size <= 0:
        raise ModelError(f"{onnx_path} has a dynamic input size; export it with a static --imgsz")
    return ModelCard(
        name="evaluation",
        version="0",
        sha256=sha256_file(onnx_path),
        classes=classes,
        input_size=size,
        thresholds={},
        created_at=datetime.now(UTC),
    )


def _onnx_predictor(
    onnx_path: Path,
    classes: list[str],
    threads: int,
    conf: float,
    iou: float,
    backend: Backend = "onnxruntime",
    precision: Precision = "fp32",
) -> tuple[Predictor, Callable[[], None], str]:
    from lineguard.config import ModelConfig
    from lineguard.inference import Detector

    card = _onnx_card(onnx_path, classes)
    if card.classes != classes:
        raise ModelError(f"{onnx_path} was trained for classes {card.classes}; the dataset has {classes}")
    detector = Detector.load(
        onnx_path,
        ModelConfig(backend=backend, precision=precision, threads=threads, warmup_runs=1),
        min_confidence=conf,
        nms_iou=iou,
        card=card,
    )
    return (lambda image: detector.detect(image)[0]), detector.close, detector.inference_precision


def _predictor(
    model: Path,
    classes: list[str],
    *,
    imgsz: int | None = None,
    threads: int = 2,
    conf: float = EVAL_CONF,
    iou: float = EVAL_IOU,
    backend: Backend = "onnxruntime",
    precision: Precision = "fp32",
) -> tuple[Predictor, Callable[[], None], str]:
    if not model.is_file():
        raise InputError(f"model not found: {model}")
    if model.suffix == ".pt":
        return _pt_predictor(model, imgsz, conf, iou), lambda: None, ""
    if model.suffix == ".onnx":
        return _onnx_predictor(model, classes, threads, conf, iou, backend, precision)
    raise InputError(f"--model must be a .pt or .onnx file; got {model.name}")


def predictor_for(
    model: Path,
    classes: list[str],
    *,
    imgsz: int | None = None,
    threads: int = 2,
    conf: float = EVAL_CONF,
    iou: float = EVAL_IOU,
) -> tuple[Predictor, Callable[[], None]]:
    """A function image -> Detections (evaluation settings by default) and a close function."""
    predict, close, _ = _predictor(model, classes, imgsz=imgsz, threads=threads, conf=conf, iou=iou)
    return predict, close


def _default_thresholds(model: Path, classes: list[str]) -> dict[str, float]:
    from lineguard.messages import ModelCard

    card = model.parent / "model_card.json"
    if model.suffix == ".onnx" and card.is_file():
        return dict(ModelCard.load(card).thresholds)
    calibration = model.parent.parent / "calibration.json"  # RUN/weights/best.pt -> RUN/calibration.json
    if calibration.is_file():
        return dict(json.loads(calibration.read_text())["thresholds"])
    return dict.fromkeys(classes, 0.5)


def evaluate(
    model: Path,
    data: Path,
    *,
    split: str = "val",
    thresholds: dict[str, float] | None = None,
    imgsz: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    backend: Backend = "onnxruntime",
    precision: Precision = "fp32",
) -> Evaluation:
    """Score ``model`` on ``data``'s ``split``; unit rates at ``thresholds`` (card/run/0.5).

    ``backend`` and ``precision`` pick how an ONNX model runs, as a station's ``model`` section
    does: a fast variant (OpenVINO bf16, an INT8 file) can move confidences across a threshold.
    """
    classes = read_class_names(data)
    images = list(iter_split(data, split))
    if not images:
        raise DatasetError(f"{data} has no images in split {split}")
    predict, close, computed_in = _predictor(
        model, classes, imgsz=imgsz, backend=backend, precision=precision
    )
    tps, confs, pred_cls, target_cls, rows = [], [], [], [], []
    scores = np.zeros((len(images), len(classes)))
    defective = np.zeros(len(images), dtype=bool)
    top: list[float] = []
    try:
        for n, item in enumerate(images):
            det = predict(read_image_file(item.path))
            order = np.argsort(-det.confidence, kind="stable")
            boxes, conf, cls = det.xyxy[order].astype(np.float64), det.confidence[order], det.class_id[order]
            if len(cls) and int(cls.max()) >= len(classes):
                raise ModelError(
                    f"{model.name} predicts class {int(cls.max())}; the dataset has {len(classes)}"
                )
            tps.append(match_predictions(cls, item.class_id, box_iou(item.xyxy, boxes)))
            confs.append(conf)
            pred_cls.append(cls)
            target_cls.append(item.class_id)
            keep = conf >= 0.25
            rows.append((item.xyxy, item.class_id, boxes[keep], cls[keep]))
            np.maximum.at(scores[n], cls, conf)
            defective[n] = item.defective
            top.append(float(conf.max()) if len(conf) else 0.0)
            if progress is not None:
                progress(n + 1, len(images))
    finally:
        close()
    ap = ap_per_class(
        np.concatenate(tps), np.concatenate(confs), np.concatenate(pred_cls), np.concatenate(target_cls)
    )
    per_class = {}
    for i, c in enumerate(ap.classes):
        per_class[classes[int(c)]] = {
            "labels": float(ap.labels[i]),
            "precision": float(ap.precision[i]),
            "recall": float(ap.recall[i]),
            "ap50": float(ap.ap[i, 0]),
            "ap50_95": float(ap.ap[i].mean()),
        }
    chosen = thresholds if thresholds is not None else _default_thresholds(model, classes)
    evaluation = Evaluation(
        model=str(model),
        data=str(data),
        split=split,
        classes=classes,
        map50=ap.map50,
        map50_95=ap.map50_95,
        per_class=per_class,
        confusion=confusion_matrix(rows, len(classes)).tolist(),
        thresholds=chosen,
        units=len(images),
        escape_rate=None,
        overkill_rate=None,
        unit_scores=scores,
        unit_defective=defective,
        top_confidence=top,
        computed_in=computed_in,
    )
    rates = evaluation.at_thresholds(chosen)
    evaluation.escape_rate, evaluation.overkill_rate = rates.escape_rate, rates.overkill_rate
    return evaluation
