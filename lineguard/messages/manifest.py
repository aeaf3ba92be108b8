"""The dataset manifest (``lineguard.dataset_manifest/1``): what exactly a dataset version holds.

A dataset version is immutable; its manifest lists the sha256 of every file, the class list and
the split, so a model card can name the data it was trained on by one hash and anyone can check
that the folder on disk is still that data.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lineguard.errors import DatasetError, validation_message
from lineguard.messages.model_card import sha256_file

__all__ = ["MANIFEST_NAME", "MANIFEST_SCHEMA", "DatasetManifest", "ManifestFile"]

MANIFEST_SCHEMA: Final = "lineguard.dataset_manifest/1"
MANIFEST_NAME = "manifest.json"


class ManifestFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(description="Relative to the dataset root, POSIX separators.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    split: str = Field(default="", description="train, val, test, or empty for shared files.")


class DatasetManifest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: Literal["lineguard.dataset_manifest/1"] = Field(default=MANIFEST_SCHEMA, alias="schema")
    name: str = Field(min_length=1)
    classes: list[str] = Field(min_length=1)
    source: str = Field(description="Where the data came from (path, generator + seed, LS project).")
    parent: str | None = Field(default=None, description="Hash of the version this one extends.")
    created_at: datetime
    files: list[ManifestFile]
    counts: dict[str, dict[str, int]] = Field(
        default={}, description="Per split: images, boxes per class, defect-free images."
    )
    skipped: dict[str, int] = Field(default={}, description="Inputs left out, by reason.")
    provenance: dict[str, list[str]] = Field(
        default={}, description="Extra ids per image stem, e.g. Label Studio task ids."
    )

    @property
    def content_hash(self) -> str:
        """Hash of the data (files + classes), not of timestamps: the dataset's identity."""
        body = json.dumps(
            {"classes": self.classes, "files": [f.model_dump() for f in self.files]},
            sort_keys=True,
        )
        return hashlib.sha256(body.encode()).hexdigest()

    @classmethod
    def scan(
        cls,
        root: Path,
        *,
        name: str,
        classes: list[str],
        source: str,
        created_at: datetime,
        parent: str | None = None,
    ) -> DatasetManifest:
        """Hash every file under ``root`` (except the manifest itself), sorted for determinism."""
        files = []
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            rel = path.relative_to(root).as_posix()
            if rel == MANIFEST_NAME:
                continue
            parts = rel.split("/")
            split = parts[1] if len(parts) > 2 and parts[0] in {"images", "labels"} else ""
            files.append(ManifestFile(path=rel, sha256=sha256_file(path), split=split))
        return cls(
            name=name,
            classes=classes,
            source=source,
            parent=parent,
            created_at=created_at,
            files=files,
        )

    def save(self, root: Path) -> Path:
        path = root / MANIFEST_NAME
        path.write_text(self.model_dump_json(by_alias=True, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, root: Path) -> DatasetManifest:
        path = root / MANIFEST_NAME
        try:
            return cls.model_validate_json(path.read_bytes())
        except FileNotFoundError as exc:
            raise DatasetError(
                f"{root} has no {MANIFEST_NAME}; create a dataset version with "
                "'lineguard data import' or 'lineguard data synth'"
            ) from exc
        except ValidationError as exc:
            raise DatasetError(f"{path} is invalid: {validation_message(exc)}") from exc

    def verify(self, root: Path) -> list[str]:
        """Paths whose content no longer matches; empty when the folder is this version."""
        changed = []
        for entry in self.files:
            path = root / entry.path
            if not path.is_file() or sha256_file(path) != entry.sha256:
                changed.append(entry.path)
        return changed
