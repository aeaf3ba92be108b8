"""Bring your own YOLO: ``lineguard model import`` serves an ultralytics model lineguard did not train.

The model is ultralytics' own export of a YOLOv8n built from its YAML (random weights, no download;
``lively`` so its boxes depend on the frame). Imported, it must give the boxes ultralytics' predict
gives through the station's own ``Detector``, register like an export, and say it is uncalibrated;
what the station cannot serve is refused in one line.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import onnx
import pytest
from support.agreement import assert_same_boxes_as_ultralytics

from lineguard.cli import main
from lineguard.config import ModelConfig
from lineguard.inference import Detector
from lineguard.messages import ModelCard, sha256_file
from lineguard.registry import Registry, target_check
from lineguard.synthetic import CLASSES

ORT = ModelConfig(backend="onnxruntime", warmup_runs=1)
CONF, IOU = 0.025, 0.45  # as the engine's agreement test


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: "), err
    assert err.count("\n") == 1, err
    return err


@pytest.fixture
def foreign_onnx(lively_model: Path, tmp_path: Path) -> Path:
    """The ultralytics export alone, as a user brings it: no card beside it."""
    src = tmp_path / "theirs" / "best.onnx"
    src.parent.mkdir()
    shutil.copyfile(lively_model, src)
    return src


@pytest.mark.slow
def test_an_imported_onnx_finds_the_boxes_ultralytics_predict_finds(
    foreign_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lineguard.training.offline import load_ultralytics

    assert main(["bench", "latency", "--model", str(foreign_onnx), "--no-mqtt"]) == 2
    assert "lineguard model import best.onnx --out DIR" in _one_line_error(capsys)

    out = tmp_path / "imported"
    assert main(["model", "import", str(foreign_onnx), "--out", str(out)]) == 0
    assert "uncalibrated default" in capsys.readouterr().out
    card = ModelCard.load(out / "model_card.json")
    assert (card.name, card.classes, card.input_size) == ("best", list(CLASSES), 160)
    assert card.thresholds == dict.fromkeys(CLASSES, 0.5)
    assert card.targets is None and card.achieved is None

    reference: Any = load_ultralytics(threads=1).YOLO(str(foreign_onnx), task="detect")
    with Detector.load(out / "model.onnx", ORT, min_confidence=CONF, nms_iou=IOU) as detector:
        compared = assert_same_boxes_as_ultralytics(detector, reference, conf=CONF, iou=IOU)
    assert compared > 100

    bench = ["bench", "latency", "--model", str(out), "--no-mqtt", "--frames", "3", "--warmup", "0"]
    bench += ["--floor-size", "128"]
    assert main([*bench, "--frame-size", "320x240", "--out", str(tmp_path / "bench"), "--allow-dirty"]) == 0
    assert "| onnxruntime | fp32 |" in capsys.readouterr().out  # the folder benchmarks like an export

    version = Registry(tmp_path / "registry").add(out, why="imported")
    assert version.stage.value == "candidate"
    check = target_check(version.card)
    assert check.passed and check.note.startswith("uncalibrated")


def test_import_calibrates_the_thresholds_on_a_dataset(
    foreign_onnx: Path, synthetic_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "imported"
    args = ["model", "import", str(foreign_onnx), "--out", str(out), "--data", str(synthetic_dataset)]
    assert main([*args, "--max-escape", "0.25", "--version", "1.0.0"]) == 0
    card = ModelCard.load(out / "model_card.json")
    assert card.version == "1.0.0"
    assert card.targets is not None and card.targets.max_escape == 0.25
    assert card.achieved is not None and card.achieved.split in {"calib", "val"}
    assert f"calibrated on {card.achieved.split}" in capsys.readouterr().out
    assert not target_check(card).note.startswith("uncalibrated")


@pytest.mark.slow
def test_a_checkpoint_is_exported_through_lineguards_exporter(lively_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "from_pt"
    weights = lively_model.with_suffix(".pt")
    beside = sha256_file(lively_model)
    assert main(["model", "import", str(weights), "--out", str(out), "--imgsz", "160"]) == 0
    assert sha256_file(lively_model) == beside  # the user's own export next to the .pt is left alone
    card = ModelCard.load(out / "model_card.json")
    assert (card.classes, card.input_size) == (list(CLASSES), 160)
    with Detector.load(out / "model.onnx", ORT) as detector:
        assert detector.input_size == 160


@pytest.mark.slow
def test_a_non_square_export_is_refused_in_one_line(
    lively_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lineguard.training.offline import load_ultralytics

    weights = tmp_path / "wide.pt"
    shutil.copyfile(lively_model.with_suffix(".pt"), weights)
    yolo: Any = load_ultralytics(threads=1).YOLO(str(weights))
    with warnings.catch_warnings():  # torch's tracer warnings are expected; under -W error they abort
        warnings.simplefilter("ignore")
        wide = yolo.export(format="onnx", imgsz=[160, 192], opset=17, verbose=False)
    assert main(["model", "import", str(wide), "--out", str(tmp_path / "out")]) == 2
    assert "takes a 192x160 input; the station's letterbox feeds a square one" in _one_line_error(capsys)


def _edited(model: Path, folder: Path, edit: str) -> Path:
    """``model`` with one thing changed the way another exporter or task would leave it."""
    proto = onnx.load(str(model))
    meta = {p.key: p for p in proto.metadata_props}
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    if edit == "segment":
        meta["task"].value = "segment"
    elif edit == "no names":
        proto.metadata_props.remove(meta["names"])
    elif edit == "five names":
        meta["names"].value = str({i: f"c{i}" for i in range(5)})
    elif edit == "hostile names":
        meta["names"].value = "[" * 50_000
    elif edit == "dynamic":
        dims[2].dim_param = "height"
    path = folder / f"{edit.replace(' ', '_')}.onnx"
    onnx.save(proto, str(path))
    return path


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        ("segment", "is a segment model; lineguard serves YOLO detection models only"),
        ("no names", "has no class names in its metadata"),
        ("hostile names", "class names metadata is not a map of 0..N-1"),
        ("five names", "not the [1, 9, anchors] of a YOLOv8/YOLO11 detect head"),
        ("dynamic", "has a dynamic input shape"),
    ],
)
def test_import_refuses_what_the_station_cannot_serve_in_one_line(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: str, needle: str
) -> None:
    source = _edited(tiny_model / "model.onnx", tmp_path, edit)
    out = tmp_path / "out"
    assert main(["model", "import", str(source), "--out", str(out)]) == 2
    assert needle in _one_line_error(capsys)
    assert not out.exists()


def test_import_refuses_garbage_and_oversize_files_without_echoing_them(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    garbage = tmp_path / "best.onnx"
    garbage.write_bytes(b"\x08\x07SECRET-CONTENT" * 4000)
    assert main(["model", "import", str(garbage), "--out", str(tmp_path / "a")]) == 2
    err = _one_line_error(capsys)
    assert "best.onnx is not an ONNX model onnxruntime can read" in err
    assert "SECRET" not in err

    config = tmp_path / "station.yaml"
    config.write_text("registry:\n  max_model_bytes: 1024\n")
    source = tiny_model / "model.onnx"
    assert main(["model", "import", str(source), "--out", str(tmp_path / "b"), "--config", str(config)]) == 2
    assert "more than the 1024 bytes a station downloads" in _one_line_error(capsys)


def test_an_onnx_imports_without_torch_as_on_an_edge_install(tiny_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "imported"
    code = (
        "import sys\n"
        "sys.modules.update(torch=None, torchvision=None, ultralytics=None, albumentations=None)\n"
        "from lineguard.cli import main\n"
        f"sys.exit(main(['model', 'import', {str(tiny_model / 'model.onnx')!r}, '--out', {str(out)!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert ModelCard.load(out / "model_card.json").classes == list(CLASSES)
