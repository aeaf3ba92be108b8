"""The alert payload (``lineguard.alert/1``) published on ``lineguard/<line>/<station>/alert``.

Drift, camera health and deadline misses all reach people and plant systems through one topic, so
they share one small versioned contract: a ``kind`` (what raised it), a ``level`` (``ok`` means
"cleared"), the ``signal`` it concerns, a one-line human ``message`` and ``details`` with the
numbers behind it. Subscribers that only page on trouble filter ``level == "alarm"``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from lineguard.messages.verdict import utc_now

__all__ = ["ALERT_SCHEMA", "Alert", "AlertKind", "AlertLevel", "build_alert"]

ALERT_SCHEMA: Final = "lineguard.alert/1"

# What raised it, snake_case: drift, camera_down, camera_frozen, deadline, outbox_near_full,
# outbox_full, outbox_degraded, outbox_recovered, invalid_trigger, duplicate_unit_id,
# invalid_feedback, invalid_model, model_refused, model_rollback, verdict_refused, review_queue_full.
# Open-ended so a new source needs no schema bump.
AlertKind = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
AlertLevel = Literal["ok", "warning", "alarm"]


class Alert(BaseModel):
    """One alert message; ``level="ok"`` announces that an earlier alert has cleared."""

    schema_: Literal["lineguard.alert/1"] = Field(default=ALERT_SCHEMA, alias="schema")
    kind: AlertKind
    level: AlertLevel
    signal: str = Field(min_length=1, description="What moved: a drift signal, 'camera', ...")
    message: str = Field(min_length=1, description="One line for a person.")
    ts: datetime = Field(default_factory=utc_now, description="When it was raised (UTC).")
    line: str = ""
    station: str = ""
    details: dict[str, Any] = Field(default_factory=dict, description="The numbers behind it.")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True)


def build_alert(kind: str, detail: dict[str, Any], *, line: str = "", station: str = "") -> Alert:
    """An ``Alert`` from a raiser's dict: ``level``, ``signal`` and ``message`` keys lift out, the
    rest become ``details``; a raiser that names none gets a warning about ``kind`` itself."""
    rest = dict(detail)
    level = str(rest.pop("level", "warning"))
    return Alert(
        kind=kind,
        level=level if level in ("ok", "warning", "alarm") else "warning",  # type: ignore[arg-type]
        signal=str(rest.pop("signal", kind)),
        message=str(rest.pop("message", "") or f"{kind}: {rest}"),
        line=line,
        station=station,
        details=rest,
    )
