"""Messages the edge receives on MQTT: triggers, feedback and the desired model, validated.

A line controller, a downstream check and the registry write these; the edge trusts none of them.
Each payload is a small pydantic model that forbids unknown keys, so a typo in a PLC's JSON is
answered with a one-line reason on ``…/alert`` instead of being half-understood.
``parse_control`` turns raw bytes into a model or an ``InputError`` that says what was wrong;
``RecentIds`` remembers the last unit ids so a repeated trigger is reported, not inspected twice.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lineguard.errors import InputError, validation_message

__all__ = [
    "CONTROL_MESSAGES",
    "DesiredModel",
    "Feedback",
    "RecentIds",
    "Trigger",
    "parse_control",
]

UnitId = str


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)


class Trigger(_Message):
    """``…/trigger``: inspect the next frame as this unit."""

    schema_: Literal["lineguard.trigger/1"] = Field(default="lineguard.trigger/1", alias="schema")
    unit_id: str = Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")
    ts: float | None = Field(
        default=None, ge=0, allow_inf_nan=False, description="When the unit reached the camera (Unix s)."
    )


class Feedback(_Message):
    """``…/feedback``: the confirmed outcome of a unit, counted so the plant sees real rates."""

    schema_: Literal["lineguard.feedback/1"] = Field(default="lineguard.feedback/1", alias="schema")
    unit_id: str = Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")
    outcome: Literal["escape", "overkill", "confirmed"]


class DesiredModel(_Message):
    """``…/model`` (retained): the model the registry wants this station to run."""

    schema_: Literal["lineguard.model/1"] = Field(default="lineguard.model/1", alias="schema")
    name: str = Field(min_length=1, max_length=128)
    version: str = Field(min_length=1, max_length=64)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    url: str = Field(min_length=1, max_length=2048, description="Where to fetch the model bundle.")


CONTROL_MESSAGES: Final[dict[str, type[_Message]]] = {
    "trigger": Trigger,
    "feedback": Feedback,
    "model": DesiredModel,
}

M = TypeVar("M", bound=_Message)


def parse_control(kind: type[M], payload: bytes | str) -> M:
    """Validate one payload; ``InputError`` names the message kind, the problem and the value."""
    name = kind.__name__.lower()
    try:
        return kind.model_validate_json(payload)
    except ValidationError as exc:
        raise InputError(f"invalid {name} message: {validation_message(exc)}") from exc


class RecentIds:
    """The last ``size`` unit ids seen, to report a repeated trigger (bounded memory)."""

    def __init__(self, size: int = 1000) -> None:
        if size < 1:
            raise ValueError(f"RecentIds size must be >= 1, got {size}")
        self.size = size
        self._seen: OrderedDict[UnitId, None] = OrderedDict()

    def seen_before(self, unit_id: UnitId) -> bool:
        """Record ``unit_id``; True when it is already among the last ``size`` ids."""
        if unit_id in self._seen:
            self._seen.move_to_end(unit_id)
            return True
        self._seen[unit_id] = None
        if len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return False
