"""Training-run configuration: one pydantic model, loaded from YAML, saved resolved in every run.

A run must be reproducible from its folder, so every setting that changes the result (model,
epochs, image size, seed, augmentation) lives here with a default and a description, unknown keys
are errors (a misspelled ``epoch:`` must not silently train 50 epochs), and the resolved config is
written into the run folder. Station settings live in ``lineguard.config``; this is not one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lineguard.config import read_yaml_mapping
from lineguard.errors import ConfigError, validation_message

# Export parity: fewer matched PyTorch/ONNX boxes than this vouch for nothing, and the check fails.
PARITY_MIN_BOXES = 20

__all__ = ["PARITY_MIN_BOXES", "AugmentConfig", "TrainConfig", "load_train_config"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AugmentConfig(_Section):
    """Albumentations applied in the training data loader (probability per transform; 0 = off)."""

    brightness_contrast: float = Field(default=0.5, ge=0, le=1, description="RandomBrightnessContrast p.")
    brightness_limit: float = Field(default=0.2, ge=0, le=1, description="Max brightness shift (share).")
    contrast_limit: float = Field(default=0.2, ge=0, le=1, description="Max contrast change (share).")
    gamma: float = Field(default=0.2, ge=0, le=1, description="RandomGamma p.")
    gamma_limit: tuple[float, float] = Field(default=(80.0, 120.0), description="Gamma range in percent.")
    noise: float = Field(default=0.2, ge=0, le=1, description="GaussNoise p.")
    noise_std: tuple[float, float] = Field(
        default=(0.01, 0.05), description="Noise std range as a share of 255."
    )
    blur: float = Field(default=0.1, ge=0, le=1, description="Blur p.")
    blur_limit: int = Field(default=5, ge=3, description="Largest blur kernel (odd).")
    motion_blur: float = Field(default=0.1, ge=0, le=1, description="MotionBlur p.")
    hflip: float = Field(default=0.5, ge=0, le=1, description="HorizontalFlip p.")
    vflip: float = Field(default=0.5, ge=0, le=1, description="VerticalFlip p (surfaces have no up).")
    rotate: float = Field(default=0.3, ge=0, le=1, description="Small rotation p.")
    rotate_limit: float = Field(default=10.0, ge=0, le=45, description="Largest rotation in degrees.")


class TrainConfig(_Section):
    model: str = Field(
        default="yolov8n.yaml", description="Model YAML (yolov8n.yaml, yolo11n.yaml) or a local .pt file."
    )
    epochs: int = Field(default=50, ge=1, le=10_000)
    time_h: float | None = Field(
        default=None, gt=0, description="Train for this many hours instead (epochs re-planned after epoch 1)."
    )
    imgsz: int = Field(default=320, ge=32, le=4096, description="Square training size (multiple of 32).")
    batch: int = Field(default=16, ge=1, le=1024)
    seed: int = Field(default=0, ge=0)
    device: str = Field(default="auto", description="auto, cpu, or a CUDA index such as 0.")
    workers: int = Field(default=2, ge=0, le=64, description="Data loader worker processes.")
    threads: int | None = Field(default=None, ge=1, description="Torch CPU threads; default all cores.")
    patience: int = Field(default=100, ge=0, description="Stop after this many epochs without gain.")
    optimizer: str = Field(default="auto", description="ultralytics optimizer name (auto, SGD, AdamW).")
    lr0: float | None = Field(default=None, gt=0, description="Initial learning rate; None = default.")
    nbs: int = Field(
        default=64,
        ge=1,
        description="Images per optimizer step (gradients accumulate); = batch: no accumulation.",
    )
    warmup_epochs: float = Field(default=3.0, ge=0, description="Learning-rate warm-up epochs.")
    mosaic: float = Field(default=1.0, ge=0, le=1, description="Mosaic probability.")
    close_mosaic: int = Field(default=10, ge=0, description="Turn mosaic off for the last N epochs.")
    cache: bool = Field(default=True, description="Keep decoded training images in RAM.")
    plots: bool = Field(default=True, description="Write PR curve, confusion matrix and sample PNGs.")
    augment: AugmentConfig = AugmentConfig()


def load_train_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults < YAML file < explicit overrides (CLI options that were given)."""
    data = read_yaml_mapping(path, "training config") if path is not None else {}
    source = str(path) if path is not None else "defaults"
    data |= {k: v for k, v in (overrides or {}).items() if v is not None}
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"training config error in {source}: {validation_message(exc)}") from exc
