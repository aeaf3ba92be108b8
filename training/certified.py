"""The faster variants an export certifies: OpenVINO INT8 (NNCF) and OpenVINO bf16, each vs fp32.

A station set to ``precision: auto`` runs whichever certified variant its CPU runs fastest, so a
variant must be measured where fp32 was: on the same frozen split (val, the card's ``metrics``), at
the card's thresholds, through the edge's own detector on the runtime the station will use. The
rule (within 1 mAP50 point of fp32, no worse unit escape) is ``certify_variant``, the one the
registry's gate applies again on its own evaluation set.

INT8 is NNCF's post-training quantization of the ONNX graph (plain ``nncf.quantize`` on the
calibration split's frames, prepared by the edge's preprocessor; its accuracy-control mode would
evaluate the model many times over and is left out), written as a QDQ ONNX file beside
``model.onnx`` that OpenVINO compiles to int8 kernels. The detect head's decode stays float (see
``decode_nodes``). bf16 is a setting, not a file: OpenVINO runs ``model.onnx`` in bf16.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from lineguard.datasets import iter_split
from lineguard.inference import Preprocessor, available_backends, read_image_file
from lineguard.messages import ModelCard, ModelVariant, certify_variant, sha256_file
from lineguard.training._parity import decode_nodes
from lineguard.training.evaluate import Backend, Evaluation, Precision, evaluate

__all__ = ["INT8_FILE", "MAX_CALIBRATION_FRAMES", "certified_variants", "quantize_nncf_int8"]

INT8_FILE = "model_int8.onnx"
MAX_CALIBRATION_FRAMES = 300  # NNCF's default subset size; more frames move the ranges little


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """NNCF (and torch, which it imports) warn on import and log each step; none of it is ours."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def quantize_nncf_int8(src: Path, dst: Path, images: list[Path], size: int) -> Path:
    """NNCF post-training INT8 of ``src`` (QDQ ONNX for OpenVINO), calibrated on ``images``."""
    with _quiet():
        import nncf
        import onnx

        nncf.set_log_level(logging.ERROR)
        model = onnx.load(str(src))
        name = model.graph.input[0].name
        pre = Preprocessor(size)

        def transform(path: Path) -> dict[str, object]:
            tensor, _ = pre(read_image_file(path))
            return {name: tensor.copy()}

        quantized = nncf.quantize(
            model,
            nncf.Dataset(images, transform),
            preset=nncf.QuantizationPreset.MIXED,
            subset_size=len(images),
            ignored_scope=nncf.IgnoredScope(names=decode_nodes(src), validate=False),
        )
        onnx.save(quantized, str(dst))
    return dst


def _measure(
    card: ModelCard,
    onnx_path: Path,
    data: Path,
    how: tuple[str, Backend, Precision],
    file: str | None,
) -> ModelVariant:
    name, runtime, precision = how
    assert card.metrics is not None  # export wrote them before asking for variants
    evaluation: Evaluation = evaluate(
        onnx_path, data, thresholds=card.thresholds, backend=runtime, precision=precision
    )
    certified, reason = certify_variant(
        (card.metrics.map50, card.metrics.escape_rate),
        (evaluation.map50, evaluation.escape_rate),
        evaluation.computed_in,
    )
    return ModelVariant(
        name=name,
        precision=precision,  # type: ignore[arg-type]  # bf16 or int8 here, never fp32
        runtime=runtime,
        file=file,
        sha256=sha256_file(onnx_path),
        map50=evaluation.map50,
        escape_rate=evaluation.escape_rate,
        overkill_rate=evaluation.overkill_rate,
        certified=certified,
        reason=reason,
    )


def certified_variants(
    out: Path, card: ModelCard, data: Path, calib_split: str, say: Callable[[str], None]
) -> tuple[list[ModelVariant], list[str]]:
    """Write and measure the variants this install can make; and what was left out, and why."""
    left_out: list[str] = []
    if "openvino" not in available_backends():
        return [], ["int8 and bf16: openvino is not installed (pip install 'lineguard[train]')"]
    variants: list[ModelVariant] = []
    if importlib.util.find_spec("nncf") is None:
        left_out.append("int8: nncf is not installed (pip install 'lineguard[train]')")
    else:
        images = [item.path for item in iter_split(data, calib_split)][:MAX_CALIBRATION_FRAMES]
        say(f"INT8 (OpenVINO): NNCF post-training quantization on {len(images)} '{calib_split}' frames")
        q_path = quantize_nncf_int8(out / "model.onnx", out / INT8_FILE, images, card.input_size)
        variants.append(_measure(card, q_path, data, ("int8", "openvino", "int8"), INT8_FILE))
    say("bf16 (OpenVINO): evaluating model.onnx in bf16")
    variants.append(_measure(card, out / "model.onnx", data, ("bf16", "openvino", "bf16"), None))
    for v in variants:
        say(f"{v.name}: {'certified' if v.certified else 'NOT certified'}: {v.reason}")
    return variants, left_out
