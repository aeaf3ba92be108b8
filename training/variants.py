"""Calibrate an exported model and every fast variant beside it, each on its own.

A station may run the fp32 ONNX file, a variant its card certifies (an OpenVINO INT8 file beside
it, the fp32 file in bf16), or the INT8 copy ``export --int8`` writes (``<model>_int8/``). Each
moves confidences a little, and a threshold set tuned on fp32 can miss the escape target on a
variant without anyone noticing. So each variant is evaluated on the calibration split as a station
would run it, checked at the thresholds it ships with, and calibrated on its own; the line per
variant says whether its shipped thresholds meet the target and what its own would give. The
``export --int8`` copy has a card of its own, so ``write`` can give it its own thresholds; the
card's variants share the fp32 card, so a station running one gets its thresholds as
``policy.class_thresholds`` instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lineguard.config import PolicyConfig
from lineguard.errors import InputError
from lineguard.inference import CARD_NAME, UnitRates, available_backends
from lineguard.messages import CalibrationTargets, ModelCard, TargetsAchieved
from lineguard.training.calibrate import Calibration, calibrate, station_rates
from lineguard.training.evaluate import Backend, Evaluation, Precision, evaluate

__all__ = [
    "Variant",
    "VariantResult",
    "calibrate_variant",
    "find_variants",
    "model_file",
    "write_calibration",
]

MODEL_FILE = "model.onnx"


@dataclass(frozen=True)
class Variant:
    """One way a station can run the model: which file, on which backend, in which precision."""

    name: str  # fp32, int8, bf16
    onnx: Path
    card: Path  # the card whose thresholds the variant ships with
    own_card: bool  # False for bf16: it shares the fp32 file and card
    backend: Backend = "onnxruntime"
    precision: Precision = "fp32"


@dataclass(frozen=True)
class VariantResult:
    variant: Variant
    evaluation: Evaluation
    shipped_thresholds: dict[str, float]
    shipped: UnitRates  # at the thresholds it ships with
    calibration: Calibration  # its own

    def line(self) -> str:
        """One line: the shipped thresholds meet the target or not, and what its own thresholds give."""
        cal = self.calibration
        escape = self.shipped.escape_rate
        shipped = (
            f"escape {_pct(escape)}, overkill {_pct(self.shipped.overkill_rate)}, "
            f"NO_DECISION {_pct(self.shipped.no_decision_rate)}"
        )
        misses = escape is not None and escape > cal.max_escape + 1e-9
        own = ", ".join(f"{k} {v:.2f}" for k, v in cal.thresholds.items())
        head = f"{self.variant.name} ({self.evaluation.computed_in or 'pytorch'})"
        if misses:
            return (
                f"{head}: shipped thresholds give {shipped}: escape {_pct(escape)} > target "
                f"{_pct(cal.max_escape)}; recalibrated thresholds {own}: {cal.verdict()}"
            )
        return f"{head}: shipped thresholds meet the target ({shipped}); its own {own}: {cal.verdict()}"


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def model_file(model: Path) -> Path:
    """The model file a ``--model`` names: a .pt or .onnx file, a model folder or its card."""
    if model.is_dir():
        model = model / MODEL_FILE
    elif model.name == CARD_NAME:
        model = model.parent / MODEL_FILE
    if model.suffix not in {".pt", ".onnx"} or not model.is_file():
        raise InputError(
            f"--model must be an exported model folder, its {CARD_NAME}, a .onnx or a .pt file; "
            f"{model} is none of them"
        )
    return model


def find_variants(onnx: Path) -> list[Variant]:
    """fp32 (``onnx``), the variants its card lists, the INT8 copy ``export --int8`` wrote beside its
    folder, and bf16 where OpenVINO is installed (each once, the card's own first)."""
    folder = onnx.parent
    card = folder / CARD_NAME
    found = [Variant("fp32", onnx, card, own_card=True)]
    backends = available_backends()
    for listed in ModelCard.load(card).variants if card.is_file() else []:
        if listed.runtime in backends:
            path = folder / listed.file if listed.file else onnx
            found.append(Variant(listed.name, path, card, False, listed.runtime, listed.precision))
    names = {v.name for v in found}
    int8 = folder.parent / f"{folder.name}_int8" / MODEL_FILE
    if "int8" not in names and int8.is_file() and (int8.parent / CARD_NAME).is_file():
        found.append(Variant("int8", int8, int8.parent / CARD_NAME, own_card=True, precision="int8"))
    if "bf16" not in names and "openvino" in backends:
        found.append(Variant("bf16", onnx, card, own_card=False, backend="openvino", precision="bf16"))
    return found


def calibrate_variant(
    variant: Variant,
    data: Path,
    split: str,
    *,
    max_escape: float,
    max_overkill: float | None,
    policy: PolicyConfig,
    progress: Callable[[int, int], None] | None = None,
) -> VariantResult:
    """Evaluate ``variant`` on ``split`` as a station runs it; its shipped rates and its own calibration."""
    shipped = dict(ModelCard.load(variant.card).thresholds)
    evaluation = evaluate(
        variant.onnx,
        data,
        split=split,
        thresholds=shipped,
        backend=variant.backend,
        precision=variant.precision,
        progress=progress,
    )
    rates = station_rates(evaluation, shipped, policy)
    calibration = calibrate(evaluation, max_escape, max_overkill=max_overkill, policy=policy)
    return VariantResult(variant, evaluation, shipped, rates, calibration)


def write_calibration(card_path: Path, calibration: Calibration) -> ModelCard:
    """Put ``calibration``'s thresholds, targets and achieved rates into the card at ``card_path``.

    The card's sha256 names the ONNX file, not the card, so the pair stays loadable; register the
    folder afterwards so the registry signs the card that carries the new thresholds.
    """
    card = ModelCard.load(card_path)
    updated = card.model_copy(
        update={
            "thresholds": dict(calibration.thresholds),
            "targets": CalibrationTargets(
                max_escape=calibration.max_escape, max_overkill=calibration.max_overkill
            ),
            "achieved": TargetsAchieved(
                escape_rate=calibration.escape_rate,
                overkill_rate=calibration.overkill_rate,
                no_decision_rate=calibration.no_decision_rate,
                review_band=calibration.review_band,
                split=calibration.split,
            ),
        }
    )
    updated.save(card_path)
    return ModelCard.load(card_path)
