"""The faster variants an export certifies: OpenVINO INT8 and OpenVINO bf16, each measured vs fp32.

A station set to ``precision: auto`` runs whichever certified variant its CPU runs fastest, so a
variant must be measured where fp32 was: on the same frozen split (val, the card's ``metrics``), at
the card's thresholds, through the edge's own detector on the runtime the station will use, and
with the CPU kernels it will use: each variant records the kernels this CPU ran it with, and a
station runs it only where its CPU has the same (``lineguard.inference.kernels``). The rule
(within 1 mAP50 point of fp32, no worse unit escape and at most 1 point more NO_DECISION, units
decided as a station's policy decides them) is ``certify_variant``, the one the registry's gate
applies again on its own evaluation set.

INT8 is the project's one static quantizer (``quantize_int8``: QDQ, per-channel 7-bit weights,
uint8 activations, the detect head's decode left float; in the layout OpenVINO fuses: convolution
inputs quantized, SiLU left to fold into its convolution) calibrated on the calibration split's
frames and written as ``model_int8.onnx`` beside ``model.onnx``; OpenVINO compiles the QDQ graph to
int8 kernels. When the fully quantized file fails the rule on the calibration split, accuracy
control (``int8_control``) puts back in float the few convolutions that move the scores most, and
certification on val measures the result. NNCF's plain post-training quantization (MIXED preset,
decode float) was measured on the trained test model and lost 8-11 mAP50 points with 68-80 %
escape at the card's thresholds, where this file gained 1.9 points with no escape, so NNCF is not
used. bf16 is a setting, not a file: OpenVINO runs ``model.onnx`` in bf16.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lineguard.datasets import iter_split
from lineguard.inference import available_backends, cpu_kernels
from lineguard.messages import Measured, ModelCard, ModelVariant, certify_variant, sha256_file
from lineguard.provenance import cpu_flags
from lineguard.training._parity import quantize_int8
from lineguard.training.calibrate import certification_figures, station_rates
from lineguard.training.evaluate import Backend, Evaluation, Precision, evaluate
from lineguard.training.int8_control import control_int8

__all__ = ["INT8_FILE", "MAX_CALIBRATION_FRAMES", "certified_variants"]

INT8_FILE = "model_int8.onnx"
MAX_CALIBRATION_FRAMES = 300  # more frames move the activation ranges little


def _measure(
    card: ModelCard,
    fp32: Measured,
    onnx_path: Path,
    data: Path,
    how: tuple[str, Backend, Precision],
    file: str | None,
) -> ModelVariant:
    name, runtime, precision = how
    evaluation = evaluate(onnx_path, data, thresholds=card.thresholds, backend=runtime, precision=precision)
    rates = station_rates(evaluation, card.thresholds)
    figures = Measured(evaluation.map50, rates.escape_rate, rates.no_decision_rate)
    certified, reason = certify_variant(fp32, figures, evaluation.computed_in)
    return ModelVariant(
        name=name,
        precision=precision,  # type: ignore[arg-type]  # bf16 or int8 here, never fp32
        runtime=runtime,
        file=file,
        sha256=sha256_file(onnx_path),
        map50=evaluation.map50,
        escape_rate=rates.escape_rate,
        overkill_rate=rates.overkill_rate,
        no_decision_rate=rates.no_decision_rate,
        certified=certified,
        reason=reason,
        kernels=cpu_kernels(precision, cpu_flags()),
    )


def certified_variants(
    out: Path,
    card: ModelCard,
    fp32: tuple[Evaluation, Evaluation],
    data: Path,
    calib_split: str,
    say: Callable[[str], None],
) -> tuple[list[ModelVariant], list[str], list[str]]:
    """Write and measure the variants this install can make against ``fp32`` (the card's
    evaluations of ``model.onnx`` on val and on the calibration split); what was left out, and why;
    and the convolutions INT8's accuracy control kept in float."""
    if "openvino" not in available_backends():
        return [], ["int8 and bf16: openvino is not installed (pip install 'lineguard[train]')"], []
    val, cal = (certification_figures(e, card.thresholds) for e in fp32)
    images = [item.path for item in iter_split(data, calib_split)][:MAX_CALIBRATION_FRAMES]
    say(f"INT8 (OpenVINO): static quantization calibrated on {len(images)} '{calib_split}' frames")
    q_path = quantize_int8(out / "model.onnx", out / INT8_FILE, images, card.input_size, runtime="openvino")
    kept_float: list[str] = []
    if calib_split == "val":  # tuned on the frozen set, the certification would prove nothing
        say("INT8 accuracy control: skipped, the data has no calib split apart from val (--calib-share)")
    else:
        control = control_int8(out / "model.onnx", q_path, card, cal, data, (calib_split, images), say)
        say(f"INT8 accuracy control: {control.line}")
        kept_float = control.float_convs
    int8 = _measure(card, val, q_path, data, ("int8", "openvino", "int8"), INT8_FILE)
    variants = [int8.model_copy(update={"float_convs": len(kept_float)})]
    say("bf16 (OpenVINO): evaluating model.onnx in bf16")
    variants.append(_measure(card, val, out / "model.onnx", data, ("bf16", "openvino", "bf16"), None))
    for v in variants:
        say(f"{v.name}: {'certified' if v.certified else 'NOT certified'}: {v.reason}")
    return variants, [], kept_float
