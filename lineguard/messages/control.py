"""Messages a station receives on MQTT: trigger, feedback, control and the desired model.

A line controller, a downstream check and the registry write these; the station trusts none of
them. Each is a small pydantic model that forbids unknown keys, so a typo in a PLC's JSON is
answered with a one-line reason instead of being half-understood. The registry builds
``DesiredModel`` with the same class the station parses it with, and ``card_url_for`` is the one
rule that places a model card beside its artifact, for the registry's layout and for the station.
``Release`` is what the registry signs (``lineguard.releases``): the station refuses a desired
model whose release does not verify against a pinned key or does not match the bytes it fetched.
``MODEL_NAME`` and ``MODEL_VERSION`` are the full-match patterns a name and a version must pass
before a station builds a path or a URL from them. A trigger may also be the bare unit id as
plain text (``lineguard.edge.control.parse_trigger``): ``Trigger`` is what both forms become.
``InspectionControl`` is the retained ``…/control`` message that pauses and resumes inspection.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Annotated, Final, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "CONTROL_SCHEMA",
    "FEEDBACK_SCHEMA",
    "MODEL_MESSAGE_SCHEMA",
    "MODEL_NAME",
    "MODEL_VERSION",
    "RELEASE_SCHEMA",
    "TRIGGER_SCHEMA",
    "DesiredModel",
    "Feedback",
    "InspectionControl",
    "Release",
    "Trigger",
    "UnitId",
    "card_url_for",
    "follow_topic",
    "is_unit_id",
]

TRIGGER_SCHEMA: Final = "lineguard.trigger/1"
FEEDBACK_SCHEMA: Final = "lineguard.feedback/1"
MODEL_MESSAGE_SCHEMA: Final = "lineguard.model/1"
RELEASE_SCHEMA: Final = "lineguard.release/1"
CONTROL_SCHEMA: Final = "lineguard.control/1"

# Full-match (re.fullmatch) patterns: a name or version becomes a folder, a file name and a URL path.
MODEL_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MODEL_VERSION: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
_SHA256 = r"^[0-9a-f]{64}$"

# Printable, 1-128 characters: a unit id ends up in logs, file names and alerts. pydantic checks
# the pattern with Rust regex (like JSON Schema), where ``$`` is the end of the text; Python's
# ``re`` lets ``$`` match before a final newline, so Python code checks with ``is_unit_id``.
_UNIT_ID_CHAR = r"[^\x00-\x1f\x7f]"
_UNIT_ID_MAX = 128
_UNIT_ID_RE = re.compile(f"{_UNIT_ID_CHAR}{{1,{_UNIT_ID_MAX}}}")
UnitId = Annotated[str, Field(min_length=1, max_length=_UNIT_ID_MAX, pattern=f"^{_UNIT_ID_CHAR}+$")]


def is_unit_id(value: str) -> bool:
    """True when ``value`` is a valid unit id as a whole (full match: no trailing newline)."""
    return _UNIT_ID_RE.fullmatch(value) is not None


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)


class Trigger(_Message):
    """``…/trigger``: inspect the next frame as this unit."""

    schema_: Literal["lineguard.trigger/1"] = Field(default=TRIGGER_SCHEMA, alias="schema")
    unit_id: UnitId
    ts: float | None = Field(
        default=None, ge=0, allow_inf_nan=False, description="When the unit reached the camera (Unix s)."
    )


class Feedback(_Message):
    """``…/feedback``: the confirmed outcome of a unit, counted so the plant sees real rates."""

    schema_: Literal["lineguard.feedback/1"] = Field(default=FEEDBACK_SCHEMA, alias="schema")
    unit_id: UnitId
    outcome: Literal["escape", "overkill", "confirmed"]


class InspectionControl(_Message):
    """``…/control`` (retained): whether the station inspects; a cleared (empty) message means running.

    While paused every trigger is answered NO_DECISION/``paused`` and a live camera's frames are
    skipped; retained, so the state comes back with every (re)connect and restart.
    """

    schema_: Literal["lineguard.control/1"] = Field(default=CONTROL_SCHEMA, alias="schema")
    inspection: Literal["running", "paused"]


def card_url_for(url: str, name: str, version: str) -> str:
    """The card beside an artifact URL: ``…/<kind>/<sha256>`` -> ``…/cards/<name>/<version>.json``.

    The registry lays out ``<root>/blobs/<sha>`` + ``<root>/cards/<name>/<version>.json`` and serves
    ``/v1/artifacts/<sha>`` + ``/v1/cards/<name>/<version>.json``; one rule covers both.
    """
    parts = urlsplit(url)
    head = parts.path.rstrip("/").rsplit("/", 2)[0]
    return urlunsplit((parts.scheme, parts.netloc, f"{head}/cards/{name}/{version}.json", "", ""))


def follow_topic(name: str) -> str:
    """The retained topic that names the production version of model ``name`` to every station.

    A station with ``registry.follow: <name>`` subscribes to it, so following a model needs no
    registry-side bookkeeping; ``lineguard/<line>/<station>/model`` still addresses one station.
    """
    if not MODEL_NAME.fullmatch(name):
        raise ValueError(f"model name {name!r} is not a valid model name (letters, digits, _ . -)")
    return f"lineguard/models/{name}/production"


class Release(_Message):
    """What the registry signs when it rolls a version out: the exact card bytes and ONNX it means."""

    schema_: Literal["lineguard.release/1"] = Field(default=RELEASE_SCHEMA, alias="schema")
    name: str = Field(min_length=1, max_length=64)
    version: str = Field(min_length=1, max_length=64)
    stage: Literal["staging", "production"]
    sha256: str = Field(pattern=_SHA256, description="sha256 of the ONNX file.")
    card_sha256: str = Field(pattern=_SHA256, description="sha256 of the model card file's exact bytes.")
    signed_at: datetime
    key_id: str = Field(pattern=r"^[0-9a-f]{16}$", description="Which registry key signed it.")

    def signed_bytes(self) -> bytes:
        """The canonical bytes the signature covers (sorted keys, no blanks), the same on both sides."""
        body = self.model_dump(mode="json", by_alias=True)
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


class DesiredModel(_Message):
    """``…/model`` (retained): the model the registry wants this station to run."""

    schema_: Literal["lineguard.model/1"] = Field(default=MODEL_MESSAGE_SCHEMA, alias="schema")
    name: str = Field(min_length=1, max_length=128)
    version: str = Field(min_length=1, max_length=64)
    sha256: str = Field(pattern=_SHA256)
    url: str = Field(min_length=1, max_length=2048, description="Where to fetch the model bundle.")
    release: Release | None = Field(default=None, description="The signed release record.")
    signature: str | None = Field(
        default=None, max_length=128, description="Ed25519 signature of the release (base64)."
    )

    @property
    def card_url(self) -> str:
        """Where the model card of this version sits (``card_url_for``)."""
        return card_url_for(self.url, self.name, self.version)
