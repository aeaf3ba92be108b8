"""Accuracy leg of the latency benchmark: mAP50 of each backend/precision on a validation split.

A faster backend or a lower precision is only worth having if the boxes stay the same, so the
latency benchmark scores every variant it times on the same images. Predictions come from the
edge's own ``Detector`` (or ultralytics' predict, for the reference row) at the evaluation
settings of ``lineguard evaluate`` (conf 0.001, IoU 0.7), and are scored by the training
package's metric code, so the figures are comparable with the model card's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from lineguard.datasets import LabeledImage, iter_split, read_class_names
from lineguard.errors import DatasetError, InputError
from lineguard.inference import Detections, ap_per_class, box_iou, match_predictions, read_image_file

__all__ = ["Accuracy", "ValidationSet", "score"]

Image = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class Accuracy:
    map50: float
    map50_95: float
    images: int


@dataclass(frozen=True)
class ValidationSet:
    """A split's images, decoded once, with their labels (normalised xyxy)."""

    data: Path
    split: str
    classes: list[str]
    items: list[tuple[Image, LabeledImage]]

    @classmethod
    def load(cls, data: Path, split: str = "val") -> ValidationSet:
        classes = read_class_names(data)
        items = [(read_image_file(item.path), item) for item in iter_split(data, split)]
        if not items:
            raise DatasetError(f"{data} has no images in split {split}; pick a split that has some")
        return cls(data, split, classes, items)

    def check_classes(self, model_classes: list[str], model: str) -> None:
        if model_classes != self.classes:
            raise InputError(
                f"{model} was trained for classes {model_classes}; {self.data} has {self.classes}; "
                "pass --data of the model's own dataset"
            )


def score(predict: Callable[[Image], Detections], val: ValidationSet) -> Accuracy:
    """mAP50 and mAP50-95 of ``predict`` over ``val`` (ultralytics' matching and AP definitions)."""
    tps, confs, pred_cls, target_cls = [], [], [], []
    for image, item in val.items:
        det = predict(image)
        order = np.argsort(-det.confidence, kind="stable")
        boxes, cls = det.xyxy[order].astype(np.float64), det.class_id[order]
        tps.append(match_predictions(cls, item.class_id, box_iou(item.xyxy, boxes)))
        confs.append(det.confidence[order])
        pred_cls.append(cls)
        target_cls.append(item.class_id)
    ap = ap_per_class(
        np.concatenate(tps), np.concatenate(confs), np.concatenate(pred_cls), np.concatenate(target_cls)
    )
    return Accuracy(map50=ap.map50, map50_95=ap.map50_95, images=len(val.items))
