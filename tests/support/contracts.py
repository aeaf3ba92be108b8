"""Check a payload the code produced against the committed JSON Schema of its wire format.

Integrators validate our payloads with the files in ``schemas/``, so the tests do the same with
``jsonschema`` when it is installed; without it the pydantic model the schema was generated from
stands in (the schema-drift test keeps the two equal).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lineguard.schemas import SCHEMAS

SCHEMA_DIR = Path(__file__).parents[2] / "schemas"


def assert_matches_schema(name: str, payload: dict[str, Any] | str | bytes) -> None:
    """Raise when ``payload`` (JSON text or decoded) breaks ``schemas/<name>.schema.json``."""
    data = json.loads(payload) if isinstance(payload, str | bytes) else payload
    try:
        import jsonschema
    except ImportError:
        SCHEMAS[f"{name}.schema.json"].model_validate(data)
        return
    schema = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())
    jsonschema.validate(data, schema)


def daemon_status(**changes: Any) -> dict[str, Any]:
    """A status dict shaped like ``EdgeDaemon.status()`` (for delivery tests without a daemon)."""
    status: dict[str, Any] = {
        "state": "online",
        "mode": "continuous",
        "model": {"name": "steel", "version": "1.2.0", "sha256": "a" * 64},
        "backend": "onnxruntime",
        "thresholds": "1.2.0+default",
        "camera": {
            "source": "video:belt.mp4",
            "up": True,
            "frozen": False,
            "fps": 30.0,
            "skipped": 0,
            "reconnects": 0,
            "detail": "",
            "silent_s": 0.0,
        },
        "fps": 9.5,
        "outbox_pending": 0,
    }
    status.update(changes)
    return status
