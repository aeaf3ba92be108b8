"""The model card (``lineguard.model_card/1``): everything the edge may know about a model.

The edge reads an ONNX file and this card, nothing else (no pickle, no torch). The card carries
the thresholds the verdict policy applies, the metrics the promotion gate compares, and the
reference statistics drift detection measures the line against.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Final, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lineguard.errors import ModelError, validation_message

__all__ = [
    "MODEL_CARD_SCHEMA",
    "CalibrationTargets",
    "ClassMetrics",
    "ExportParity",
    "ImageRange",
    "Measured",
    "ModelCard",
    "ModelMetrics",
    "ModelVariant",
    "ReferenceSource",
    "ReferenceStats",
    "TargetsAchieved",
    "certify_variant",
    "sha256_file",
]

MODEL_CARD_SCHEMA: Final = "lineguard.model_card/1"
# A variant is certified when its mAP50 is within this of fp32's on the same frozen set (1 point)...
MAX_VARIANT_MAP50_DROP: Final = 0.01
# ...its unit escape rate is no worse (this slack only absorbs float rounding)...
_ESCAPE_SLACK: Final = 1e-9
# ...and it sends at most this many more units to review (NO_DECISION, 1 point of all units).
MAX_VARIANT_REVIEW_RISE: Final = 0.01
_MAX_REASON: Final = 300


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class _Card(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClassMetrics(_Card):
    precision: float = Field(ge=0, le=1)
    recall: float = Field(ge=0, le=1)
    ap50: float = Field(ge=0, le=1)
    ap50_95: float = Field(ge=0, le=1)


class ModelMetrics(_Card):
    map50: float = Field(ge=0, le=1)
    map50_95: float = Field(ge=0, le=1)
    per_class: dict[str, ClassMetrics] = {}
    escape_rate: float | None = Field(
        default=None, ge=0, le=1, description="Defective units judged PASS at the thresholds."
    )
    overkill_rate: float | None = Field(
        default=None, ge=0, le=1, description="Good units judged FAIL at the thresholds."
    )
    eval_dataset: str = Field(default="", description="Manifest hash of the evaluation set.")


class ReferenceSource(_Card):
    """What the reference samples were measured on: a drift alarm is only as good as its baseline."""

    dataset: str = Field(default="", max_length=1024, description="Dataset folder the frames came from.")
    dataset_hash: str = Field(default="", max_length=128, description="Manifest hash of that dataset.")
    split: str = Field(default="", max_length=64, description="Split the samples were taken from.")
    frames: int = Field(ge=0, description="Frames measured (the length of each sample list).")
    of: int = Field(ge=0, description="Frames in the split; every (of / frames)-th one was measured.")
    order: Literal["file"] = Field(
        default="file", description="Order of the sample lists: the split's file order, kept."
    )
    created_at: datetime | None = None

    def describe(self) -> str:
        """One line for status output and alerts."""
        data = self.dataset_hash[:12] or self.dataset or "unknown data"
        when = f", {self.created_at:%Y-%m-%d}" if self.created_at else ""
        return f"{self.frames} of {self.of} '{self.split}' frames of {data} in file order{when}"


class ImageRange(_Card):
    """Extremes of the image measures over the training frames, for the quality gate's default bounds.

    Quantiles 0.1% and 99.9% rather than min and max, so one corrupt frame does not open the gate.
    """

    frames: int = Field(gt=0, description="Training frames measured.")
    brightness: tuple[float, float] = Field(description="Mean gray, 0.1% and 99.9% quantiles.")
    contrast: tuple[float, float] = Field(description="Gray standard deviation, 0.1% and 99.9% quantiles.")
    sharpness: tuple[float, float] = Field(description="Variance of the Laplacian, 0.1% and 99.9% quantiles.")


class ReferenceStats(_Card):
    """Per-signal reference samples from validation images, for PSI/KS drift tests at the edge.

    The sample lists keep the split's file order: drift detection replays them in that order to
    learn how far a window of the reference itself strays from the whole (see ``monitoring.drift``).
    """

    brightness: list[float] = []
    contrast: list[float] = []
    sharpness: list[float] = []
    top_confidence: list[float] = []
    class_rates: dict[str, float] = {}
    fail_rate: float | None = None
    no_decision_rate: float | None = None
    source: ReferenceSource | None = Field(default=None, description="What the samples were measured on.")
    image_range: ImageRange | None = Field(
        default=None, description="Image measures over the training frames (quality gate bounds)."
    )


class CalibrationTargets(_Card):
    """What the quality engineer asked calibration for; the gate holds a model to it."""

    max_escape: float = Field(ge=0, lt=1, description="Most defective units judged PASS.")
    max_overkill: float | None = Field(
        default=None, ge=0, le=1, description="Most good units judged FAIL, if one was set."
    )


class TargetsAchieved(_Card):
    """What the shipped thresholds did on a labeled split: the figure the targets are checked against."""

    escape_rate: float | None = Field(default=None, ge=0, le=1)
    overkill_rate: float | None = Field(default=None, ge=0, le=1)
    split: str = Field(min_length=1, description="Dataset split the rates were measured on.")
    no_decision_rate: float | None = Field(
        default=None, ge=0, le=1, description="Units left NO_DECISION by the review band (of all units)."
    )
    review_band: float | None = Field(
        default=None, ge=0, le=1, description="Review band the rates were measured with (policy.review_band)."
    )


class ExportParity(_Card):
    passed: bool
    images: int = Field(ge=0)
    boxes: int | None = Field(default=None, ge=0, description="Boxes matched on both paths at the floor.")
    boxes_at_threshold: int | None = Field(
        default=None, ge=0, description="Of the PyTorch boxes, those at or above the card's thresholds."
    )
    min_boxes: int | None = Field(default=None, ge=0, description="Fewest matched boxes for a pass.")
    confidence_floor: float | None = Field(
        default=None, ge=0, le=1, description="Confidence both paths ran at (policy.min_confidence)."
    )
    max_box_diff: float = Field(ge=0, description="Largest matched-box corner difference (0..1).")
    max_conf_diff: float = Field(ge=0)
    tolerance: float = Field(ge=0)


class ModelVariant(_Card):
    """A faster way to run the model, measured against fp32 on the card's frozen evaluation set.

    A station's ``precision: auto`` runs only a certified variant, and only after the variant file
    hashes to ``sha256``: the card is what the registry signs, so the signature covers the file.
    """

    name: str = Field(pattern=r"^[a-z0-9_]{1,32}$", description="How a station asks for it (precision).")
    precision: Literal["bf16", "int8"]
    runtime: Literal["openvino", "onnxruntime"]
    file: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.-]{1,96}\.onnx$",
        description="ONNX file beside model.onnx; null = runs model.onnx itself at this precision.",
    )
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the file the variant runs.")
    map50: float = Field(ge=0, le=1)
    escape_rate: float | None = Field(
        default=None, ge=0, le=1, description="Units as the station decides them (review band included)."
    )
    overkill_rate: float | None = Field(default=None, ge=0, le=1)
    no_decision_rate: float | None = Field(default=None, ge=0, le=1)
    certified: bool
    reason: str = Field(max_length=_MAX_REASON, description="One line: why it is certified or not.")
    kernels: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9_]{1,32}$",
        description="CPU kernels it was measured with (e.g. avx2, avx512_vnni, amx_int8); "
        "a station runs it only where its CPU uses the same. null: not recorded, runs nowhere by auto.",
    )
    float_convs: int | None = Field(
        default=None,
        ge=0,
        le=10_000,
        description="Convolutions INT8's accuracy control kept in float to pass on the calibration "
        "split (0: all quantized); null for bf16 and for older exports.",
    )


class Measured(NamedTuple):
    """What certification compares, for fp32 and for a variant, on the same frozen set: mAP50, and
    the units' escape and NO_DECISION rates as the station's policy decides them."""

    map50: float
    escape_rate: float | None
    no_decision_rate: float | None


def certify_variant(fp32: Measured, variant: Measured, computed_in: str = "") -> tuple[bool, str]:
    """The one certification rule: within 1 mAP50 point of fp32, no worse unit escape, and at most
    1 point more units sent to review.

    Units are counted as the station decides them, review band included: a defective unit the
    variant scores just under the threshold goes to a person, not down the line, so it is no
    escape; it is review work, and that is bounded instead, or a variant could buy its escape rate
    with it. ``computed_in`` is what the runtime said it computed in; a variant measured in another
    precision (bf16 asked, f32 run on a CPU without bf16) proves nothing about bf16 and is not
    certified.
    """
    figures = (
        f"mAP50 {variant.map50:.3f} vs fp32 {fp32.map50:.3f}, "
        f"escape {_pct(variant.escape_rate)} vs {_pct(fp32.escape_rate)}, "
        f"NO_DECISION {_pct(variant.no_decision_rate)} vs {_pct(fp32.no_decision_rate)}"
    )
    if computed_in and computed_in not in {"bf16", "int8 QDQ"}:
        return False, f"not measured: the runtime computed in {computed_in} here; {figures}"
    drop = fp32.map50 - variant.map50
    if drop > MAX_VARIANT_MAP50_DROP + 1e-12:
        most = 100 * MAX_VARIANT_MAP50_DROP
        return False, f"mAP50 drops {100 * drop:.1f} points (most {most:.0f}); {figures}"
    if variant.escape_rate is not None and (
        fp32.escape_rate is None or variant.escape_rate > fp32.escape_rate + _ESCAPE_SLACK
    ):
        return False, f"escape is worse than fp32; {figures}"
    rise = (variant.no_decision_rate or 0.0) - (fp32.no_decision_rate or 0.0)
    if rise > MAX_VARIANT_REVIEW_RISE + 1e-12:
        most = 100 * MAX_VARIANT_REVIEW_RISE
        return False, f"NO_DECISION rises {100 * rise:.1f} points (most {most:.0f}); {figures}"
    return True, (
        f"within {100 * MAX_VARIANT_MAP50_DROP:.0f} mAP50 point of fp32, no worse escape, "
        f"review within {100 * MAX_VARIANT_REVIEW_RISE:.0f} point; {figures}"
    )


def _pct(rate: float | None) -> str:
    return "n/a" if rate is None else f"{100 * rate:.1f}%"


class ModelCard(_Card):
    schema_: Literal["lineguard.model_card/1"] = Field(default=MODEL_CARD_SCHEMA, alias="schema")
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    version: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.+-]+$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the ONNX file.")
    classes: list[str] = Field(min_length=1)
    input_size: int = Field(gt=0, description="Square input side in pixels (static shape).")
    opset: int | None = None
    thresholds: dict[str, float] = Field(description="Per-class confidence at or above = FAIL.")
    dataset_hash: str = Field(default="", description="Manifest hash of the training data.")
    metrics: ModelMetrics | None = None
    reference: ReferenceStats = ReferenceStats()
    parent: str | None = Field(default=None, description="Version this one was trained from.")
    parity: ExportParity | None = None
    targets: CalibrationTargets | None = None
    achieved: TargetsAchieved | None = None
    created_at: datetime | None = None
    training_run: str = ""
    variants: list[ModelVariant] = Field(
        default=[], description="Faster variants measured at export; a station runs only certified ones."
    )

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _thresholds_name_known_classes(self) -> ModelCard:
        unknown = sorted(set(self.thresholds) - set(self.classes))
        if unknown:
            raise ValueError(f"thresholds name unknown classes {unknown}; classes: {self.classes}")
        bad = {k: v for k, v in self.thresholds.items() if not 0.0 < v <= 1.0}
        if bad:
            raise ValueError(f"thresholds must be in (0, 1]; got {bad}")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique; got {names}")
        return self

    def variant(self, name: str) -> ModelVariant | None:
        return next((v for v in self.variants if v.name == name), None)

    def decertified(self, reasons: Mapping[str, str]) -> ModelCard:
        """This card with the variants ``reasons`` names no longer certified, each saying why.

        The one change a card may see after export (the registry's gate withdrawing a claim its
        frozen set does not bear out): a station's ``precision: auto`` then never runs the variant.
        A reason longer than a card allows is cut; names the card does not list are ignored.
        """
        variants = [
            v.model_copy(update={"certified": False, "reason": reasons[v.name][:_MAX_REASON]})
            if v.name in reasons
            else v
            for v in self.variants
        ]
        return self.model_copy(update={"variants": variants})

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def missed_target(self) -> str | None:
        """One line saying how the achieved rates miss the targets, or None (met, or no target)."""
        if self.targets is None or self.achieved is None:
            return None
        misses = []
        escape, overkill = self.achieved.escape_rate, self.achieved.overkill_rate
        if escape is not None and escape > self.targets.max_escape + 1e-9:
            misses.append(f"escape {escape:.1%} > target {self.targets.max_escape:.1%}")
        limit = self.targets.max_overkill
        if limit is not None and overkill is not None and overkill > limit + 1e-9:
            misses.append(f"overkill {overkill:.1%} > target {limit:.1%}")
        if not misses:
            return None
        return f"{self.ref} misses its calibration target on {self.achieved.split}: " + ", ".join(misses)

    def threshold_for(self, class_name: str, default: float = 0.5) -> float:
        return self.thresholds.get(class_name, default)

    @classmethod
    def load(cls, path: Path) -> ModelCard:
        """Read a card, turning any schema error into one readable ``ModelError``."""
        try:
            return cls.model_validate_json(path.read_bytes())
        except FileNotFoundError as exc:
            raise ModelError(f"model card not found: {path}") from exc
        except ValidationError as exc:
            raise ModelError(f"model card {path} is invalid: {validation_message(exc)}") from exc

    def save(self, path: Path) -> None:
        path.write_text(self.model_dump_json(by_alias=True, indent=2) + "\n")
