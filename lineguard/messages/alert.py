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

__all__ = ["ALERT_SCHEMA", "MAX_ALERT_BYTES", "Alert", "AlertKind", "AlertLevel", "build_alert"]

ALERT_SCHEMA: Final = "lineguard.alert/1"

# What raised it, snake_case: drift, camera_down, camera_frozen, deadline, outbox_near_full,
# outbox_full, outbox_degraded, outbox_recovered, invalid_trigger, duplicate_unit_id,
# invalid_feedback, invalid_model, invalid_control, model_refused, model_rollback, verdict_refused,
# review_queue_full, precision_fallback.
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


# Alerts travel to people and plant systems and into logs; whatever a raiser passes (a 1 MB
# trigger, a file read by mistake), one alert stays a few kB.
MAX_TEXT_CHARS: Final = 1000
MAX_ALERT_BYTES: Final = 4096
_MAX_ITEMS: Final = 50
_MAX_DEPTH: Final = 4
TRUNCATED: Final = "…[truncated]"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - len(TRUNCATED))] + TRUNCATED


def _bounded(value: Any, limit: int, depth: int = 0) -> Any:
    """``value`` with every string cut to ``limit`` chars and containers to ``_MAX_ITEMS`` entries."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth >= _MAX_DEPTH:
        return _clip(str(value), limit)
    if isinstance(value, dict):
        items = list(value.items())
        out = {_clip(str(k), 64): _bounded(v, limit, depth + 1) for k, v in items[:_MAX_ITEMS]}
        if len(items) > _MAX_ITEMS:
            out[TRUNCATED] = f"{len(items) - _MAX_ITEMS} more keys"
        return out
    if isinstance(value, list | tuple | set | frozenset):
        seq = list(value)
        clipped = [_bounded(v, limit, depth + 1) for v in seq[:_MAX_ITEMS]]
        return clipped + ([f"{TRUNCATED} {len(seq) - _MAX_ITEMS} more"] if len(seq) > _MAX_ITEMS else [])
    return _clip(value if isinstance(value, str) else str(value), limit)


def build_alert(kind: str, detail: dict[str, Any], *, line: str = "", station: str = "") -> Alert:
    """An ``Alert`` from a raiser's dict: ``level``, ``signal`` and ``message`` keys lift out, the
    rest become ``details``; a raiser that names none gets a warning about ``kind`` itself.

    The one place alerts are built from free-form input, so the one place they are bounded: each
    string to ``MAX_TEXT_CHARS``, the whole JSON to ``MAX_ALERT_BYTES`` (details shortened, then
    dropped with a ``truncated`` marker), whatever the caller passes.
    """
    rest = dict(detail)
    level = str(rest.pop("level", "warning"))
    signal = _clip(str(rest.pop("signal", kind)), 200)
    message = str(rest.pop("message", "") or f"{kind}: {_clip(str(rest), MAX_TEXT_CHARS)}")
    alert = Alert(
        kind=kind,
        level=level if level in ("ok", "warning", "alarm") else "warning",  # type: ignore[arg-type]
        signal=signal,
        message=_clip(message, MAX_TEXT_CHARS),
        line=_clip(line, 200),
        station=_clip(station, 200),
        details=_bounded(rest, MAX_TEXT_CHARS),
    )
    for limit in (200, 40):
        if len(alert.to_json().encode()) <= MAX_ALERT_BYTES:
            return alert
        alert = alert.model_copy(update={"details": _bounded(rest, limit)})
    if len(alert.to_json().encode()) <= MAX_ALERT_BYTES:
        return alert
    # Still over: the text itself is large once escaped (control characters are 6 bytes in JSON).
    return alert.model_copy(
        update={
            "details": {"truncated": f"details dropped: the alert was over {MAX_ALERT_BYTES} bytes"},
            "message": _clip(alert.message, 300),
            "signal": _clip(alert.signal, 64),
            "line": _clip(alert.line, 64),
            "station": _clip(alert.station, 64),
        }
    )
