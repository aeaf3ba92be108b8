"""Publish the wire contracts as JSON Schema files under ``schemas/``.

Line controllers, MES and QA tooling are not written in Python; they validate our payloads with
these files. The files are generated from the pydantic models and a test fails when they drift
apart, so regenerate with ``python -m lineguard.schemas schemas/`` after changing a contract.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from lineguard.messages import (
    Alert,
    DatasetManifest,
    DesiredModel,
    Feedback,
    InspectionControl,
    ModelCard,
    StationStatus,
    Trigger,
    Verdict,
)

__all__ = ["SCHEMAS", "render_schema", "write_schemas"]

# One file per wire format; a station's topics are named after the first seven (lineguard/<line>/
# <station>/verdict, .../status, .../alert, .../trigger, .../feedback, .../model, .../control).
# Two payloads are not JSON and have no file: a plain-text trigger (the unit id alone, see
# lineguard.edge.control.parse_trigger) and the compact …/result line (messages.RESULT_PATTERN).
SCHEMAS: dict[str, type[BaseModel]] = {
    "verdict.schema.json": Verdict,
    "status.schema.json": StationStatus,
    "alert.schema.json": Alert,
    "trigger.schema.json": Trigger,
    "feedback.schema.json": Feedback,
    "model.schema.json": DesiredModel,
    "control.schema.json": InspectionControl,
    "model_card.schema.json": ModelCard,
    "dataset_manifest.schema.json": DatasetManifest,
}


def render_schema(model: type[BaseModel]) -> str:
    schema: dict[str, Any] = model.model_json_schema(by_alias=True, mode="serialization")
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schemas(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in SCHEMAS.items():
        path = folder / name
        path.write_text(render_schema(model))
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_schemas(Path(sys.argv[1] if len(sys.argv) > 1 else "schemas")):
        print(path)
