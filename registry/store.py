"""The model store: immutable versions, their stages and audit log, and the folder stations fetch from.

A model reaches the line only through here, so every version is checked on the way in (the ONNX
file must hash to its card's sha256) and can never change afterwards: adding ``name:version``
again with other bytes is refused. The one change a version's card may see is the gate withdrawing
a variant's certification (``decertify``, audited), before the card is ever signed for production.
The records (versions, stages, events, followers) live in a
``RegistryBackend``: the embedded file back-end (SQLite in the registry folder, the default) or an
MLflow Model Registry (``registry.uri``); the rules below are the same for both. Whatever the
back-end, the registry folder holds what stations fetch: ONNX files once under ``blobs/<sha256>``
however many versions share them, each card under ``cards/<name>/<version>.json``, and
``models/<name>/<version>/`` with stage links. Stages move ``candidate -> staging -> production
-> archived``; production history is replayed from the audit log, so ``rollback`` is one call that
needs no bookkeeping of its own. Every change writes an event (who, when, why) that ``history``
shows.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lineguard.config import RegistryConfig
from lineguard.errors import ConfigError, InputError, ModelError
from lineguard.messages import ModelCard, sha256_file
from lineguard.model_refs import model_folder
from lineguard.registry.backend import MLFLOW_SCHEMES, FileBackend, RegistryBackend, card_location
from lineguard.registry.records import Event, ModelVersion, Stage, StationFollow, current_user

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


def open_backend(uri: str, root: Path, prefix: str = "") -> RegistryBackend:
    """``""`` -> the file registry in ``root``; ``mlflow+http(s)://host[:port]`` -> that MLflow
    (registered-model names ``prefix`` + name)."""
    if not uri:
        return FileBackend(root)
    if uri.startswith(MLFLOW_SCHEMES):
        from lineguard.registry.mlflow_backend import MlflowBackend  # the mlflow client, when asked for

        return MlflowBackend(uri.removeprefix("mlflow+"), root, prefix)
    raise ConfigError(
        "registry.uri must be empty (the file registry in registry.root) or "
        "mlflow+http://HOST:PORT / mlflow+https://HOST (an MLflow tracking server)"
    )


def _card_json(card: ModelCard) -> str:
    """The exact text of a card file the registry stores, serves and signs."""
    return card.model_dump_json(by_alias=True, indent=2) + "\n"


def _files_of(mv: ModelVersion) -> dict[str, str]:
    """File name -> sha256 of every file of ``mv``: ``model.onnx`` and the variant files its card names."""
    return {ONNX_FILE: mv.sha256} | {v.file: v.sha256 for v in mv.card.variants if v.file}


class Registry:
    """The registry whose records are in ``backend`` (default: the file back-end in ``root``).

    ``root`` is the local artifact folder: ``blobs/``, ``cards/`` and ``models/``.
    ``models/<name>/<version>/`` is each version as a loadable folder and ``models/<name>/<stage>``
    links to the version in that stage, so ``name@production`` works wherever a path does
    (``lineguard.model_refs``).
    """

    def __init__(self, root: Path, backend: RegistryBackend | None = None) -> None:
        self.root = Path(root)
        self.blobs = self.root / "blobs"
        self.cards = self.root / "cards"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.cards.mkdir(parents=True, exist_ok=True)
        self.backend: RegistryBackend = backend if backend is not None else FileBackend(self.root)

    @classmethod
    def from_config(cls, cfg: RegistryConfig) -> Registry:
        """The registry ``registry.uri`` names (empty: the file registry in ``registry.root``)."""
        return cls(cfg.root, open_backend(cfg.uri, Path(cfg.root), cfg.mlflow_prefix))

    # -- paths -------------------------------------------------------------------------------
    def blob_path(self, sha256: str) -> Path:
        return self.blobs / sha256

    def card_path(self, name: str, version: str) -> Path:
        return card_location(self.root, name, version)

    def local_file(self, mv: ModelVersion, file: str, digest: str) -> Path:
        """The blob of ``mv``'s ``file`` in the local folder, fetched from the back-end when missing."""
        blob = self.blob_path(digest)
        if not blob.exists():
            tmp = blob.with_name(f".{digest}.tmp")
            self.backend.download(mv, file, tmp)
            if sha256_file(tmp) != digest:
                tmp.unlink(missing_ok=True)
                raise ModelError(
                    f"{mv.ref} {file} from {self.backend.where} does not hash to its card's sha256"
                )
            tmp.replace(blob)
        return blob

    def artifact(self, mv: ModelVersion) -> Path:
        """``mv``'s ONNX file in the local folder (fetched from the back-end when it is not there)."""
        return self.local_file(mv, ONNX_FILE, mv.sha256)

    def artifact_by_sha(self, sha256: str) -> Path | None:
        """The local blob with this digest (a model or variant file), fetched if a version has it."""
        blob = self.blob_path(sha256)
        if blob.exists():
            return blob
        for mv in self.versions():
            file = next((f for f, d in _files_of(mv).items() if d == sha256), None)
            if file is not None:
                return self.local_file(mv, file, sha256)
        return None

    def model_dir(self, name: str, version: str) -> Path:
        """``models/<name>/<version>/`` with every file of the version present (fetched if need be)."""
        return self._materialise(name, version)

    def _materialise(self, name: str, version: str) -> Path:
        """``models/<name>/<version>/``: the blobs (hard links) and card as a loadable model folder.

        The variant files the card names sit beside ``model.onnx``, so ``name@production`` runs them.
        """
        folder = model_folder(self.root, name, version)
        folder.mkdir(parents=True, exist_ok=True)
        mv = self.get(name, version)
        for file, digest in _files_of(mv).items():
            if not (folder / file).exists():
                self._link_blob(self.local_file(mv, file, digest), folder / file)
        shutil.copyfile(self.card_path(name, version), folder / CARD_FILE)
        return folder

    @staticmethod
    def _link_blob(blob: Path, dest: Path) -> None:
        tmp = dest.with_name(f".{dest.name}.tmp")
        tmp.unlink(missing_ok=True)
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

    @staticmethod
    def _event(
        mv: ModelVersion | tuple[str, str],
        action: str,
        from_stage: Stage | None,
        to_stage: Stage | None,
        who: str,
        why: str,
        detail: dict[str, Any] | None = None,
    ) -> Event:
        name, version = (mv.name, mv.version) if isinstance(mv, ModelVersion) else mv
        return Event(
            id=0,
            name=name,
            version=version,
            action=action,
            from_stage=from_stage.value if from_stage else None,
            to_stage=to_stage.value if to_stage else None,
            who=who,
            at=datetime.now(UTC),
            why=why,
            detail=detail or {},
        )

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
        card_json = _card_json(card)
        existing = self.backend.version(card.name, card.version)
        if existing is not None:
            # the same export, once the certifications the gate withdrew are withdrawn from it too
            withdrawn = {v.name: v.reason for v in existing.card.variants if not v.certified}
            same_card = _card_json(existing.card) == _card_json(card.decertified(withdrawn))
            if existing.sha256 == digest and same_card:
                return existing
            what = "ONNX bytes" if existing.sha256 != digest else "model card"
            raise ModelError(
                f"{card.ref} is already in the registry with another {what}; versions are immutable: "
                "give the new model another version"
            )
        files = {ONNX_FILE: digest} | _variant_files(folder, card)
        self._store_blob(onnx, digest)
        for file, file_digest in files.items():
            if file != ONNX_FILE:
                self._store_blob(folder / file, file_digest)
        card_file = self.card_path(card.name, card.version)
        card_file.parent.mkdir(parents=True, exist_ok=True)
        card_file.write_text(card_json)
        who = current_user(by)
        mv = ModelVersion(
            name=card.name,
            version=card.version,
            sha256=digest,
            stage=Stage.CANDIDATE,
            card=card,
            parent=card.parent,
            dataset_hash=card.dataset_hash,
            training_run=card.training_run,
            added_at=datetime.now(UTC),
            added_by=who,
        )
        event = self._event(mv, "add", None, Stage.CANDIDATE, who, why, {"sha256": digest})
        self.backend.insert(mv, {f: self.blob_path(d) for f, d in files.items()}, card_file, event)
        self._materialise(card.name, card.version)
        return self.get(card.name, card.version)

    # -- reading -----------------------------------------------------------------------------
    def versions(self, name: str | None = None) -> list[ModelVersion]:
        """All versions (of ``name``), oldest first."""
        return self.backend.versions(name)

    def get(self, name: str, version: str | None = None) -> ModelVersion:
        """``name:version``; without a version the production one, else the newest."""
        if version is not None:
            found_version = self.backend.version(name, version)
            if found_version is None:
                known = ", ".join(v.version for v in self.versions(name)) or "none"
                raise InputError(f"no model {name}:{version} in the registry; versions of {name}: {known}")
            return found_version
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
        return self.backend.history(name)

    # -- stage changes -----------------------------------------------------------------------
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
        stages: list[tuple[ModelVersion, Stage]] = []
        events: list[Event] = []
        if to is Stage.PRODUCTION and current is not None:
            stages.append((current, Stage.ARCHIVED))
            events.append(
                self._event(
                    current,
                    "replaced",
                    Stage.PRODUCTION,
                    Stage.ARCHIVED,
                    who,
                    why,
                    {"by_version": mv.version},
                )
            )
        stages.append((mv, to))
        events.append(self._event(mv, "promote", mv.stage, to, who, why, detail))
        self.backend.change(stages, events)
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
        known = {v.version for v in self.versions(name)}
        stack = [v for v in self.production_stack(name) if v in known]
        previous = stack[-2] if len(stack) >= 2 and stack[-1] == current.version else None
        if previous is None:
            raise InputError(
                f"{current.ref} is the first production version of {name}; nothing to roll back to"
            )
        target = self.get(name, previous)
        who = current_user(by)
        event = self._event(
            target, "rollback", target.stage, Stage.PRODUCTION, who, why, {"from_version": current.version}
        )
        self.backend.change([(current, Stage.ARCHIVED), (target, Stage.PRODUCTION)], [event])
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
        event = self._event(mv, "archive", mv.stage, Stage.ARCHIVED, current_user(by), why)
        self.backend.change([(mv, Stage.ARCHIVED)], [event])
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
        """Log an event that changes no stage (a gate run, a rollout publish with its signed release)."""
        self.backend.change(
            [], [self._event((name, version), action, None, None, current_user(by), why, detail)]
        )

    def decertify(
        self,
        name: str,
        version: str,
        reasons: Mapping[str, str],
        *,
        by: str | None = None,
        why: str = "",
        detail: dict[str, Any] | None = None,
    ) -> ModelVersion:
        """Withdraw the certification of the variants ``reasons`` names (variant -> one-line reason).

        The gate calls this when a variant fails its re-check on the frozen set: the version keeps
        its files and stays promotable on its fp32 results, but the card it serves from now on
        (stored by the back-end, in the folder, and signed as is by the next production release)
        says ``certified: false``, so a station's ``precision: auto`` runs fp32 instead. Audited as
        a ``decertify`` event. A production version's card is refused: stations hold a release
        signed over its bytes.
        """
        mv = self.get(name, version)
        if mv.stage is Stage.PRODUCTION:
            raise InputError(
                f"{mv.ref} is in production and its card is signed as served; "
                "register a new version without the variant instead"
            )
        unknown = sorted(set(reasons) - {v.name for v in mv.card.variants})
        if unknown:
            listed = ", ".join(v.name for v in mv.card.variants) or "none"
            raise InputError(f"{mv.ref} lists no variant {', '.join(unknown)}; its variants: {listed}")
        card_file = self.card_path(name, version)
        tmp = card_file.with_name(f".{card_file.name}.tmp")  # in place once the back-end has it
        tmp.write_text(_card_json(mv.card.decertified(reasons)))
        event = self._event(
            mv, "decertify", None, None, current_user(by), why, {"variants": dict(reasons), **(detail or {})}
        )
        try:
            self.backend.replace_card(mv, tmp, event)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(card_file)
        self._materialise(name, version)
        return self.get(name, version)

    def attach(self, mv: ModelVersion, kind: str, files: Sequence[Path]) -> None:
        """Keep report files (``kind``: ``gate``) with ``mv`` where the back-end keeps artifacts."""
        self.backend.attach(mv, kind, files)

    # -- stations ----------------------------------------------------------------------------
    def follow(self, line: str, station: str, model: str, *, by: str | None = None) -> None:
        """``line/station`` runs the production version of ``model`` from now on."""
        event = self._event((model, ""), "follow", None, None, current_user(by), f"{line}/{station}")
        self.backend.follow(StationFollow(line, station, model), event)

    def stations(self, model: str | None = None) -> list[StationFollow]:
        return self.backend.stations(model)
