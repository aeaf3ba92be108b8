"""A hand-built ONNX "detector" that really finds the synthetic line's dark defects, in milliseconds.

Gate, shadow and hot-swap tests and the fleet benchmark need models that differ in a known
direction (one catches defects, one does not, one FAILs every unit); random-weight YOLO models
all detect nothing, and training one takes minutes. This
graph has the exact interface of a YOLOv8 detect export (input ``images`` ``(1, 3, S, S)``, output
``output0`` ``(1, 4 + nc, anchors)``) and scores each anchor cell by a black top-hat (closing minus
the image: thin dark marks on bright metal), so it is deterministic and meaningfully accurate.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from lineguard.messages import ModelCard, sha256_file
from lineguard.synthetic import CLASSES

__all__ = ["build_signal_onnx", "write_eval_set"]

STRIDES = (8, 16, 32)


def _anchor_boxes(imgsz: int) -> npt.NDArray[np.float32]:
    cols = []
    for stride in STRIDES:
        n = imgsz // stride
        ys, xs = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        cx = (xs.reshape(-1) + 0.5) * stride
        cy = (ys.reshape(-1) + 0.5) * stride
        wh = np.full(cx.shape, 2.0 * stride)
        cols.append(np.stack([cx, cy, wh, wh]))
    boxes: npt.NDArray[np.float32] = np.concatenate(cols, axis=1)[None].astype(np.float32)
    return boxes  # (1, 4, anchors)


def build_signal_onnx(
    out_dir: Path,
    *,
    imgsz: int = 160,
    name: str = "signal",
    version: str = "1.0.0",
    classes: tuple[str, ...] = CLASSES,
    contrast: float = 0.19,
    gain: float = 40.0,
    thresholds: dict[str, float] | None = None,
    parent: str | None = None,
    dataset_hash: str = "",
    training_run: str = "",
) -> Path:
    """Write ``model.onnx`` + ``model_card.json`` into ``out_dir``; return the ONNX path.

    ``contrast`` is the top-hat depth (0..1 of the intensity range) scored 0.5; ``thresholds``
    default to 0.5 for every class (set 1.0 to make a model that never FAILs a unit).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nc = len(classes)
    kernel = 9
    nodes = [
        helper.make_node("Conv", ["images", "gray_w"], ["gray"]),
        helper.make_node("MaxPool", ["gray"], ["dil"], kernel_shape=[kernel, kernel], pads=[kernel // 2] * 4),
        helper.make_node("Neg", ["dil"], ["neg_dil"]),
        helper.make_node(
            "MaxPool", ["neg_dil"], ["neg_close"], kernel_shape=[kernel, kernel], pads=[kernel // 2] * 4
        ),
        helper.make_node("Neg", ["neg_close"], ["close"]),
        helper.make_node("Sub", ["close", "gray"], ["tophat_raw"]),
        helper.make_node("Relu", ["tophat_raw"], ["tophat"]),
    ]
    levels = []
    for stride in STRIDES:
        nodes += [
            helper.make_node(
                "MaxPool", ["tophat"], [f"p{stride}"], kernel_shape=[stride, stride], strides=[stride, stride]
            ),
            helper.make_node("Reshape", [f"p{stride}", "flat_shape"], [f"f{stride}"]),
        ]
        levels.append(f"f{stride}")
    nodes += [
        helper.make_node("Concat", levels, ["peaks"], axis=2),
        helper.make_node("Sub", ["peaks", "contrast"], ["centred"]),
        helper.make_node("Mul", ["centred", "gain"], ["logit1"]),
        helper.make_node("Add", ["logit1", "class_bias"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["scores"]),
        helper.make_node("Concat", ["boxes", "scores"], ["output0"], axis=1),
    ]
    anchors = sum((imgsz // s) ** 2 for s in STRIDES)
    bias = np.full((1, nc, 1), -3.0, np.float32)
    bias[0, 0, 0] = 0.0
    inits = [
        numpy_helper.from_array(np.full((1, 3, 1, 1), 1.0 / 3.0, np.float32), "gray_w"),
        numpy_helper.from_array(np.array([1, 1, -1], np.int64), "flat_shape"),
        numpy_helper.from_array(np.array(contrast, np.float32), "contrast"),
        numpy_helper.from_array(np.array(gain, np.float32), "gain"),
        numpy_helper.from_array(bias, "class_bias"),
        numpy_helper.from_array(_anchor_boxes(imgsz), "boxes"),
    ]
    graph = helper.make_graph(
        nodes,
        f"{name}-{version}",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, imgsz, imgsz])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 4 + nc, anchors])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / "model.onnx"
    onnx.save(model, str(onnx_path))
    card = ModelCard(
        name=name,
        version=version,
        sha256=sha256_file(onnx_path),
        classes=list(classes),
        input_size=imgsz,
        opset=17,
        thresholds=thresholds if thresholds is not None else dict.fromkeys(classes, 0.5),
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        parent=parent,
        dataset_hash=dataset_hash,
        training_run=training_run,
    )
    card.save(out_dir / "model_card.json")
    return onnx_path


def write_eval_set(out: Path, *, units: int = 60, seed: int = 11, imgsz: int = 160) -> Path:
    """A flat YOLO folder (``images/`` + ``labels/``) of synthetic units, half of them defective."""
    import cv2

    from lineguard.synthetic import render_unit

    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    for index in range(units):
        unit = render_unit(seed, index, imgsz=imgsz, defect_rate=0.5)
        cv2.imwrite(str(out / "images" / f"unit_{index:04d}.png"), unit.image)
        rows = "".join(f"{c} {x} {y} {w} {h}\n" for c, x, y, w, h in unit.labels)
        (out / "labels" / f"unit_{index:04d}.txt").write_text(rows)
    return out
