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
    "ClassMetrics",
    "ExportParity",
    "ModelCard",
    "ModelMetrics",
    "ReferenceStats",
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


class ReferenceStats(_Card):
    """Per-signal reference samples from validation images, for PSI/KS drift tests at the edge."""

    brightness: list[float] = []
    contrast: list[float] = []
    sharpness: list[float] = []
    top_confidence: list[float] = []
    class_rates: dict[str, float] = {}
    fail_rate: float | None = None
    no_decision_rate: float | None = None


class ExportParity(_Card):
    passed: bool
    images: int = Field(ge=0)
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
