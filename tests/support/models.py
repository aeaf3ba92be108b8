"""A tiny YOLO detector as ONNX + model card, built from a model YAML with random weights.

Plumbing tests (engine, daemon, registry, hot swap) need a real ONNX file of the shape the
product ships, not a mock; training one would take minutes, so the weights are random.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

from lineguard.model_card import ModelCard, sha256_file
from lineguard.synthetic import CLASSES

__all__ = ["build_random_yolo_onnx"]


def build_random_yolo_onnx(out_dir: Path, *, imgsz: int = 160, version: str = "0.0.1", seed: int = 0) -> Path:
    """Write ``model.onnx`` and ``model_card.json`` into ``out_dir``; return the ONNX path."""
    from lineguard.training.offline import load_ultralytics

    load_ultralytics(threads=1)
    import torch
    from ultralytics import YOLO

    torch.manual_seed(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    yaml_path = out_dir / "yolov8n.yaml"  # the "n" in the name picks the nano scale
    src = Path(__import__("ultralytics").__file__).parent / "cfg" / "models" / "v8" / "yolov8.yaml"
    text = src.read_text().replace("nc: 80", f"nc: {len(CLASSES)}")
    yaml_path.write_text(text)
    model = YOLO(str(yaml_path))
    exported = Path(model.export(format="onnx", imgsz=imgsz, opset=17, simplify=False, verbose=False))
    onnx_path = out_dir / "model.onnx"
    shutil.move(str(exported), onnx_path)
    card = ModelCard(
        name="tiny",
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
