"""Where the registry keeps its records: one interface, two back-ends.

``Registry`` (``registry/store.py``) holds the rules (immutability, stages, the gate requirement,
rollback) and the local artifact folder stations fetch from; a ``RegistryBackend`` only stores and
returns records. ``FileBackend`` is the embedded default (``registry.sqlite`` in the registry
folder, no server); ``MlflowBackend`` (``registry/mlflow_backend.py``) keeps the same records in an
MLflow Model Registry. ``Registry.from_config`` picks one from ``registry.uri``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Protocol

from lineguard.errors import ConfigError
from lineguard.messages import ModelCard
from lineguard.registry.records import Event, ModelVersion, Stage, StationFollow

__all__ = ["MLFLOW_SCHEMES", "FileBackend", "RegistryBackend", "card_location"]

MLFLOW_SCHEMES = ("mlflow+http://", "mlflow+https://")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    name TEXT NOT NULL, version TEXT NOT NULL, sha256 TEXT NOT NULL, card TEXT NOT NULL,
    stage TEXT NOT NULL, parent TEXT, dataset_hash TEXT NOT NULL, training_run TEXT NOT NULL,
    added_at TEXT NOT NULL, added_by TEXT NOT NULL, PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, version TEXT NOT NULL,
    action TEXT NOT NULL, from_stage TEXT, to_stage TEXT, who TEXT NOT NULL, at TEXT NOT NULL,
    why TEXT NOT NULL, detail TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS stations (
    line TEXT NOT NULL, station TEXT NOT NULL, model TEXT NOT NULL, PRIMARY KEY (line, station));
"""


def card_location(root: Path, name: str, version: str) -> Path:
    """The one place a version's card file sits in a registry folder (served and signed as is)."""
    return root / "cards" / name / f"{version}.json"


class RegistryBackend(Protocol):
    """The storage operations of a registry; every rule lives in ``Registry``, not here.

    Versions come back oldest first. ``insert`` and ``change`` store the events that go with them;
    a back-end assigns each event its ``id`` (history order).
    """

    @property
    def where(self) -> str:
        """Where the records live, for messages (credentials masked)."""
        ...

    def version(self, name: str, version: str) -> ModelVersion | None: ...

    def versions(self, name: str | None = None) -> list[ModelVersion]: ...

    def insert(self, mv: ModelVersion, files: Mapping[str, Path], card: Path, event: Event) -> None:
        """Store a new version as ``mv.stage``: its files (``model.onnx`` and the variant files its
        card names, by file name; already checked against the card) and its card file."""
        ...

    def change(self, stages: Sequence[tuple[ModelVersion, Stage]], events: Sequence[Event]) -> None:
        """Move versions to stages and log the events that say why (one transaction where possible)."""
        ...

    def replace_card(self, mv: ModelVersion, card: Path, event: Event) -> None:
        """Keep ``card`` as ``mv``'s card from now on and log ``event``. Only the gate calls this,
        to withdraw a variant's certification (``Registry.decertify``); files never change."""
        ...

    def history(self, name: str) -> list[Event]: ...

    def follow(self, follow: StationFollow, event: Event) -> None: ...

    def stations(self, model: str | None = None) -> list[StationFollow]: ...

    def download(self, mv: ModelVersion, file: str, dest: Path) -> None:
        """Write ``mv``'s ``file`` to ``dest`` (only called when the local folder lacks it)."""
        ...

    def attach(self, mv: ModelVersion, kind: str, files: Sequence[Path]) -> None:
        """Keep report files with ``mv`` (the file back-end leaves them where they were written)."""
        ...


class FileBackend:
    """The embedded registry: ``registry.sqlite`` beside the artifact folder, no server needed."""

    def __init__(self, root: Path) -> None:
        self.db_path = root / "registry.sqlite"
        root.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.executescript(_SCHEMA)

    @property
    def where(self) -> str:
        return str(self.db_path)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.db_path, timeout=10.0)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA journal_mode=WAL")
            with db:  # one transaction: commit on success, roll back on error
                yield db
        finally:
            db.close()

    @staticmethod
    def _version(row: sqlite3.Row) -> ModelVersion:
        return ModelVersion(
            name=row["name"],
            version=row["version"],
            sha256=row["sha256"],
            stage=Stage(row["stage"]),
            card=ModelCard.model_validate_json(row["card"]),
            parent=row["parent"],
            dataset_hash=row["dataset_hash"],
            training_run=row["training_run"],
            added_at=datetime.fromisoformat(row["added_at"]),
            added_by=row["added_by"],
        )

    @staticmethod
    def _log(db: sqlite3.Connection, ev: Event) -> None:
        db.execute(
            "INSERT INTO events (name, version, action, from_stage, to_stage, who, at, why, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                ev.name,
                ev.version,
                ev.action,
                ev.from_stage,
                ev.to_stage,
                ev.who,
                ev.at.isoformat(),
                ev.why,
                json.dumps(ev.detail, sort_keys=True),
            ),
        )

    def version(self, name: str, version: str) -> ModelVersion | None:
        with self._db() as db:
            row = db.execute(
                "SELECT * FROM versions WHERE name = ? AND version = ?", (name, version)
            ).fetchone()
        return None if row is None else self._version(row)

    def versions(self, name: str | None = None) -> list[ModelVersion]:
        query = "SELECT * FROM versions" + (" WHERE name = ?" if name else "") + " ORDER BY added_at, rowid"
        with self._db() as db:
            rows = db.execute(query, (name,) if name else ()).fetchall()
        return [self._version(r) for r in rows]

    def insert(self, mv: ModelVersion, files: Mapping[str, Path], card: Path, event: Event) -> None:
        with self._db() as db:  # the files already sit in the registry folder, by sha256
            db.execute(
                "INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    mv.name,
                    mv.version,
                    mv.sha256,
                    card.read_text(),
                    mv.stage.value,
                    mv.parent,
                    mv.dataset_hash,
                    mv.training_run,
                    mv.added_at.isoformat(),
                    mv.added_by,
                ),
            )
            self._log(db, event)

    def change(self, stages: Sequence[tuple[ModelVersion, Stage]], events: Sequence[Event]) -> None:
        with self._db() as db:
            for mv, stage in stages:
                db.execute(
                    "UPDATE versions SET stage = ? WHERE name = ? AND version = ?",
                    (stage.value, mv.name, mv.version),
                )
            for ev in events:
                self._log(db, ev)

    def replace_card(self, mv: ModelVersion, card: Path, event: Event) -> None:
        with self._db() as db:
            db.execute(
                "UPDATE versions SET card = ? WHERE name = ? AND version = ?",
                (card.read_text(), mv.name, mv.version),
            )
            self._log(db, event)

    def history(self, name: str) -> list[Event]:
        with self._db() as db:
            rows = db.execute("SELECT * FROM events WHERE name = ? ORDER BY id", (name,)).fetchall()
        return [
            Event(
                id=r["id"],
                name=r["name"],
                version=r["version"],
                action=r["action"],
                from_stage=r["from_stage"],
                to_stage=r["to_stage"],
                who=r["who"],
                at=datetime.fromisoformat(r["at"]),
                why=r["why"],
                detail=json.loads(r["detail"]),
            )
            for r in rows
        ]

    def follow(self, follow: StationFollow, event: Event) -> None:
        with self._db() as db:
            db.execute(
                "INSERT OR REPLACE INTO stations VALUES (?, ?, ?)",
                (follow.line, follow.station, follow.model),
            )
            self._log(db, event)

    def stations(self, model: str | None = None) -> list[StationFollow]:
        query = "SELECT * FROM stations" + (" WHERE model = ?" if model else "") + " ORDER BY line, station"
        with self._db() as db:
            rows = db.execute(query, (model,) if model else ()).fetchall()
        return [StationFollow(r["line"], r["station"], r["model"]) for r in rows]

    def attach(self, mv: ModelVersion, kind: str, files: Sequence[Path]) -> None:
        return None  # the report stays in its folder; the audit event names it

    def download(self, mv: ModelVersion, file: str, dest: Path) -> None:
        raise ConfigError(
            f"{file} of {mv.ref} is missing from the registry folder ({dest.parent}); "
            "restore the folder from a backup"
        )
