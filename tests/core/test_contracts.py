"""Wire contracts: round trips, the published JSON Schemas, and rejection of bad payloads."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from lineguard.messages import DatasetManifest, ModelCard, Verdict
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
