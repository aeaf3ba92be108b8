"""The verdict payload (``lineguard.verdict/1``): what a line controller acts on.

A controller must be able to act on ``verdict`` alone; every other field is for traceability.
Field names and meanings are a public wire contract: change them only with a new schema version.
Optional fields added later (``durable``, ``source``, ``image``) keep version 1: ``source`` and
``image`` are left out of the JSON when a verdict has none (a live camera, an upload; a frame the
station does not keep), so those payloads are unchanged. The reasons ``duplicate_unit`` and
``paused`` were added later too, still version 1: ``verdict`` is what a controller acts on, and a
consumer that checks ``reason`` against the older enum sees only NO_DECISION verdicts it would
have waited for in vain before. ``compact_result`` is the one-line form on the optional
``…/result`` topic, for PLCs that do not parse JSON.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "RESULT_PATTERN",
    "VERDICT_SCHEMA",
    "Defect",
    "ImageRef",
    "ModelRef",
    "Reason",
    "UnitSource",
    "Verdict",
    "VerdictKind",
    "compact_result",
    "utc_now",
]

VERDICT_SCHEMA: Final = "lineguard.verdict/1"

Unit = Annotated[float, Field(ge=0.0, le=1.0)]


def utc_now() -> datetime:
    return datetime.now(UTC)


class VerdictKind(StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    NO_DECISION = "NO_DECISION"


class Reason(StrEnum):
    """Why the verdict is what it is; NO_DECISION always carries one of the last eight.

    ``camera``: the unit got no frame (camera down, trigger refused or unanswered);
    ``duplicate_unit``: a trigger repeated a unit id the station had already been triggered for
    (the first verdict stands); ``paused``: a trigger arrived while ``…/control`` paused inspection.
    """

    NO_DEFECT = "no_defect"
    DEFECT = "defect"
    UNCERTAIN = "uncertain"
    DEADLINE = "deadline"
    IMAGE_QUALITY = "image_quality"
    NO_MODEL = "no_model"
    ERROR = "error"
    CAMERA = "camera"
    DUPLICATE_UNIT = "duplicate_unit"
    PAUSED = "paused"


class _Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Defect(_Contract):
    class_name: str = Field(alias="class", description="Defect class name from the model card.")
    class_id: int = Field(ge=0)
    confidence: Unit
    box: tuple[Unit, Unit, Unit, Unit] = Field(
        description="x1, y1, x2, y2 normalised to the frame's width and height (0..1)."
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ModelRef(_Contract):
    name: str
    version: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$|^$")


class UnitSource(_Contract):
    """Where a unit's frame came from, for sources whose frames are the units (files, synthetic line)."""

    camera: str = Field(
        min_length=1, max_length=256, description="The frame source: kind and URI, credentials masked."
    )
    file: str | None = Field(
        default=None, max_length=255, description="The image file's name (folder source); null otherwise."
    )
    index: int = Field(
        ge=0,
        description="Position in the source: the file in name order (folder), the frame number (video), "
        "the unit number (synthetic line).",
    )


class ImageRef(_Contract):
    """Where the frame behind a verdict can be fetched from the station while it keeps it."""

    ref: str = Field(pattern=r"^[0-9]{1,19}$", description="The frame's id in the station's frame store.")
    url: str = Field(
        pattern=r"^/v1/verdicts/[0-9]{1,19}/image$",
        description="Path on the station's HTTP API (JPEG; ?annotated=true draws the boxes and verdict).",
    )

    @classmethod
    def for_seq(cls, seq: int) -> ImageRef:
        return cls(ref=str(seq), url=f"/v1/verdicts/{seq}/image")


class Verdict(_Contract):
    schema_: Literal["lineguard.verdict/1"] = Field(default=VERDICT_SCHEMA, alias="schema")
    seq: int = Field(
        ge=1,
        description="Monotonic per station across restarts; a power cut may skip numbers, never repeat one.",
    )
    unit_id: str = Field(min_length=1, max_length=128)
    line: str = Field(min_length=1)
    station: str = Field(min_length=1)
    verdict: VerdictKind
    reason: Reason
    defects: tuple[Defect, ...] = ()
    model: ModelRef | None = Field(description="The model that decided; null when none loaded.")
    thresholds: str = Field(description="Id of the threshold set applied (card + overrides).")
    captured_at: datetime
    decided_at: datetime
    latency_ms: float = Field(ge=0.0, description="decided_at - captured_at, in milliseconds.")
    durable: bool = Field(
        default=True,
        description="False when the station could not store the verdict (disk full or failing): it is "
        "published once and is not replayed if the station restarts before it is acknowledged.",
    )
    source: UnitSource | None = Field(
        default=None,
        description="The file or frame the unit was, for folder, video and synthetic sources; absent "
        "for live cameras and uploads.",
    )

    image: ImageRef | None = Field(
        default=None,
        description="The frame, when the station keeps it (every FAIL and NO_DECISION, a share of PASS); "
        "kept for a while only (frame_store limits): the URL may answer 404 later.",
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("captured_at", "decided_at")
    @classmethod
    def _must_be_utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() != UTC.utcoffset(None):
            raise ValueError("timestamps must be timezone-aware UTC")
        return value

    def to_json(self) -> str:
        """Canonical JSON (aliases, ISO 8601 UTC with ``Z``) so every consumer parses the same."""
        absent = {name for name in ("source", "image") if getattr(self, name) is None}
        return self.model_dump_json(by_alias=True, exclude=absent or None)

    @classmethod
    def from_json(cls, payload: str | bytes) -> Verdict:
        return cls.model_validate_json(payload)


# ``<verdict>,<seq>,<unit_id>``: the two fixed-alphabet fields first, so a unit id with commas in it
# is simply everything after the second comma.
RESULT_PATTERN: Final = re.compile(r"(PASS|FAIL|NO_DECISION),([1-9][0-9]{0,18}),([^\x00-\x1f\x7f]{1,128})")


def compact_result(verdict: str, seq: int, unit_id: str) -> str:
    """The ``…/result`` payload of one verdict, e.g. ``FAIL,1042,LOT4-0009``."""
    text = f"{VerdictKind(verdict).value},{seq},{unit_id}"
    if RESULT_PATTERN.fullmatch(text) is None:
        raise ValueError(f"not a valid compact result: seq {seq}, unit id of {len(unit_id)} characters")
    return text
