"""The station status (``lineguard.status/1``), retained on ``lineguard/<line>/<station>/status``.

A dashboard or line controller reads it to know whether a station is there and what it runs. The
broker publishes the ``offline`` form as the station's last will, so that form carries only the
identity and time; the ``online`` form adds the model, backend, camera health and outbox depth.
Fields of the online form are omitted from the offline one rather than sent as null.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from lineguard.messages.verdict import ModelRef, utc_now

__all__ = ["STATUS_SCHEMA", "CameraStatus", "StationStatus"]

STATUS_SCHEMA: Final = "lineguard.status/1"

_ALWAYS: Final = frozenset({"schema_", "state", "line", "station", "ts"})


class CameraStatus(BaseModel):
    """The frame source's health, as the watchdog sees it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(description="The source's name (device, URL or folder).")
    up: bool
    frozen: bool = Field(description="Frames arrive but do not change.")
    fps: float = Field(ge=0)
    skipped: int = Field(
        ge=0, description="Frames never inspected: dropped for a newer one (live camera) or unreadable."
    )
    reconnects: int = Field(ge=0)
    detail: str
    silent_s: float = Field(default=0.0, ge=0, description="Seconds since the last frame.")


class StationStatus(BaseModel):
    """One status message; build it with ``online`` or ``offline``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_: Literal["lineguard.status/1"] = Field(default=STATUS_SCHEMA, alias="schema")
    state: Literal["online", "offline"]
    line: str
    station: str
    ts: datetime = Field(default_factory=utc_now, description="When it was published (UTC).")
    mode: Literal["continuous", "triggered"] | None = None
    inspection: Literal["running", "paused"] | None = Field(
        default=None, description="paused: the retained …/control message paused inspection."
    )
    model: ModelRef | None = Field(default=None, description="The model running; null when none loaded.")
    backend: str | None = Field(default=None, description="Inference backend; null when no model.")
    precision: str | None = Field(
        default=None,
        max_length=32,
        description="Model variant running (fp32, int8, bf16); null: no model.",
    )
    thresholds: str | None = Field(default=None, description="Id of the threshold set applied.")
    camera: CameraStatus | None = None
    fps: float | None = Field(default=None, ge=0, description="Units inspected per second lately.")
    outbox_pending: int | None = Field(default=None, ge=0, description="Verdicts not yet acknowledged.")
    outbox_durable: bool | None = Field(
        default=None, description="False while verdicts cannot be stored (disk full or failing)."
    )

    @classmethod
    def offline(cls, line: str, station: str) -> StationStatus:
        return cls(state="offline", line=line, station=station)

    @classmethod
    def online(cls, line: str, station: str, health: dict[str, Any]) -> StationStatus:
        """From the daemon's ``status()`` dict; raises ``ValidationError`` on a field not in the contract."""
        return cls.model_validate({**health, "state": "online", "line": line, "station": station})

    def to_json(self) -> str:
        """Canonical JSON: the online fields that were given (null included), none when offline."""
        return self.model_dump_json(by_alias=True, include=set(_ALWAYS | self.model_fields_set))
