"""Albumentations from the config: what the loader gets, and the preview grid an engineer looks at."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from lineguard.cli import main
from lineguard.training.augment import build_transforms
from lineguard.training.config import AugmentConfig


def test_transforms_follow_the_config() -> None:
    names = [type(t).__name__ for t in build_transforms(AugmentConfig())]
    assert names == [
        "RandomBrightnessContrast",
        "RandomGamma",
        "GaussNoise",
        "Blur",
        "MotionBlur",
        "HorizontalFlip",
        "VerticalFlip",
        "Rotate",
    ]
    only_flip = AugmentConfig(
        brightness_contrast=0, gamma=0, noise=0, blur=0, motion_blur=0, vflip=0, rotate=0, hflip=1.0
    )
    assert [type(t).__name__ for t in build_transforms(only_flip)] == ["HorizontalFlip"]


def test_the_loader_hook_moves_boxes_with_the_image() -> None:
    """The list goes to ultralytics' Albumentations wrapper; a flip must flip the labels too."""
    from lineguard.training.offline import load_ultralytics

    load_ultralytics(threads=1)
    from ultralytics.data.augment import Albumentations
    from ultralytics.utils.instance import Instances

    cfg = AugmentConfig(
        brightness_contrast=0, gamma=0, noise=0, blur=0, motion_blur=0, vflip=0, rotate=0, hflip=1.0
    )
    hook = Albumentations(p=1.0, transforms=build_transforms(cfg))
    image = np.zeros((100, 100, 3), np.uint8)
    image[10:30, 10:20] = 255
    boxes = np.array([[0.15, 0.2, 0.1, 0.2]], dtype=np.float32)  # normalised xywh of the bright patch
    labels = {
        "img": image,
        "cls": np.array([[0.0]]),
        "instances": Instances(
            boxes, np.zeros((0, 1000, 2), np.float32), bbox_format="xywh", normalized=True
        ),
    }

    out = hook(labels)

    assert out["img"][15, 85].tolist() == [255, 255, 255]  # the patch moved to the right
    assert out["instances"].bboxes[0][:2] == pytest.approx([0.85, 0.2], abs=1e-3)


def test_preview_writes_a_grid(
    synthetic_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "train.yaml"
    config.write_text("augment:\n  rotate: 1.0\n")
    png = tmp_path / "preview.png"

    code = main(
        [
            "data",
            "preview",
            str(synthetic_dataset),
            "--augment",
            str(config),
            "--png",
            str(png),
            "--samples",
            "8",
        ]
    )

    assert code == 0
    grid = cv2.imread(str(png))
    assert grid is not None and grid.shape == (400, 800, 3)
    assert "augmentation preview" in capsys.readouterr().out
