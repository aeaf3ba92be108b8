"""A ``.tif`` image is counted by every reader on its way: import, the train split, the gate.

Readers that each kept their own list of image suffixes once let a TIFF that training learned from
vanish from the promotion gate's evaluation; one list in ``lineguard.datasets`` prevents that.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from support.signal_model import build_signal_onnx

from lineguard.cli import main
from lineguard.datasets import iter_split
from lineguard.messages import DatasetManifest, ModelCard
from lineguard.registry import EvalSet, evaluate_model
from lineguard.synthetic import CLASSES, render_unit
from lineguard.training.dataset_stats import dataset_stats

UNITS = 6
SEED = 5


def _yolo_source(root: Path) -> Path:
    """A YOLO source with a train split of UNITS units: unit 0 is a TIFF (written by PIL), the rest PNG."""
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
    for index in range(UNITS + 1):
        split = "val" if index == UNITS else "train"
        unit = render_unit(SEED, index, imgsz=160, defect_rate=1.0 if index == 0 else 0.5)
        suffix = ".tif" if index == 0 else ".png"
        rgb = np.ascontiguousarray(unit.image[:, :, ::-1])
        Image.fromarray(rgb).save(root / "images" / split / f"unit_{index}{suffix}")
        rows = "".join(f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in unit.labels)
        (root / "labels" / split / f"unit_{index}.txt").write_text(rows)
    (root / "data.yaml").write_text(yaml.safe_dump({"names": list(CLASSES)}))
    return root


def test_a_tif_is_imported_read_in_the_train_split_and_evaluated_by_the_gate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _yolo_source(tmp_path / "src")
    version = tmp_path / "v1"

    assert main(["data", "import", "--format", "yolo", str(src), "--out", str(version), "--strict"]) == 0
    capsys.readouterr()
    tif = version / "images" / "train" / "unit_0.tif"
    assert tif.is_file()
    manifest = DatasetManifest.load(version)
    assert manifest.counts["train"]["images"] == UNITS
    assert manifest.skipped == {}

    train = list(iter_split(version, "train"))
    assert len(train) == UNITS
    item = next(i for i in train if i.path == tif)
    assert item.defective and item.xyxy.shape[1] == 4
    assert dataset_stats(version).images["train"] == UNITS

    eval_set = EvalSet.load(version, "train")
    assert [u.image.name for u in eval_set.units].count("unit_0.tif") == 1
    model = build_signal_onnx(tmp_path / "model")
    result = evaluate_model(model, ModelCard.load(model.parent / "model_card.json"), eval_set)
    assert result.units == UNITS
    assert result.defective_units == sum(i.defective for i in train)
    assert result.errors == 0
