"""Validation of the messages the edge receives: triggers, feedback and the desired model."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lineguard.edge.control import (
    MAX_CONTROL_BYTES,
    ControlInbox,
    DesiredModel,
    Feedback,
    InspectionControl,
    RecentIds,
    Trigger,
    parse_control,
    parse_trigger,
)
from lineguard.errors import InputError
from lineguard.messages import is_unit_id
from lineguard.monitoring.metrics import Metrics


@pytest.mark.parametrize(
    ("payload", "expected", "error"),
    [
        (b"", None, "invalid trigger message"),
        (b"[]", None, "invalid trigger message"),
        (b'{"unit_id": "A-1"}', Trigger(unit_id="A-1"), None),
        (b'{"unit_id": "A-1", "ts": 1767225600.5}', Trigger(unit_id="A-1", ts=1767225600.5), None),
        (b'{"unit_id": ""}', None, "unit_id"),
        (b'{"unit_id": "' + b"x" * 129 + b'"}', None, "unit_id"),
        (b'{"unit_id": "A\\n1"}', None, "unit_id"),
        (b'{"unit_id": "A-1\\n"}', None, "unit_id"),
        (b'{"unit_id": "A-1", "ts": -1}', None, "ts"),
        (b'{"unit_id": "A-1", "speed": 2}', None, "speed: unknown key"),
        (b'{"ts": 1.0}', None, "unit_id: Field required"),
    ],
)
def test_parse_trigger(payload: bytes, expected: Trigger | None, error: str | None) -> None:
    if error is not None:
        with pytest.raises(InputError, match=error):
            parse_control(Trigger, payload)
    else:
        assert parse_control(Trigger, payload) == expected


@pytest.mark.parametrize(
    ("payload", "outcome", "error"),
    [
        ("", None, "invalid feedback message"),
        ('{"unit_id": "u1", "outcome": "escape"}', "escape", None),
        ('{"unit_id": "u1", "outcome": "overkill"}', "overkill", None),
        ('{"unit_id": "u1", "outcome": "confirmed"}', "confirmed", None),
        ('{"unit_id": "u1", "outcome": "ESCAPE"}', None, "outcome"),
        ('{"outcome": "escape"}', None, "unit_id"),
        ('{"unit_id": "u1\\n", "outcome": "escape"}', None, "unit_id"),
    ],
)
def test_parse_feedback(payload: str, outcome: str | None, error: str | None) -> None:
    if error is not None:
        with pytest.raises(InputError, match=error):
            parse_control(Feedback, payload)
    else:
        assert parse_control(Feedback, payload).outcome == outcome


def test_desired_model_needs_a_full_sha256() -> None:
    good: dict[str, Any] = {
        "name": "det",
        "version": "1.0.0",
        "sha256": "0" * 64,
        "url": "http://r/det/1.0.0",
    }
    assert parse_control(DesiredModel, DesiredModel(**good).to_json()) == DesiredModel(**good)
    with pytest.raises(InputError, match="sha256"):
        parse_control(DesiredModel, json.dumps({**good, "sha256": "abc"}))


@pytest.mark.parametrize(
    ("payload", "unit_id"),
    [
        (b"A-1", "A-1"),
        (b"4711", "4711"),  # a PLC counter: valid JSON, but a number is never a trigger object
        ("LOT4-0009 (left), ü".encode(), "LOT4-0009 (left), ü"),
        (b"x" * 128, "x" * 128),
        (b' {"unit_id": "A-1"}', "A-1"),
    ],
)
def test_plain_text_trigger_is_the_unit_id(payload: bytes, unit_id: str) -> None:
    assert parse_trigger(payload) == Trigger(unit_id=unit_id)


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"", "not JSON and not a plain-text unit id"),
        (b"A-1\n", "not JSON and not a plain-text unit id"),
        (b"A\x001", "not JSON and not a plain-text unit id"),
        (b"\xff\xfe", "not JSON and not a plain-text unit id"),
        (b"x" * 129, "not JSON and not a plain-text unit id"),
        (b"x" * 100_000, "too long for a plain-text unit id"),
        (b"[]", "invalid trigger message"),
        (b'"A-1"', "invalid trigger message"),
        (b'{"unit_id": "A-1"', "invalid trigger message"),
    ],
)
def test_plain_text_trigger_must_be_a_unit_id_as_a_whole(payload: bytes, error: str) -> None:
    with pytest.raises(InputError, match=error) as caught:
        parse_trigger(payload)
    assert "x" * 100 not in str(caught.value)


def test_control_pauses_and_resumes_and_refuses_anything_else_without_echo() -> None:
    alerts: list[tuple[str, dict[str, object]]] = []
    got: list[str] = []
    inbox = ControlInbox(
        "p/", lambda k, d: alerts.append((k, d)), Metrics(), on_control=lambda c: got.append(c.inspection)
    )
    secret = "x" * 200
    for payload in (
        b'{"inspection": "paused"}',
        b"",  # the retained message cleared: running
        b'{"schema": "lineguard.control/1", "inspection": "paused"}',
        b'{"inspection": "running"}',
        b"pause",
        b'{"inspection": "stopped"}',
        json.dumps({"inspection": "paused", "note": secret}).encode(),
        b"{" + secret.encode() * 1000,
    ):
        inbox.handle("p/control", payload, retained=True)
    assert got == ["paused", "running", "paused", "running"]
    assert [k for k, _ in alerts] == ["invalid_control"] * 4
    assert "inspection" in str(alerts[1][1]["reason"])
    assert "byte limit" in str(alerts[3][1]["reason"])
    assert all(secret[:50] not in json.dumps(d) and len(json.dumps(d)) < 1024 for _, d in alerts)
    assert InspectionControl(inspection="paused").to_json() == (
        '{"schema":"lineguard.control/1","inspection":"paused"}'
    )


def test_recent_ids_report_repeats_within_the_window_only() -> None:
    recent = RecentIds(size=2)
    assert [recent.seen_before(u) for u in ("a", "b", "a", "c", "b", "a")] == [
        False,
        False,
        True,
        False,  # window now holds a, c: b fell out
        False,
        False,
    ]


def test_inbox_ignores_retained_triggers_and_cleared_models() -> None:
    alerts: list[tuple[str, dict[str, object]]] = []
    triggers: list[Trigger] = []
    models: list[DesiredModel] = []
    inbox = ControlInbox(
        "p/",
        lambda k, d: alerts.append((k, d)),
        Metrics(),
        on_trigger=triggers.append,
        on_model=models.append,
    )
    inbox.handle("p/trigger", b'{"unit_id": "A1"}', retained=True)
    inbox.handle("p/model", b"", retained=True)
    inbox.handle("p/other", b"{}")
    inbox.handle("p/trigger", b'{"unit_id": "A1"}')
    assert [t.unit_id for t in triggers] == ["A1"]
    assert models == []
    assert [k for k, _ in alerts] == ["invalid_trigger"]
    assert "retained trigger ignored" in str(alerts[0][1]["reason"])


@pytest.mark.parametrize("value", ["A-1\n", "A-1\r", "\nA-1", "", "x" * 129, "A\x001"])
def test_unit_ids_must_match_as_a_whole(value: str) -> None:
    assert not is_unit_id(value)
    assert is_unit_id("LOT4-0009 (left)")


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (json.dumps({"unit_id": "x" * 1_000_000}).encode(), f"over the {MAX_CONTROL_BYTES}-byte limit"),
        (json.dumps({"unit_id": "x" * 12_000}).encode(), "at most 128 characters"),
        (b"{" + b"x" * 12_000, "Invalid JSON"),
    ],
    ids=["megabyte", "long-unit-id", "broken-json"],
)
def test_invalid_message_alert_says_what_was_wrong_not_what_was_sent(payload: bytes, words: str) -> None:
    alerts: list[tuple[str, dict[str, object]]] = []
    inbox = ControlInbox("p/", lambda k, d: alerts.append((k, d)), Metrics())
    inbox.handle("p/trigger", payload)
    inbox.handle("p/feedback", payload)
    assert [k for k, _ in alerts] == ["invalid_trigger", "invalid_feedback"]
    for _, detail in alerts:
        assert words in str(detail["reason"])
        assert detail["payload_bytes"] == len(payload)
        assert len(json.dumps(detail)) < 1024
        assert "x" * 100 not in json.dumps(detail)
