"""What a registry keeps, whichever back-end keeps it: versions, stages, audit events, followers.

These records are the vocabulary of the ``RegistryBackend`` interface (``registry/backend.py``), so
the file back-end and the MLflow back-end hand the same objects to the gate, rollout and commands.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from lineguard.messages import ModelCard

__all__ = ["Event", "ModelVersion", "Stage", "StationFollow", "current_user"]


class Stage(StrEnum):
    CANDIDATE = "candidate"
    STAGING = "staging"
    PRODUCTION = "production"
    ARCHIVED = "archived"


@dataclass(frozen=True)
class ModelVersion:
    """One immutable version: its card, where it stands, and where it came from."""

    name: str
    version: str
    sha256: str
    stage: Stage
    card: ModelCard
    parent: str | None
    dataset_hash: str
    training_run: str
    added_at: datetime
    added_by: str

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class Event:
    """One audited change: ``action`` on ``name:version`` by ``who`` at ``at`` because ``why``.

    ``id`` orders a model's history; a back-end assigns it when it stores the event (0 before).
    """

    id: int
    name: str
    version: str
    action: str
    from_stage: str | None
    to_stage: str | None
    who: str
    at: datetime
    why: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StationFollow:
    line: str
    station: str
    model: str


def current_user(by: str | None = None) -> str:
    """Who to record: ``--by`` if given, else ``$USER``, else the login name."""
    if by:
        return by
    try:
        return os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        return "unknown"
