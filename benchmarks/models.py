"""A random-weight YOLO detector as ONNX + model card, built from ultralytics' model YAML.

Benchmarks and plumbing tests need a real ONNX file of the shape the product ships (YOLOv8n,
the four synthetic classes, a static square input) without a trained model or any download:
the weights are random, so speed is real and boxes are meaningless. Freshly initialised YOLO
weights make every anchor say the same thing whatever the image (activations fade to zero through
the layers); ``lively=True`` recalibrates BatchNorm on synthetic frames and opens the class biases
so scores and boxes depend on the image, as parity tests need. Needs the ``train`` extra.
"""

from __future__ import annotations

import shutil
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lineguard.messages import ModelCard, sha256_file
from lineguard.synthetic import CLASSES

__all__ = ["build_random_yolo_onnx"]


def build_random_yolo_onnx(
    out_dir: Path,
    *,
    imgsz: int = 160,
    version: str = "0.0.1",
    seed: int = 0,
    name: str = "tiny",
    lively: bool = False,
) -> Path:
    """Write ``model.onnx``, ``model_card.json`` and the weights (``model.pt``) into ``out_dir``.

    Returns the ONNX path; ``model.pt`` lets the latency benchmark run ultralytics' own exporters.
    """
    from lineguard.training.offline import load_ultralytics

    ultralytics = load_ultralytics(threads=1)
    import torch

    yolo_class: Any = ultralytics.YOLO  # through the module: ultralytics' own annotations are loose

    torch.manual_seed(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    yaml_path = out_dir / "yolov8n.yaml"  # the "n" in the name picks the nano scale
    src = Path(str(ultralytics.__file__)).parent / "cfg" / "models" / "v8" / "yolov8.yaml"
    yaml_path.write_text(src.read_text().replace("nc: 80", f"nc: {len(CLASSES)}"))
    model = yolo_class(str(yaml_path))
    model.model.names = dict(enumerate(CLASSES))  # the export's metadata then names what the card does
    if lively:
        _make_lively(model.model, imgsz=imgsz, seed=seed)
    model.save(out_dir / "model.pt")
    with warnings.catch_warnings():  # torch's tracer warnings are expected here; under -W error they abort
        warnings.simplefilter("ignore")
        exported = Path(model.export(format="onnx", imgsz=imgsz, opset=17, simplify=False, verbose=False))
    onnx_path = out_dir / "model.onnx"
    shutil.move(str(exported), onnx_path)
    card = ModelCard(
        name=name,
        version=version,
        sha256=sha256_file(onnx_path),
        classes=list(CLASSES),
        input_size=imgsz,
        opset=17,
        thresholds=dict.fromkeys(CLASSES, 0.5),
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    card.save(out_dir / "model_card.json")
    return onnx_path


def _make_lively(net: Any, *, imgsz: int, seed: int) -> None:
    """Give a random network image-dependent outputs: BatchNorm statistics from synthetic frames."""
    import numpy as np
    import torch

    from lineguard.synthetic import render_unit

    frames = np.stack([render_unit(seed + 1000, i, imgsz=imgsz).image[..., ::-1] for i in range(16)])
    batch = torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2))).float() / 255
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration batch
    net.train()
    with torch.no_grad():
        net(batch)
    net.eval()
    head = net.model[-1]
    with torch.no_grad():
        for branch in head.cv3:  # class logits: a prior of about 2 %, so scores spread over 0..1
            branch[-1].bias.fill_(-4.0)
        bins = torch.arange(head.reg_max, dtype=torch.float32)
        for branch in head.cv2:  # box sides: a few strides, not the whole image
            branch[-1].bias.copy_((-0.6 * bins).repeat(4))
