"""Ultralytics' validator, made to see frames as a station does: one accuracy from training to line.

Out of the box the validator letterboxes each batch to a rectangle with half a stride of gray
border (``rect=True, pad=0.5``) and lets a box count for several classes (multi-label NMS). A
station does neither: it letterboxes to the model's square input with no extra border and keeps
each box's best class. The two figures differ (by up to several points on real data, and the
boxes of a model read as tighter than the line gets), and training picks ``best.pt`` by the
validator's. ``StationTrainer`` swaps in ``StationValidator``: square letterbox, no border,
single-label NMS at the same conf/IoU (0.001/0.7), so training's mAP, ``lineguard evaluate``, the
card and the registry report one figure for the same weights.
"""

from __future__ import annotations

from typing import Any

from lineguard.training.offline import load_ultralytics

__all__ = ["station_trainer", "station_validator"]


def station_validator() -> type[Any]:
    """``DetectionValidator`` with the station's single-label NMS (its data loader: ``rect=False``)."""
    load_ultralytics()
    from ultralytics.models.yolo.detect import DetectionValidator
    from ultralytics.utils import nms

    class StationValidator(DetectionValidator):  # type: ignore[misc]
        def postprocess(self, preds: Any) -> list[dict[str, Any]]:
            outputs = nms.non_max_suppression(
                preds,
                self.args.conf,
                self.args.iou,
                nc=0,
                multi_label=False,  # one class per box, as the station decides
                agnostic=self.args.single_cls or self.args.agnostic_nms,
                max_det=self.args.max_det,
                end2end=self.end2end,
            )
            return [{"bboxes": x[:, :4], "conf": x[:, 4], "cls": x[:, 5], "extra": x[:, 6:]} for x in outputs]

    return StationValidator


def station_trainer() -> type[Any]:
    """``DetectionTrainer`` whose validation (per epoch, best.pt, final) sees the station's frames."""
    load_ultralytics()
    from copy import copy

    from ultralytics.data import build_yolo_dataset
    from ultralytics.models.yolo.detect import DetectionTrainer
    from ultralytics.utils.torch_utils import unwrap_model

    validator = station_validator()

    class StationTrainer(DetectionTrainer):  # type: ignore[misc]
        def build_dataset(self, img_path: str, mode: str = "train", batch: int | None = None) -> Any:
            if mode != "val":
                return super().build_dataset(img_path, mode, batch)
            stride = max(int(unwrap_model(self.model).stride.max()), 32)
            # Square letterbox to imgsz, no rectangle batches, no extra border: the station's input.
            return build_yolo_dataset(
                self.args, img_path, batch, self.data, mode=mode, rect=False, stride=stride
            )

        def get_validator(self) -> Any:
            return validator(
                self.test_loader, save_dir=self.save_dir, args=copy(self.args), _callbacks=self.callbacks
            )

    return StationTrainer
