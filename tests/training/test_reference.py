"""The image half of a card's reference: spread over the split, in file order, with its source."""

from __future__ import annotations

from pathlib import Path

import pytest

from lineguard.config import QualityConfig
from lineguard.datasets import image_files
from lineguard.inference import QualityGate, quality_bounds, read_image_file, screen_frames
from lineguard.training import image_reference
from lineguard.training.synthetic_dataset import write_synthetic_dataset


@pytest.fixture(scope="module")
def glossy_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A dataset version of the glossy line (mean gray up to ~246): 36 train and 12 val images."""
    out = tmp_path_factory.mktemp("glossy") / "ds"
    manifest = write_synthetic_dataset(out, images=48, seed=3, imgsz=96, condition="glossy", video_frames=0)
    return out, manifest.content_hash


def test_samples_spread_over_the_split_in_file_order_and_name_their_source(
    glossy_data: tuple[Path, str],
) -> None:
    data, digest = glossy_data
    reference, indices = image_reference(data, "val", dataset_hash=digest, limit=5)
    files = image_files(data / "images" / "val")
    assert indices[0] == 0 and indices[-1] == len(files) - 1 and indices == sorted(indices)
    gate = QualityGate(QualityConfig(), frozen_frames=1 << 30)
    expected = [round(gate.check(read_image_file(files[i])).brightness, 3) for i in indices]
    assert reference.brightness == expected  # the chosen files, in their order
    source = reference.source
    assert source is not None
    assert (source.split, source.frames, source.of, source.dataset_hash) == ("val", 5, 12, digest)
    assert source.describe().startswith(f"5 of 12 'val' frames of {digest[:12]} in file order")


def test_training_range_lets_the_station_pass_its_own_training_frames(glossy_data: tuple[Path, str]) -> None:
    data, _ = glossy_data
    reference, _ = image_reference(data, "val")
    assert reference.image_range is not None and reference.image_range.frames == 36
    train = [read_image_file(p) for p in image_files(data / "images" / "train")]
    cfg = QualityConfig()
    assert sum(screen_frames(train, quality_bounds(cfg), cfg).rejected.values()) > 0  # built-in 235
    fitted = screen_frames(train, quality_bounds(cfg, reference), cfg)
    assert sum(fitted.rejected.values()) == 0, fitted.line()
    assert "36 training frames" in fitted.bounds.source
