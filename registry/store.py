"""The model store: immutable versions in SQLite, their bytes in a content-addressed folder.

A model reaches the line only through here, so every version is checked on the way in (the ONNX
file must hash to its card's sha256) and can never change afterwards: adding ``name:version``
again with other bytes is refused. ONNX files live once under ``blobs/<sha256>`` however many
versions share them; each version's card lives under ``cards/<name>/<version>.json``. Stages move
``candidate -> staging -> production -> archived``; production history is replayed from the
audit log, so ``rollback`` is one call that needs no bookkeeping of its own. Every change writes
an event (who, when, why) that ``history`` shows.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from lineguard.errors import InputError, ModelError
from lineguard.messages import ModelCard, sha256_file
from lineguard.model_refs import model_folder

__all__ = [
    "CARD_FILE",
    "ONNX_FILE",
    "Event",
    "ModelVersion",
    "Registry",
    "Stage",
    "StationFollow",
    "current_user",
    "parse_ref",
]

ONNX_FILE = "model.onnx"
CARD_FILE = "model_card.json"

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
    """One audited change: ``action`` on ``name:version`` by ``who`` at ``at`` because ``why``."""

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


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``NAME`` or ``NAME:VERSION`` -> (name, version or None)."""
    name, _, version = ref.partition(":")
    if not name:
        raise InputError(f"model reference {ref!r} has no name; write NAME or NAME:VERSION")
    return name, version or None


def _find_model_dir(path: Path) -> Path:
    if not path.exists():
        raise InputError(f"model folder not found: {path}")
    if (path / CARD_FILE).is_file():
        return path
    cards = sorted(p.parent for p in path.rglob(CARD_FILE))
    if len(cards) == 1:
        return cards[0]
    found = ", ".join(str(c) for c in cards) if cards else "none"
    raise InputError(
        f"{path} must hold one {CARD_FILE} (a model folder or a run with one export); found {found}"
    )


def _onnx_in(folder: Path) -> Path:
    if (folder / ONNX_FILE).is_file():
        return folder / ONNX_FILE
    found = sorted(folder.glob("*.onnx"))
    if len(found) != 1:
        raise InputError(f"{folder} must hold {ONNX_FILE} (or exactly one .onnx file); found {len(found)}")
    return found[0]


def _variant_files(folder: Path, card: ModelCard) -> dict[str, str]:
    """The variant files the card names, each checked against its sha256 (the card is what is signed)."""
    found: dict[str, str] = {}
    for variant in card.variants:
        if variant.file is None:
            continue
        path = folder / variant.file
        if not path.is_file():
            raise ModelError(
                f"{card.ref} names the {variant.name} variant file {variant.file}, missing in {folder}; "
                "export the model again or register the whole folder"
            )
        digest = sha256_file(path)
        if digest != variant.sha256:
            raise ModelError(
                f"{path} has sha256 {digest[:12]}…, its card {card.ref} says {variant.sha256[:12]}…; "
                "the variant file changed after export: export the model again"
            )
        found[variant.file] = digest
    return found


class Registry:
    """The registry at ``root``: ``registry.sqlite``, ``blobs/``, ``cards/`` and ``models/``.

    ``models/<name>/<version>/`` is each version as a loadable folder and ``models/<name>/<stage>``
    links to the version in that stage, so ``name@production`` works wherever a path does
    (``lineguard.model_refs``).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.blobs = self.root / "blobs"
        self.cards = self.root / "cards"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.cards.mkdir(parents=True, exist_ok=True)
        self.db_path = self.root / "registry.sqlite"
        with self._db() as db:
            db.executescript(_SCHEMA)

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

    # -- paths -------------------------------------------------------------------------------
    def blob_path(self, sha256: str) -> Path:
        return self.blobs / sha256

    def card_path(self, name: str, version: str) -> Path:
        return self.cards / name / f"{version}.json"

    def _materialise(self, name: str, version: str) -> Path:
        """``models/<name>/<version>/``: the blobs (hard links) and card as a loadable model folder.

        The variant files the card names sit beside ``model.onnx``, so ``name@production`` runs them.
        """
        folder = model_folder(self.root, name, version)
        folder.mkdir(parents=True, exist_ok=True)
        mv = self.get(name, version)
        files = {ONNX_FILE: mv.sha256} | {v.file: v.sha256 for v in mv.card.variants if v.file}
        for file, digest in files.items():
            if not (folder / file).exists():
                self._link_blob(digest, folder / file)
        shutil.copyfile(self.card_path(name, version), folder / CARD_FILE)
        return folder

    def _link_blob(self, digest: str, dest: Path) -> None:
        tmp = dest.with_name(f".{dest.name}.tmp")
        tmp.unlink(missing_ok=True)
        blob = self.blob_path(digest)
        try:
            os.link(blob, tmp)
        except OSError:  # another file system, or links not allowed: a copy does as well
            shutil.copyfile(blob, tmp)
        tmp.replace(dest)

    def _store_blob(self, source: Path, digest: str) -> None:
        blob = self.blob_path(digest)
        if not blob.exists():
            tmp = blob.with_suffix(".tmp")
            shutil.copyfile(source, tmp)
            tmp.replace(blob)

    def _point_stages(self, name: str) -> None:
        """``models/<name>/{staging,production}`` -> the version holding the stage (atomic swap)."""
        for stage in (Stage.STAGING, Stage.PRODUCTION):
            holder = next((v for v in self.versions(name) if v.stage is stage), None)
            link = model_folder(self.root, name, stage.value)
            if holder is None:
                link.unlink(missing_ok=True)
                continue
            self._materialise(name, holder.version)
            tmp = link.with_name(f".{stage.value}.tmp")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(holder.version, target_is_directory=True)
            tmp.replace(link)

    # -- adding ------------------------------------------------------------------------------
    def add(self, model_dir: Path, *, by: str | None = None, why: str = "") -> ModelVersion:
        """Store the model folder (``model.onnx`` + ``model_card.json``) as a new candidate version.

        Adding the very same version again returns it unchanged; other bytes under an existing
        ``name:version`` are refused (versions are immutable: export a new version instead).
        """
        folder = _find_model_dir(Path(model_dir))
        card = ModelCard.load(folder / CARD_FILE)
        onnx = _onnx_in(folder)
        digest = sha256_file(onnx)
        if digest != card.sha256:
            raise ModelError(
                f"{onnx} has sha256 {digest[:12]}…, its card {card.ref} says {card.sha256[:12]}…; "
                "the file changed after export: export the model again"
            )
        if card.version in {stage.value for stage in Stage}:
            raise ModelError(
                f"{card.ref}: a version may not be named like a stage ({card.version}); "
                "models/<name>/<stage> points at versions"
            )
        card_json = card.model_dump_json(by_alias=True, indent=2) + "\n"
        existing = self._row(card.name, card.version)
        if existing is not None:
            if existing["sha256"] == digest and existing["card"] == card_json:
                return self._version(existing)
            what = "ONNX bytes" if existing["sha256"] != digest else "model card"
            raise ModelError(
                f"{card.ref} is already in the registry with another {what}; versions are immutable: "
                "give the new model another version"
            )
        self._store_blob(onnx, digest)
        for file, file_digest in _variant_files(folder, card).items():
            self._store_blob(folder / file, file_digest)
        card_file = self.card_path(card.name, card.version)
        card_file.parent.mkdir(parents=True, exist_ok=True)
        card_file.write_text(card_json)
        who = current_user(by)
        now = datetime.now(UTC)
        with self._db() as db:
            db.execute(
                "INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    card.name,
                    card.version,
                    digest,
                    card_json,
                    Stage.CANDIDATE.value,
                    card.parent,
                    card.dataset_hash,
                    card.training_run,
                    now.isoformat(),
                    who,
                ),
            )
            self._log(db, card.name, card.version, "add", None, Stage.CANDIDATE, who, why, {"sha256": digest})
        self._materialise(card.name, card.version)
        return self.get(card.name, card.version)

    # -- reading -----------------------------------------------------------------------------
    def _row(self, name: str, version: str) -> sqlite3.Row | None:
        with self._db() as db:
            row: sqlite3.Row | None = db.execute(
                "SELECT * FROM versions WHERE name = ? AND version = ?", (name, version)
            ).fetchone()
        return row

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

    def versions(self, name: str | None = None) -> list[ModelVersion]:
        """All versions (of ``name``), oldest first."""
        query = "SELECT * FROM versions" + (" WHERE name = ?" if name else "") + " ORDER BY added_at, rowid"
        with self._db() as db:
            rows = db.execute(query, (name,) if name else ()).fetchall()
        return [self._version(r) for r in rows]

    def get(self, name: str, version: str | None = None) -> ModelVersion:
        """``name:version``; without a version the production one, else the newest."""
        if version is not None:
            row = self._row(name, version)
            if row is None:
                known = ", ".join(v.version for v in self.versions(name)) or "none"
                raise InputError(f"no model {name}:{version} in the registry; versions of {name}: {known}")
            return self._version(row)
        found = self.versions(name)
        if not found:
            raise InputError(
                f"no model named {name!r} in the registry; add one with 'lineguard registry add'"
            )
        prod = [v for v in found if v.stage is Stage.PRODUCTION]
        return prod[0] if prod else found[-1]

    def production(self, name: str) -> ModelVersion | None:
        return next((v for v in self.versions(name) if v.stage is Stage.PRODUCTION), None)

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

    # -- stage changes -----------------------------------------------------------------------
    @staticmethod
    def _log(
        db: sqlite3.Connection,
        name: str,
        version: str,
        action: str,
        from_stage: Stage | None,
        to_stage: Stage | None,
        who: str,
        why: str,
        detail: dict[str, Any],
    ) -> None:
        db.execute(
            "INSERT INTO events (name, version, action, from_stage, to_stage, who, at, why, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                name,
                version,
                action,
                from_stage.value if from_stage else None,
                to_stage.value if to_stage else None,
                who,
                datetime.now(UTC).isoformat(),
                why,
                json.dumps(detail, sort_keys=True),
            ),
        )

    def _set_stage(self, db: sqlite3.Connection, mv: ModelVersion, stage: Stage) -> None:
        db.execute(
            "UPDATE versions SET stage = ? WHERE name = ? AND version = ?", (stage.value, mv.name, mv.version)
        )

    def promote(
        self,
        name: str,
        version: str,
        to: Stage,
        *,
        by: str | None = None,
        why: str = "",
        force: bool = False,
        gate: dict[str, Any] | None = None,
        accept_missed_target: str = "",
    ) -> ModelVersion:
        """Move ``name:version`` to staging or production (the old production is archived).

        Promotion to production over an existing production version needs a passed gate
        (``gate["passed"]``) or ``force`` with a reason; both are recorded in the event. A model
        whose card misses its calibration target reaches production only with
        ``accept_missed_target`` (the reason, recorded); ``force`` does not skip that.
        """
        mv = self.get(name, version)
        if to not in (Stage.STAGING, Stage.PRODUCTION):
            raise InputError(f"promote goes to staging or production, not {to}; use archive to retire")
        if mv.stage is to:
            raise InputError(f"{mv.ref} is already in {to}")
        if mv.stage is Stage.ARCHIVED and not force:
            raise InputError(f"{mv.ref} is archived; promote it again only with --force --reason")
        if force and not why.strip():
            raise InputError("--force needs a --reason saying why the gate is skipped (it is audited)")
        missed = mv.card.missed_target() if to is Stage.PRODUCTION else None
        if missed and not accept_missed_target.strip():
            raise ModelError(f"{missed}; promote it only with --accept-missed-target REASON")
        current = self.production(name)
        if to is Stage.PRODUCTION and current is not None and not force:
            if gate is None:
                raise InputError(
                    f"promoting {mv.ref} over {current.ref} needs the promotion gate; run it or --force"
                )
            if not gate.get("passed"):
                summary = gate.get("summary", "see the gate report")
                raise ModelError(f"promotion gate refused {mv.ref} against {current.ref}: {summary}")
        who = current_user(by)
        detail: dict[str, Any] = {"forced": force}
        if missed:
            detail["missed_target"] = {"why": missed, "accepted": accept_missed_target.strip()}
        if gate is not None:
            detail["gate"] = gate
        with self._db() as db:
            if to is Stage.PRODUCTION and current is not None:
                self._set_stage(db, current, Stage.ARCHIVED)
                self._log(
                    db,
                    name,
                    current.version,
                    "replaced",
                    Stage.PRODUCTION,
                    Stage.ARCHIVED,
                    who,
                    why,
                    {"by_version": mv.version},
                )
            self._set_stage(db, mv, to)
            self._log(db, name, mv.version, "promote", mv.stage, to, who, why, detail)
        self._point_stages(name)
        return self.get(name, version)

    def production_stack(self, name: str) -> list[str]:
        """Versions that were production, in order, with rolled-back ones popped: [-1] is current."""
        stack: list[str] = []
        for ev in self.history(name):
            if ev.action == "promote" and ev.to_stage == Stage.PRODUCTION.value:
                stack = [v for v in stack if v != ev.version] + [ev.version]
            elif ev.action == "rollback" and stack and stack[-1] == ev.detail.get("from_version"):
                stack.pop()
        return stack

    def rollback(self, name: str, *, by: str | None = None, why: str = "") -> ModelVersion:
        """Return production to the version that was production before the current one."""
        current = self.production(name)
        if current is None:
            raise InputError(f"{name} has no production version to roll back")
        stack = [v for v in self.production_stack(name) if self._row(name, v) is not None]
        previous = stack[-2] if len(stack) >= 2 and stack[-1] == current.version else None
        if previous is None:
            raise InputError(
                f"{current.ref} is the first production version of {name}; nothing to roll back to"
            )
        target = self.get(name, previous)
        who = current_user(by)
        with self._db() as db:
            self._set_stage(db, current, Stage.ARCHIVED)
            self._set_stage(db, target, Stage.PRODUCTION)
            self._log(
                db,
                name,
                target.version,
                "rollback",
                target.stage,
                Stage.PRODUCTION,
                who,
                why,
                {"from_version": current.version},
            )
        self._point_stages(name)
        return self.get(name, previous)

    def archive(self, name: str, version: str, *, by: str | None = None, why: str = "") -> ModelVersion:
        """Retire a version; production cannot be archived (roll back or promote another first)."""
        mv = self.get(name, version)
        if mv.stage is Stage.PRODUCTION:
            raise InputError(
                f"{mv.ref} is in production; roll back or promote another version before archiving it"
            )
        if mv.stage is Stage.ARCHIVED:
            raise InputError(f"{mv.ref} is already archived")
        who = current_user(by)
        with self._db() as db:
            self._set_stage(db, mv, Stage.ARCHIVED)
            self._log(db, name, version, "archive", mv.stage, Stage.ARCHIVED, who, why, {})
        self._point_stages(name)
        return self.get(name, version)

    def record(
        self,
        name: str,
        version: str,
        action: str,
        *,
        by: str | None = None,
        why: str = "",
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Log an event that changes no stage (a gate run, a rollout publish)."""
        with self._db() as db:
            self._log(db, name, version, action, None, None, current_user(by), why, detail or {})

    # -- stations ----------------------------------------------------------------------------
    def follow(self, line: str, station: str, model: str, *, by: str | None = None) -> None:
        """``line/station`` runs the production version of ``model`` from now on."""
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO stations VALUES (?, ?, ?)", (line, station, model))
            self._log(db, model, "", "follow", None, None, current_user(by), f"{line}/{station}", {})

    def stations(self, model: str | None = None) -> list[StationFollow]:
        query = "SELECT * FROM stations" + (" WHERE model = ?" if model else "") + " ORDER BY line, station"
        with self._db() as db:
            rows = db.execute(query, (model,) if model else ()).fetchall()
        return [StationFollow(r["line"], r["station"], r["model"]) for r in rows]
