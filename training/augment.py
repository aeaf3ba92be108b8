"""Albumentations pipeline built from the training config, and a preview grid of its output.

Line cameras see lamps age, lenses blur and parts turn, so training images are varied the same
way: photometric (brightness/contrast, gamma, noise, blur, motion blur) and geometric (flips,
small rotations). The same transform list feeds ultralytics' data loader (its ``augmentations``
hook, applied after mosaic) and ``lineguard data preview``, so what an engineer sees in the PNG is
what the model is trained on.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from lineguard.datasets import image_files, read_class_names, read_yolo_labels
from lineguard.errors import DatasetError
from lineguard.inference import read_image_file, write_tile_grid
from lineguard.training.config import AugmentConfig
from lineguard.training.offline import set_offline_environment

__all__ = ["build_transforms", "write_preview"]


def _albumentations() -> Any:
    set_offline_environment()  # NO_ALBUMENTATIONS_UPDATE: a bare import would ask PyPI
    import albumentations

    return albumentations


def build_transforms(cfg: AugmentConfig) -> list[Any]:
    """The configured transforms (those with p > 0), in the order they are applied."""
    A = _albumentations()  # noqa: N806 - albumentations' conventional alias
    blur = cfg.blur_limit if cfg.blur_limit % 2 else cfg.blur_limit + 1
    candidates = [
        (
            cfg.brightness_contrast,
            lambda p: A.RandomBrightnessContrast(
                brightness_limit=cfg.brightness_limit, contrast_limit=cfg.contrast_limit, p=p
            ),
        ),
        (cfg.gamma, lambda p: A.RandomGamma(gamma_limit=cfg.gamma_limit, p=p)),
        (cfg.noise, lambda p: A.GaussNoise(std_range=cfg.noise_std, p=p)),
        (cfg.blur, lambda p: A.Blur(blur_limit=(3, blur), p=p)),
        (cfg.motion_blur, lambda p: A.MotionBlur(blur_limit=(3, blur), p=p)),
        (cfg.hflip, lambda p: A.HorizontalFlip(p=p)),
        (cfg.vflip, lambda p: A.VerticalFlip(p=p)),
        (
            cfg.rotate,
            lambda p: A.Rotate(
                limit=cfg.rotate_limit, border_mode=cv2.BORDER_REFLECT_101, rotate_method="ellipse", p=p
            ),
        ),
    ]
    return [make(p) for p, make in candidates if p > 0]  # type: ignore[no-untyped-call]


def write_preview(
    root: Path, cfg: AugmentConfig, out_png: Path, *, samples: int = 16, seed: int = 0, tile: int = 200
) -> Path:
    """Draw ``samples`` augmented training images with their moved boxes into a PNG grid."""
    A = _albumentations()  # noqa: N806
    classes = read_class_names(root)
    train = root / "images" / "train"
    images = image_files(train) if train.is_dir() else []
    if not images:
        raise DatasetError(f"{root} has no images/train to preview; is it a dataset version?")
    pipeline = A.Compose(
        build_transforms(cfg),
        bbox_params=A.BboxParams(format="yolo", label_fields=["class_labels"], clip=True),
        seed=seed,
    )
    rng = random.Random(seed)
    tiles = []
    for path in (rng.choice(images) for _ in range(samples)):
        image = read_image_file(path)
        rows = read_yolo_labels(root / "labels" / "train" / f"{path.stem}.txt")
        out = pipeline(
            image=image,
            bboxes=np.array([r[1:] for r in rows]).reshape(-1, 4),
            class_labels=[r[0] for r in rows],
        )
        tiles.append(_draw(out["image"], out["bboxes"], out["class_labels"], classes, tile))
    return write_tile_grid(tiles, out_png)


def _draw(
    image: npt.NDArray[np.uint8], boxes: Any, labels: Any, classes: list[str], tile: int
) -> npt.NDArray[np.uint8]:
    image = np.asarray(cv2.resize(image, (tile, tile)), dtype=np.uint8)
    for (x, y, w, h), c in zip(np.asarray(boxes).reshape(-1, 4), labels, strict=True):
        p1 = (int((x - w / 2) * tile), int((y - h / 2) * tile))
        p2 = (int((x + w / 2) * tile), int((y + h / 2) * tile))
        cv2.rectangle(image, p1, p2, (0, 0, 255), 1)
        name = classes[int(c)] if 0 <= int(c) < len(classes) else str(c)
        cv2.putText(
            image, name, (p1[0], max(10, p1[1] - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 255, 255), 1
        )
    return image
