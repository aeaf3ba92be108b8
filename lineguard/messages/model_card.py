"""The model card (``lineguard.model_card/1``): everything the edge may know about a model.

The edge reads an ONNX file and this card, nothing else (no pickle, no torch). The card carries
the thresholds the verdict policy applies, the metrics the promotion gate compares, and the
reference statistics drift detection measures the line against.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lineguard.errors import ModelError, validation_message

__all__ = [
    "MODEL_CARD_SCHEMA",
    "CalibrationTargets",
    "ClassMetrics",
    "ExportParity",
    "ImageRange",
    "ModelCard",
    "ModelMetrics",
    "ReferenceSource",
    "ReferenceStats",
    "TargetsAchieved",
    "sha256_file",
]

MODEL_CARD_SCHEMA: Final = "lineguard.model_card/1"


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

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _thresholds_name_known_classes(self) -> ModelCard:
        unknown = sorted(set(self.thresholds) - set(self.classes))
        if unknown:
            raise ValueError(f"thresholds name unknown classes {unknown}; classes: {self.classes}")
        bad = {k: v for k, v in self.thresholds.items() if not 0.0 < v <= 1.0}
        if bad:
            raise ValueError(f"thresholds must be in (0, 1]; got {bad}")
        return self

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
