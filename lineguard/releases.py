"""Signed releases: the registry's Ed25519 key vouches for the exact model a station may run.

The MQTT ``…/model`` topic is not proof of anything (any broker credential could publish there),
so the registry signs a ``Release`` (name, version, stage, ONNX sha256, sha256 of the card's exact
bytes, time, key id) when it rolls a version out, and a station verifies it against the public
keys pinned in its config before it trusts a byte it fetched. Two pinned keys allow a rotation
(see deploy/README.md). Key files are PEM: the private key is a secret (read by ``read_secret``,
written 0600), the public key is not.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from lineguard.errors import ConfigError, ModelError
from lineguard.messages import DesiredModel, Release
from lineguard.secrets import read_secret

__all__ = [
    "PRIVATE_KEY_FILE",
    "PUBLIC_KEY_FILE",
    "Signer",
    "generate_keypair",
    "key_id",
    "load_public_keys",
    "verify_release",
]

PRIVATE_KEY_FILE: Final = "registry-signing.key"
PUBLIC_KEY_FILE: Final = "registry-signing.pub"
_MAX_KEY_FILE = 4096


def key_id(public: Ed25519PublicKey) -> str:
    """A short, stable name of a public key (first 16 hex of the sha256 of its raw bytes)."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair(out: Path) -> tuple[Path, Path]:
    """Write a new private key (mode 0600) and its public key into ``out``; never overwrite."""
    out.mkdir(parents=True, exist_ok=True)
    private_path, public_path = out / PRIVATE_KEY_FILE, out / PUBLIC_KEY_FILE
    for path in (private_path, public_path):
        if path.exists():
            raise ConfigError(f"{path} exists already; move it aside or choose another --out folder")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private_path, public_path


@dataclass(frozen=True)
class Signer:
    """The registry's signing key and its id; ``release`` signs one rollout."""

    key: Ed25519PrivateKey
    key_id: str

    @classmethod
    def from_file(cls, path: Path, what: str = "registry.signing_key") -> Signer:
        text = read_secret(path, what)
        try:
            key = serialization.load_pem_private_key(text.encode(), password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"{what} {path} is not a PEM private key; make one with 'lineguard registry keygen'"
            ) from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(
                f"{what} {path} is not an Ed25519 key; make one with 'lineguard registry keygen'"
            )
        return cls(key, key_id(key.public_key()))

    def release(
        self, *, name: str, version: str, stage: Literal["staging", "production"], sha256: str, card: bytes
    ) -> tuple[Release, str]:
        """The release record for these exact card bytes and ONNX sha256, and its signature (base64)."""
        record = Release(
            name=name,
            version=version,
            stage=stage,
            sha256=sha256,
            card_sha256=hashlib.sha256(card).hexdigest(),
            signed_at=datetime.now(UTC).replace(microsecond=0),
            key_id=self.key_id,
        )
        return record, base64.b64encode(self.key.sign(record.signed_bytes())).decode()


def load_public_keys(paths: Sequence[Path]) -> dict[str, Ed25519PublicKey]:
    """The pinned keys by key id; an unreadable or wrong file is a one-line ``ConfigError``."""
    keys: dict[str, Ed25519PublicKey] = {}
    for path in paths:
        try:
            with path.open("rb") as fh:
                raw = fh.read(_MAX_KEY_FILE + 1)
        except OSError as exc:
            raise ConfigError(
                f"registry.public_keys: {path} cannot be read ({exc.strerror or exc}); copy the registry's "
                f"{PUBLIC_KEY_FILE} there or fix the path"
            ) from exc
        try:
            key = serialization.load_pem_public_key(raw[:_MAX_KEY_FILE])
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"registry.public_keys: {path} is not a PEM public key; copy the registry's {PUBLIC_KEY_FILE}"
            ) from exc
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(f"registry.public_keys: {path} is not an Ed25519 key; pin the registry's key")
        keys[key_id(key)] = key
    return keys


def verify_release(desired: DesiredModel, keys: dict[str, Ed25519PublicKey]) -> Release:
    """The release of ``desired`` once its signature verifies with a pinned key and it names this model.

    Raises ``ModelError`` for an unsigned message, an unknown key, a bad signature or a release of
    another model; the caller still compares the fetched bytes with ``card_sha256`` and ``sha256``.
    """
    ref = f"{desired.name}:{desired.version}"
    release, signature = desired.release, desired.signature
    if release is None or signature is None:
        raise ModelError(f"refused model {ref}: the message is not signed; the station pins registry keys")
    key = keys.get(release.key_id)
    if key is None:
        raise ModelError(
            f"refused model {ref}: signed by key {release.key_id}, which is not among the pinned "
            f"registry.public_keys ({', '.join(sorted(keys))})"
        )
    try:
        key.verify(base64.b64decode(signature, validate=True), release.signed_bytes())
    except (InvalidSignature, binascii.Error, ValueError) as exc:
        raise ModelError(
            f"refused model {ref}: the release signature does not verify with key {release.key_id}"
        ) from exc
    if (release.name, release.version, release.sha256) != (desired.name, desired.version, desired.sha256):
        raise ModelError(
            f"refused model {ref}: the signed release is for {release.name}:{release.version}, "
            "not for the model the message names"
        )
    if release.stage != "production":
        raise ModelError(f"refused model {ref}: the signed release is for {release.stage}, not production")
    return release
