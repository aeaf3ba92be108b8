"""The image half of a model card's reference: what the edge's gate measures on the model's data.

Two consumers read it. Drift detection compares a window of live frames with samples of the
validation split; those samples must stand for the whole split and keep its file order, or a
replay of the split alarms against itself (a sample of its first frames is one class of a
class-sorted folder). The image-quality gate widens its limits to the training frames; it needs
their extremes, not a sample. Both are measured by the edge's own ``QualityGate`` so the edge
compares like with like.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from lineguard.config import QualityConfig
from lineguard.datasets import iter_split, spread_indices
from lineguard.errors import DatasetError
from lineguard.inference import QualityGate, QualityReport, read_image_file
from lineguard.messages import ImageRange, ReferenceSource, ReferenceStats

__all__ = ["RANGE_IMAGES", "REFERENCE_IMAGES", "image_reference"]

REFERENCE_IMAGES = 1000  # validation frames sampled for drift (about 40 kB of card); above the window
RANGE_IMAGES = 5000  # training frames measured for the quality gate's bounds (~1 ms each)


def _measure(paths: list[Path]) -> list[QualityReport]:
    gate = QualityGate(QualityConfig(), frozen_frames=1 << 30)  # separate units, not a stream
    return [gate.check(read_image_file(path)) for path in paths]


def _image_range(data: Path, split: str, limit: int) -> ImageRange | None:
    try:
        paths = [item.path for item in iter_split(data, split)]
    except DatasetError:
        return None  # a dataset without that split: the gate falls back to the sample lists
    if not paths:
        return None
    reports = _measure([paths[i] for i in spread_indices(len(paths), limit)])

    def quantiles(values: list[float]) -> tuple[float, float]:
        low, high = np.quantile(np.asarray(values, np.float64), [0.001, 0.999])
        return round(float(low), 3), round(float(high), 3)

    return ImageRange(
        frames=len(reports),
        brightness=quantiles([r.brightness for r in reports]),
        contrast=quantiles([r.contrast for r in reports]),
        sharpness=quantiles([r.sharpness for r in reports]),
    )


def image_reference(
    data: Path,
    split: str = "val",
    *,
    dataset_hash: str = "",
    train_split: str = "train",
    limit: int = REFERENCE_IMAGES,
    range_limit: int = RANGE_IMAGES,
) -> tuple[ReferenceStats, list[int]]:
    """Brightness, contrast and sharpness samples of ``split`` (with their source) and the
    training frames' range; also the indices sampled, so per-unit model figures can follow."""
    items = list(iter_split(data, split))
    indices = spread_indices(len(items), limit)
    reports = _measure([items[i].path for i in indices])
    stats = ReferenceStats(
        brightness=[round(r.brightness, 3) for r in reports],
        contrast=[round(r.contrast, 3) for r in reports],
        sharpness=[round(r.sharpness, 3) for r in reports],
        source=ReferenceSource(
            dataset=str(data),
            dataset_hash=dataset_hash,
            split=split,
            frames=len(indices),
            of=len(items),
            created_at=datetime.now(UTC),
        ),
        image_range=_image_range(data, train_split, range_limit),
    )
    return stats, indices
