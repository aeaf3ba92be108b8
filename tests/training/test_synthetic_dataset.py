"""``lineguard data synth`` / ``data stats``: a deterministic dataset version with a video."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
import yaml

from lineguard.errors import DatasetError
from lineguard.messages import DatasetManifest
from lineguard.synthetic import CLASSES
from lineguard.training.dataset_stats import dataset_stats, write_sample_grid
from lineguard.training.synthetic_dataset import write_synthetic_dataset


def _labels(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.glob("labels/*/*.txt"))}


def test_same_seed_gives_byte_identical_labels_and_images(tmp_path: Path) -> None:
    a = write_synthetic_dataset(tmp_path / "a", images=12, seed=1, imgsz=96, video_frames=0)
    b = write_synthetic_dataset(tmp_path / "b", images=12, seed=1, imgsz=96, video_frames=0)
    assert _labels(tmp_path / "a") == _labels(tmp_path / "b")
    assert a.content_hash == b.content_hash
    c = write_synthetic_dataset(tmp_path / "c", images=12, seed=2, imgsz=96, video_frames=0)
    assert c.content_hash != a.content_hash


def test_dataset_version_has_yolo_layout_manifest_and_video(synthetic_dataset: Path) -> None:
    data = yaml.safe_load((synthetic_dataset / "data.yaml").read_text())
    assert data["names"] == dict(enumerate(CLASSES))
    manifest = DatasetManifest.load(synthetic_dataset)
    assert manifest.verify(synthetic_dataset) == []
    assert manifest.counts["train"]["images"] + manifest.counts["val"]["images"] == 48
    # a quarter more units, rendered for threshold calibration only, never in train or val
    assert manifest.counts["calib"]["images"] == 12
    calib = {p.name for p in (synthetic_dataset / "images" / "calib").iterdir()}
    fitted = {p.name for split in ("train", "val") for p in (synthetic_dataset / "images" / split).iterdir()}
    assert len(calib) == 12 and not calib & fitted
    assert "calib" not in data  # ultralytics reads data.yaml: nothing there points training at calib
    video = cv2.VideoCapture(str(synthetic_dataset / "video" / "line.avi"))
    frames = 0
    while video.read()[0]:
        frames += 1
    video.release()
    truth = (synthetic_dataset / "video" / "line_truth.jsonl").read_text().splitlines()
    assert frames == len(truth) == 60
    assert {"frame", "unit_index", "defective", "classes"} <= set(json.loads(truth[0]))


def test_stats_count_every_class_and_draw_a_grid(synthetic_dataset: Path, tmp_path: Path) -> None:
    stats = dataset_stats(synthetic_dataset)
    assert sum(stats.images.values()) == 48 + 12  # train + val + calib
    assert all(sum(stats.boxes[s][c] for s in stats.boxes) > 0 for c in CLASSES)
    table = stats.table()
    assert "scratch" in table and "(defect-free)" in table
    grid = write_sample_grid(synthetic_dataset, tmp_path / "grid.png")
    image = cv2.imread(str(grid.path))
    assert image is not None and image.shape[0] >= 4 * 200  # 16 tiles, 4 a row
    assert (grid.defective, grid.good) == (12, 4)  # the last row shows good units
    last_row = image[-200:]
    green = (last_row[..., 1] > 150) & (last_row[..., 0] < 30) & (last_row[..., 2] < 30)
    assert green.sum() > 4 * 3 * 190 * 4  # each good tile framed in green


def test_existing_folder_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "keep.txt").write_text("precious")
    with pytest.raises(DatasetError, match="immutable"):
        write_synthetic_dataset(tmp_path / "ds", images=4, seed=0, imgsz=64, video_frames=0)
    assert (tmp_path / "ds" / "keep.txt").read_text() == "precious"
