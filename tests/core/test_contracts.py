"""Wire contracts: round trips, the published JSON Schemas, real payloads, and rejection of bad ones."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError
from support.contracts import assert_matches_schema, daemon_status

from lineguard.config import PolicyConfig
from lineguard.inference import Detections, VerdictPolicy
from lineguard.messages import (
    DatasetManifest,
    DesiredModel,
    Feedback,
    InspectionControl,
    ModelCard,
    ModelRef,
    StationStatus,
    Trigger,
    Verdict,
    build_alert,
    card_url_for,
)
from lineguard.schemas import SCHEMAS, render_schema

SCHEMA_DIR = Path(__file__).parents[2] / "schemas"
T0 = datetime(2026, 11, 26, 8, 0, 0, tzinfo=UTC)


def verdict_payload(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "schema": "lineguard.verdict/1",
        "seq": 41,
        "unit_id": "U-0041",
        "line": "line1",
        "station": "station1",
        "verdict": "FAIL",
        "reason": "defect",
        "defects": [{"class": "scratch", "class_id": 0, "confidence": 0.91, "box": [0.1, 0.2, 0.3, 0.4]}],
        "model": {"name": "steel", "version": "3", "sha256": "a" * 64},
        "thresholds": "3+default",
        "captured_at": "2026-11-26T08:00:00Z",
        "decided_at": "2026-11-26T08:00:00.034Z",
        "latency_ms": 34.0,
    }
    payload.update(changes)
    return payload


def card_payload(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "name": "steel",
        "version": "3",
        "sha256": "b" * 64,
        "classes": ["scratch", "pit"],
        "input_size": 320,
        "thresholds": {"scratch": 0.4, "pit": 0.5},
    }
    payload.update(changes)
    return payload


def test_every_wire_format_has_a_published_schema() -> None:
    formats = {"verdict", "status", "alert", "trigger", "feedback", "model", "control", "model_card"}
    formats.add("dataset_manifest")
    assert set(SCHEMAS) == {f"{name}.schema.json" for name in formats}
    assert {p.name for p in SCHEMA_DIR.glob("*.schema.json")} == set(SCHEMAS)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_published_schema_matches_the_model(name: str) -> None:
    committed = (SCHEMA_DIR / name).read_text()
    assert committed == render_schema(SCHEMAS[name]), (
        f"schemas/{name} is stale: run python -m lineguard.schemas schemas"
    )


def test_verdict_round_trips_through_json_and_validates_against_schema() -> None:
    verdict = Verdict.model_validate(verdict_payload())
    text = verdict.to_json()
    assert Verdict.from_json(text) == verdict
    data = json.loads(text)
    assert data["schema"] == "lineguard.verdict/1"
    assert data["defects"][0]["class"] == "scratch"
    assert data["captured_at"].endswith("Z")
    jsonschema.validate(data, json.loads((SCHEMA_DIR / "verdict.schema.json").read_text()))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"verdict": "MAYBE"}, "verdict"),
        ({"seq": 0}, "seq"),
        ({"unit_id": ""}, "unit_id"),
        ({"reason": "because"}, "reason"),
        ({"schema": "lineguard.verdict/2"}, "schema"),
        ({"extra": 1}, "extra"),
        ({"defects": [{"class": "x", "class_id": 0, "confidence": 1.5, "box": [0, 0, 1, 1]}]}, "confidence"),
        ({"defects": [{"class": "x", "class_id": 0, "confidence": 0.5, "box": [0, 0, 1]}]}, "box"),
    ],
)
def test_malformed_verdict_is_rejected(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        Verdict.model_validate(verdict_payload(**changes))
    assert field in str(info.value)
    schema = json.loads((SCHEMA_DIR / "verdict.schema.json").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(verdict_payload(**changes), schema)


def test_verdict_refuses_local_time() -> None:
    cest = timezone(timedelta(hours=2))
    with pytest.raises(ValidationError, match="UTC"):
        Verdict.model_validate(verdict_payload(captured_at=T0.astimezone(cest)))


def test_model_card_round_trip_and_schema(tmp_path: Path) -> None:
    card = ModelCard.model_validate(card_payload())
    card.save(tmp_path / "model_card.json")
    loaded = ModelCard.load(tmp_path / "model_card.json")
    assert loaded == card
    assert loaded.threshold_for("pit") == 0.5
    schema = json.loads((SCHEMA_DIR / "model_card.schema.json").read_text())
    jsonschema.validate(json.loads((tmp_path / "model_card.json").read_text()), schema)


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"thresholds": {"dent": 0.5}}, "unknown classes ['dent']"),
        ({"thresholds": {"pit": 0.0}}, "thresholds must be in (0, 1]"),
        ({"sha256": "xyz"}, "sha256"),
        ({"classes": []}, "classes"),
    ],
)
def test_bad_model_card_is_refused_with_a_readable_reason(
    tmp_path: Path, changes: dict[str, Any], needle: str
) -> None:
    from lineguard.errors import ModelError

    path = tmp_path / "model_card.json"
    path.write_text(json.dumps(card_payload(**changes)))
    with pytest.raises(ModelError) as info:
        ModelCard.load(path)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_manifest_hash_follows_content_not_time(tmp_path: Path) -> None:
    (tmp_path / "images" / "train").mkdir(parents=True)
    (tmp_path / "images" / "train" / "a.png").write_bytes(b"png-bytes")
    (tmp_path / "data.yaml").write_text("names: [scratch]\n")
    first = DatasetManifest.scan(tmp_path, name="d", classes=["scratch"], source="test", created_at=T0)
    later = DatasetManifest.scan(
        tmp_path, name="d", classes=["scratch"], source="test", created_at=T0 + timedelta(days=1)
    )
    assert first.content_hash == later.content_hash
    assert [f.split for f in first.files] == ["", "train"]
    first.save(tmp_path)
    assert DatasetManifest.load(tmp_path).verify(tmp_path) == []
    (tmp_path / "images" / "train" / "a.png").write_bytes(b"changed")
    assert DatasetManifest.load(tmp_path).verify(tmp_path) == ["images/train/a.png"]
    schema = json.loads((SCHEMA_DIR / "dataset_manifest.schema.json").read_text())
    jsonschema.validate(json.loads((tmp_path / "manifest.json").read_text()), schema)


def test_a_verdict_built_from_the_policys_decision_matches_the_schema() -> None:
    card = ModelCard.model_validate(card_payload())
    decision = VerdictPolicy(card, PolicyConfig()).decide(
        Detections.from_arrays([[0.1, 0.2, 0.3, 0.4]], [0.93], [0]), elapsed_ms=12.0
    )
    verdict = Verdict(
        seq=1,
        unit_id="U-1",
        line="line1",
        station="station1",
        verdict=decision.verdict,
        reason=decision.reason,
        defects=decision.defects,
        model=ModelRef(name=card.name, version=card.version, sha256=card.sha256),
        thresholds="3+default",
        captured_at=T0,
        decided_at=T0 + timedelta(milliseconds=12),
        latency_ms=12.0,
    )
    assert (verdict.verdict, verdict.defects[0].class_name) == ("FAIL", "scratch")
    assert_matches_schema("verdict", verdict.to_json())


def test_status_online_and_offline_match_the_schema() -> None:
    online = json.loads(StationStatus.online("line1", "station1", daemon_status()).to_json())
    assert list(online)[:5] == ["schema", "state", "line", "station", "ts"]
    assert online["camera"]["source"] == "video:belt.mp4" and online["model"]["name"] == "steel"
    assert_matches_schema("status", online)
    no_model = json.loads(
        StationStatus.online("l", "s", daemon_status(model=None, backend=None, thresholds=None)).to_json()
    )
    assert no_model["model"] is None  # "no model loaded" stays an explicit null
    offline = json.loads(StationStatus.offline("line1", "station1").to_json())
    assert set(offline) == {"schema", "state", "line", "station", "ts"}  # the last will: identity only
    assert_matches_schema("status", offline)


def test_status_refuses_a_field_outside_the_contract() -> None:
    with pytest.raises(ValidationError, match="camera"):
        StationStatus.online("line1", "station1", daemon_status(camera="up"))


def test_alerts_triggers_feedback_and_model_messages_match_their_schemas() -> None:
    alert = build_alert("camera_down", {"source": "cam0", "detail": "no frames"}, line="l", station="s")
    assert_matches_schema("alert", alert.to_json())
    assert_matches_schema("trigger", Trigger(unit_id="PLC-1", ts=1.5).to_json())
    assert_matches_schema("feedback", Feedback(unit_id="PLC-1", outcome="escape").to_json())
    url = "http://reg:8000/v1/artifacts/" + "c" * 64
    desired = DesiredModel(name="steel", version="3", sha256="c" * 64, url=url)
    assert_matches_schema("model", desired.to_json())
    assert_matches_schema("control", InspectionControl(inspection="paused").to_json())
    assert_matches_schema("control", {"inspection": "running"})
    with pytest.raises(jsonschema.ValidationError):
        assert_matches_schema("trigger", {"unit_id": "PLC-1", "extra": 1})
    with pytest.raises(jsonschema.ValidationError):
        assert_matches_schema("control", {"inspection": "stopped"})


@pytest.mark.parametrize(
    ("artifact", "card"),
    [
        ("http://reg:8000/v1/artifacts/" + "c" * 64, "http://reg:8000/v1/cards/steel/3.json"),
        ("file:///srv/registry/blobs/" + "c" * 64, "file:///srv/registry/cards/steel/3.json"),
    ],
)
def test_the_card_sits_beside_the_artifact_by_one_rule(artifact: str, card: str) -> None:
    assert card_url_for(artifact, "steel", "3") == card
    assert DesiredModel(name="steel", version="3", sha256="c" * 64, url=artifact).card_url == card
