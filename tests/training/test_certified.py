"""Export's variant step on the tiny model: the OpenVINO INT8 file and bf16, measured against fp32 and
recorded in the card, then run by a station that checks the file.

The tiny model has random weights (no training in this test), so its accuracy is no measure of
quantization: the trained model's variants are checked in test_train_evaluate_export.py. What is checked
here is the plumbing: a quantized file, its hash in the card, the rule applied, a station using it.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

import onnx
import pytest

from lineguard.config import ModelConfig
from lineguard.inference import CARD_NAME, Detector, cpu_kernels
from lineguard.messages import Measured, ModelCard, ModelVariant, certify_variant, sha256_file
from lineguard.provenance import cpu_flags
from lineguard.training.calibrate import calibration_split, station_rates
from lineguard.training.certified import INT8_FILE, certified_variants
from lineguard.training.evaluate import evaluate

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None,
    reason="the certified variants need openvino (lineguard[edge])",
)


def test_export_writes_measures_and_records_the_variants(
    tiny_model: Path, synthetic_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "model"
    shutil.copytree(tiny_model, out)
    card = ModelCard.load(out / CARD_NAME)
    fp32 = evaluate(out / "model.onnx", synthetic_dataset, thresholds=card.thresholds)
    base = station_rates(fp32, card.thresholds)
    split, _ = calibration_split(synthetic_dataset)
    fp32_cal = evaluate(out / "model.onnx", synthetic_dataset, split=split, thresholds=card.thresholds)
    said: list[str] = []

    variants, left_out, kept_float = certified_variants(
        out, card, (fp32, fp32_cal), synthetic_dataset, split, said.append
    )

    assert left_out == []
    assert any(line.startswith("INT8 accuracy control: ") for line in said)
    assert variants[0].float_convs == len(kept_float)
    assert [v.name for v in variants] == ["int8", "bf16"]
    int8, bf16 = variants
    assert int8.file == INT8_FILE and sha256_file(out / INT8_FILE) == int8.sha256 != card.sha256
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(out / INT8_FILE)).graph.node)
    assert (bf16.file, bf16.sha256) == (None, card.sha256)
    for v in variants:
        assert v.runtime == "openvino"
        rule, _ = certify_variant(
            Measured(fp32.map50, base.escape_rate, base.no_decision_rate),
            Measured(v.map50, v.escape_rate, v.no_decision_rate),
        )
        measured = not v.reason.startswith("not measured")  # bf16 on a CPU without it ran f32
        assert v.certified == (rule and measured)
        assert any(line.startswith(f"{v.name}: ") and v.reason in line for line in said)

    card.model_copy(update={"variants": variants}).save(out / CARD_NAME)
    ModelCard.load(out / CARD_NAME)  # the card with its variants validates
    auto = ModelConfig(threads=1, warmup_runs=1, confirm_runs=0)
    # Measured here, so certified for this CPU's kernels: auto runs the first certified one.
    assert all(v.kernels == cpu_kernels(v.precision, cpu_flags()) for v in variants)
    runs = next((v for v in variants if v.certified), None)
    with Detector.load(out / "model.onnx", auto) as detector:
        assert (detector.precision, detector.variant_failure) == (runs.name if runs else "fp32", None)
        assert detector.inference_precision == {"int8": "int8 QDQ", "bf16": "bf16"}.get(
            detector.precision, "f32"
        )


def test_calibrate_finds_the_variants_the_card_lists_before_an_older_int8_copy(
    tiny_model: Path, tmp_path: Path
) -> None:
    from lineguard.training.variants import find_variants

    out = tmp_path / "model"
    shutil.copytree(tiny_model, out)
    shutil.copytree(tiny_model, tmp_path / "model_int8")  # what `export --int8` leaves beside it
    shutil.copyfile(out / "model.onnx", out / INT8_FILE)
    card = ModelCard.load(out / CARD_NAME)
    listed = ModelVariant(
        name="int8",
        precision="int8",
        runtime="openvino",
        file=INT8_FILE,
        sha256=sha256_file(out / INT8_FILE),
        map50=0.0,
        certified=True,
        reason="test",
    )
    card.model_copy(update={"variants": [listed]}).save(out / CARD_NAME)

    found = {v.name: v for v in find_variants(out / "model.onnx")}

    assert list(found) == ["fp32", "int8", "bf16"]
    assert (found["int8"].onnx, found["int8"].card) == (out / INT8_FILE, out / CARD_NAME)
    assert (found["int8"].backend, found["int8"].precision, found["int8"].own_card) == (
        "openvino",
        "int8",
        False,
    )


@pytest.mark.parametrize(
    ("variant", "certified", "why"),
    [
        # Two defective units scored just under the threshold go to review, not down the line.
        (Measured(0.529, 0.0, 0.035), True, "within 1 mAP50 point of fp32, no worse escape"),
        (Measured(0.529, 0.005, 0.025), False, "escape is worse than fp32"),
        (Measured(0.529, 0.0, 0.040), False, "NO_DECISION rises 1.5 points (most 1)"),
        (Measured(0.510, 0.0, 0.025), False, "mAP50 drops 1.8 points (most 1)"),
    ],
)
def test_the_rule_counts_units_as_the_station_decides_and_bounds_review(
    variant: Measured, certified: bool, why: str
) -> None:
    fp32 = Measured(0.528, 0.0, 0.025)  # the demo model on val, as its station's policy decides

    ok, reason = certify_variant(fp32, variant)

    assert ok is certified and reason.startswith(why)
    assert "NO_DECISION" in reason and "\n" not in reason


def test_convolutions_put_back_in_float_read_float_and_take_fp32_weights(
    lively_model: Path, synthetic_dataset: Path, tmp_path: Path
) -> None:
    """Accuracy control's surgery: a reverted convolution runs on the float activation and the fp32
    file's exact weights; the others keep the quantization they had."""
    import numpy as np
    import onnxruntime as ort
    from onnx import numpy_helper

    from lineguard.datasets import iter_split
    from lineguard.inference import Preprocessor, read_image_file
    from lineguard.training._parity import quantize_int8
    from lineguard.training.int8_control import _Reverter, quantized_convs

    fp32_file = lively_model  # its model.onnx
    images = [item.path for item in iter_split(synthetic_dataset, "train")][:8]
    qdq = quantize_int8(fp32_file, tmp_path / INT8_FILE, images, 160, runtime="openvino")
    reverter = _Reverter(qdq, fp32_file)
    convs = quantized_convs(reverter.qdq)
    tensor = Preprocessor(160)(read_image_file(images[0]))[0].copy()

    def scores(model: bytes) -> np.ndarray[Any, np.dtype[np.float32]]:
        session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        return np.asarray(session.run(None, {session.get_inputs()[0].name: tensor})[0])[0, 4:]

    fp32, quantized = scores(fp32_file.read_bytes()), scores(qdq.read_bytes())
    all_float = reverter.with_float(convs)
    weights = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(fp32_file)).graph.initializer}
    kept = {i.name: numpy_helper.to_array(i) for i in all_float.graph.initializer}

    assert len(convs) > 50  # YOLOv8n: every convolution but the decode's
    assert quantized_convs(all_float) == []
    constants = [i for n in all_float.graph.node if n.op_type == "Conv" for i in n.input[1:] if i in weights]
    assert len(constants) > 50
    for name in constants:
        np.testing.assert_array_equal(kept[name], weights[name])
    # Split outputs also feed Add and Concat through their shared quantizer, which stays.
    assert np.abs(scores(all_float.SerializeToString()) - fp32).max() < 0.25 * np.abs(quantized - fp32).max()
    assert quantized_convs(reverter.with_float(convs[:1])) == convs[1:]
    np.testing.assert_array_equal(scores(reverter.with_float([]).SerializeToString()), quantized)
