"""Messages the edge receives on MQTT: triggers, feedback, control and the desired model, validated.

A line controller, a downstream check and the registry write these; the edge trusts none of them.
Their models live in ``lineguard.messages`` and forbid unknown keys, so a typo in a PLC's JSON is
answered with a one-line reason on ``…/alert`` instead of being half-understood.
``parse_control`` turns raw bytes into a model or an ``InputError`` that says what was wrong;
``parse_trigger`` also takes the plain-text form a simple PLC sends (the payload is the unit id);
``RecentIds`` remembers the last unit ids so the daemon answers a repeated one with
NO_DECISION/``duplicate_unit`` instead of inspecting it twice; ``ControlInbox`` routes a received
message to the daemon's handler or answers it with an alert.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Final, TypeVar

from pydantic import BaseModel, ValidationError

from lineguard.errors import InputError, validation_message
from lineguard.messages import DesiredModel, Feedback, InspectionControl, Trigger, follow_topic, is_unit_id
from lineguard.monitoring import Metrics

__all__ = [
    "CONTROL_MESSAGES",
    "MAX_CONTROL_BYTES",
    "ControlInbox",
    "DesiredModel",
    "Feedback",
    "InspectionControl",
    "RecentIds",
    "Trigger",
    "parse_control",
    "parse_trigger",
]

UnitId = str

CONTROL_MESSAGES: Final[dict[str, type[BaseModel]]] = {
    "trigger": Trigger,
    "feedback": Feedback,
    "model": DesiredModel,
    "control": InspectionControl,
}

M = TypeVar("M", bound=BaseModel)

MAX_CONTROL_BYTES: Final = 16 * 1024  # a trigger is ~100 bytes, a model message under 3 kB
_MAX_REASON_CHARS: Final = 1000  # an alert says what was wrong in a line, not a page
_PLAIN_TRIGGER_BYTES: Final = 128 * 4  # 128 characters of UTF-8 at most: a unit id's limit
_JSON_STARTS: Final = (b"{", b"[", b'"')  # a payload starting so is read as JSON, never as a unit id


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_REASON_CHARS else text[: _MAX_REASON_CHARS - 1] + "…"


def parse_control(kind: type[M], payload: bytes | str) -> M:
    """Validate one payload; ``InputError`` names the message kind and the problem.

    A payload over ``MAX_CONTROL_BYTES`` is refused unparsed: no trigger, feedback or model
    message comes near it, and parsing a megabyte of JSON per message is a cheap way to stall a
    station.
    """
    name = kind.__name__.lower()
    if len(payload) > MAX_CONTROL_BYTES:
        raise InputError(
            f"invalid {name} message: {len(payload)} bytes, over the {MAX_CONTROL_BYTES}-byte limit "
            "for control messages; send one small JSON object"
        )
    try:
        return kind.model_validate_json(payload)
    except ValidationError as exc:
        raise InputError(f"invalid {name} message: {validation_message(exc)}") from exc


def parse_trigger(payload: bytes) -> Trigger:
    """A JSON trigger, or a plain-text one: the whole payload is the unit id (``A-1``, ``12345``).

    A payload that starts with ``{``, ``[`` or ``"`` (after blanks) is JSON and must be a trigger
    object; anything else must be a unit id as a whole: UTF-8, 1-128 printable characters, no
    line break, so ``A-1\\n`` is refused rather than trimmed into a different id.
    """
    if payload.lstrip().startswith(_JSON_STARTS):
        return parse_control(Trigger, payload)
    if len(payload) > _PLAIN_TRIGGER_BYTES:
        raise InputError(
            f"invalid trigger message: {len(payload)} bytes is too long for a plain-text unit id "
            f"(at most 128 characters); send the unit id alone or a JSON trigger"
        )
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if not is_unit_id(text):
        raise InputError(
            "invalid trigger message: not JSON and not a plain-text unit id (1-128 printable "
            "UTF-8 characters, no line breaks); send the unit id alone or a JSON trigger"
        )
    return Trigger(unit_id=text)


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


class ControlInbox:
    """Validates what arrives on ``<prefix>{trigger,feedback,model,control}`` (and the followed
    model's ``lineguard/models/<name>/production``) and hands it on.

    A malformed message is answered with an alert (``invalid_trigger``, ``invalid_feedback``,
    ``invalid_model``, ``invalid_control``) carrying the reason, never the payload. A repeated unit
    id is passed on too: the daemon answers it (NO_DECISION/``duplicate_unit``). An empty
    ``…/control`` (the retained message cleared) means running. Feedback outcomes are counted in
    ``lineguard_feedback_total``.
    """

    def __init__(
        self,
        prefix: str,
        alert: Callable[[str, dict[str, object]], None],
        metrics: Metrics,
        *,
        on_trigger: Callable[[Trigger], object] | None = None,
        on_feedback: Callable[[Feedback], object] | None = None,
        on_model: Callable[[DesiredModel], object] | None = None,
        on_control: Callable[[InspectionControl], object] | None = None,
        follow: str = "",
    ) -> None:
        self._alert = alert
        self._metrics = metrics
        self._routes: dict[str, Callable[[bytes, bool], None]] = {
            prefix + "trigger": self._trigger,
            prefix + "feedback": self._feedback,
            prefix + "model": self._model,
            prefix + "control": self._control,
        }
        if follow:  # registry.follow: the model's own retained production topic, read like …/model
            self._routes[follow_topic(follow)] = self._model
        self._on_trigger, self._on_feedback, self._on_model = on_trigger, on_feedback, on_model
        self._on_control = on_control

    @property
    def topics(self) -> list[str]:
        return list(self._routes)

    def handle(self, topic: str, payload: bytes, *, retained: bool = False) -> None:
        route = self._routes.get(topic)
        if route is not None:
            route(payload, retained)

    def _invalid(self, kind: str, reason: str, payload: bytes) -> None:
        """Alert on a refused message: what was wrong and its size, never what was sent."""
        self._alert(kind, {"reason": _clip(reason), "payload_bytes": len(payload)})

    def _trigger(self, payload: bytes, retained: bool) -> None:
        try:
            trigger = parse_trigger(payload)
        except InputError as exc:
            self._invalid("invalid_trigger", str(exc), payload)
            return
        if retained:
            self._invalid(
                "invalid_trigger", "retained trigger ignored: publish triggers with retain=false", payload
            )
            return
        if self._on_trigger is not None:
            self._on_trigger(trigger)

    def _feedback(self, payload: bytes, retained: bool) -> None:
        try:
            feedback = parse_control(Feedback, payload)
        except InputError as exc:
            self._invalid("invalid_feedback", str(exc), payload)
            return
        self._metrics.feedback.labels(outcome=feedback.outcome).inc()
        if self._on_feedback is not None:
            self._on_feedback(feedback)

    def _model(self, payload: bytes, retained: bool) -> None:
        if not payload:  # the registry cleared the retained message
            return
        try:
            model = parse_control(DesiredModel, payload)
        except InputError as exc:
            self._invalid("invalid_model", str(exc), payload)
            return
        if self._on_model is not None:
            self._on_model(model)

    def _control(self, payload: bytes, retained: bool) -> None:
        try:
            control = (
                parse_control(InspectionControl, payload)
                if payload
                else InspectionControl(inspection="running")
            )
        except InputError as exc:
            self._invalid("invalid_control", str(exc), payload)
            return
        if self._on_control is not None:
            self._on_control(control)
