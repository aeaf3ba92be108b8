"""The detector: loads only models it can vouch for, and finds the boxes ultralytics finds."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from support.agreement import assert_same_boxes_as_ultralytics

from lineguard.config import ModelConfig
from lineguard.errors import ConfigError, ModelError
from lineguard.inference import Detections, Detector, as_image, letterbox
from lineguard.messages import ModelCard, sha256_file
from lineguard.synthetic import CLASSES, render_unit

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
ORT = ModelConfig(backend="onnxruntime", warmup_runs=1)


@pytest.fixture
def model_copy(tiny_model: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny model folder that a test may break."""
    out = tmp_path / "model"
    shutil.copytree(tiny_model, out)
    return out


def test_loads_the_tiny_model_and_reports_its_backend(tiny_model: Path) -> None:
    with Detector.load(tiny_model / "model.onnx", ORT) as detector:
        assert detector.backend == "onnxruntime:CPUExecutionProvider"
        assert detector.card.classes == list(CLASSES)
        assert detector.input_size == 160


def test_detect_returns_normalised_detections_and_stage_times(tiny_model: Path) -> None:
    with Detector.load(tiny_model / "model.onnx", ORT, min_confidence=0.0005) as detector:
        found, times = detector.detect(render_unit(1, 0, imgsz=256).image[:, :200])
    assert isinstance(found, Detections)
    assert len(found) > 0  # random weights still give low-confidence boxes at 0.0005
    assert found.xyxy.min() >= 0.0 and found.xyxy.max() <= 1.0
    assert (found.xyxy[:, 2:] >= found.xyxy[:, :2]).all()
    assert min(times.preprocess_s, times.inference_s, times.postprocess_s) > 0


def _rewrite_card(folder: Path, **changes: object) -> None:
    data = json.loads((folder / "model_card.json").read_text())
    data.update(changes)
    (folder / "model_card.json").write_text(json.dumps(data))


def test_a_changed_model_file_fails_the_sha256_check(model_copy: Path) -> None:
    with (model_copy / "model.onnx").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelError, match=r"sha256 .* its card tiny:0\.0\.1 says"):
        Detector.load(model_copy / "model.onnx", ORT)


def test_a_card_with_the_wrong_class_count_is_refused(model_copy: Path) -> None:
    classes = [*CLASSES, "dent"]
    _rewrite_card(model_copy, classes=classes, thresholds=dict.fromkeys(classes, 0.5))
    with pytest.raises(ModelError, match="outputs 8 channels, its card names 5 classes"):
        Detector.load(model_copy / "model.onnx", ORT)


def test_a_card_with_another_input_size_is_refused(model_copy: Path) -> None:
    _rewrite_card(model_copy, input_size=320)
    with pytest.raises(
        ModelError, match=r"takes input \[1, 3, 160, 160\], its card needs a static \[1, 3, 320, 320\]"
    ):
        Detector.load(model_copy / "model.onnx", ORT)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_file_that_is_not_onnx_is_refused(model_copy: Path, backend: str) -> None:
    if backend == "openvino" and not HAS_OPENVINO:
        pytest.skip("openvino is not installed (part of lineguard[edge])")
    fake = model_copy / "model.onnx"
    fake.write_bytes(b"\x89PNG\r\n\x1a\n not a model at all")
    _rewrite_card(model_copy, sha256=sha256_file(fake))
    with pytest.raises(ModelError, match="cannot load the model as ONNX"):
        Detector.load(fake, ModelConfig(backend=backend, warmup_runs=0))  # type: ignore[arg-type]


def test_a_model_without_its_card_is_refused(model_copy: Path) -> None:
    (model_copy / "model_card.json").unlink()
    with pytest.raises(ModelError, match=r"model card not found: .*model_card\.json"):
        Detector.load(model_copy / "model.onnx", ORT)


def test_a_missing_model_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model file not found"):
        Detector.load(tmp_path / "nope.onnx", ORT)


def test_a_card_passed_in_replaces_the_file_beside_the_model(model_copy: Path) -> None:
    card = ModelCard.load(model_copy / "model_card.json")
    (model_copy / "model_card.json").unlink()
    with Detector.load(model_copy / "model.onnx", ORT, card=card) as detector:
        assert detector.card.ref == "tiny:0.0.1"


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        (ModelConfig(backend="onnxruntime", precision="bf16"), "bf16 needs model.backend openvino"),
        (ModelConfig(backend="onnxruntime", providers=["NoSuchExecutionProvider"]), "not available"),
    ],
)
def test_impossible_backend_settings_are_config_errors(
    tiny_model: Path, cfg: ModelConfig, match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        Detector.load(tiny_model / "model.onnx", cfg)


def test_a_closed_detector_refuses_to_run(tiny_model: Path) -> None:
    detector = Detector.load(tiny_model / "model.onnx", ORT)
    detector.close()
    with pytest.raises(ModelError, match="closed"):
        detector.detect(np.zeros((32, 32, 3), np.uint8))


def test_auto_backend_prefers_openvino_on_a_cpu_host_when_installed(tiny_model: Path) -> None:
    expected = "openvino:CPU" if HAS_OPENVINO else "onnxruntime:CPUExecutionProvider"
    with Detector.load(tiny_model / "model.onnx", ModelConfig(backend="auto", warmup_runs=0)) as detector:
        assert detector.backend == expected


@pytest.mark.skipif(not HAS_OPENVINO, reason="openvino is not installed (part of lineguard[edge])")
@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_openvino_runs_at_the_configured_precision(tiny_model: Path, precision: str) -> None:
    cfg = ModelConfig(backend="openvino", precision=precision, warmup_runs=1)  # type: ignore[arg-type]
    with Detector.load(tiny_model / "model.onnx", cfg, min_confidence=0.0005) as detector:
        found, _ = detector.detect(render_unit(1, 0, imgsz=200).image)
        assert (detector.backend, detector.precision) == ("openvino:CPU", precision)
        ran = detector.inference_precision
    assert len(found) > 0
    assert found.xyxy.min() >= 0.0 and found.xyxy.max() <= 1.0
    import openvino as ov

    has_bf16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    # What actually ran is reported: bf16 on a CPU without it is f32, not a silent claim of bf16.
    assert ran == {"fp32": "f32", "bf16": "bf16" if has_bf16 else "f32", "int8": "int8 QDQ"}[precision]


# --- parity with ultralytics' own predict -------------------------------------------------------

CONF, IOU = 0.025, 0.45


def test_letterbox_matches_ultralytics_pixel_for_pixel() -> None:
    from lineguard.training.offline import load_ultralytics

    load_ultralytics(threads=1)
    from ultralytics.data.augment import LetterBox

    for h, w in [(240, 300), (300, 300), (200, 300), (100, 333), (1024, 1280), (90, 60)]:
        frame = as_image(cv2.resize(render_unit(2, 0, imgsz=128).image, (w, h)))
        ours, _ = letterbox(frame, 160)
        np.testing.assert_array_equal(ours, LetterBox((160, 160), auto=False)(image=frame))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_boxes_match_ultralytics_predict_on_the_same_frames(lively_model: Path, backend: str) -> None:
    if backend == "openvino" and not HAS_OPENVINO:
        pytest.skip("openvino is not installed (part of lineguard[edge])")
    from lineguard.training.offline import load_ultralytics

    reference: Any = load_ultralytics(threads=1).YOLO(str(lively_model), task="detect")
    cfg = ModelConfig(backend=backend, warmup_runs=1)  # type: ignore[arg-type]
    with Detector.load(lively_model, cfg, min_confidence=CONF, nms_iou=IOU) as detector:
        compared = assert_same_boxes_as_ultralytics(detector, reference, conf=CONF, iou=IOU)
    assert compared > 100  # the comparison covered real boxes, not empty frames
