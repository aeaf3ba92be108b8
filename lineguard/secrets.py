"""Read a secret (password, bearer token) from a file named in the config, by one rule set.

Every secret file in lineguard passes through ``read_secret``, so the broker password, the HTTP
API token, the registry token and the Label Studio token are read alike:

* at most ``MAX_SECRET_BYTES`` (4 KiB): a secret file is a line, not a log or a key store, and a
  bound keeps a wrong path (``/dev/zero``, a dataset) from being read into memory;
* UTF-8 text, since the secret goes into an MQTT CONNECT or an HTTP header;
* only trailing line breaks (``\\r`` / ``\\n``) are dropped: editors and ``echo`` add one, while a
  space may belong to a password, so surrounding blanks are kept rather than guessed away;
* an empty file (or one shorter than ``min_chars``) is refused, since an empty secret would
  silently switch authentication off or be rejected by the peer much later.

Group- or world-readable files are accepted, as they always were: stations run in containers
whose secrets are mounted with the platform's own modes. Errors are one line naming the config
key, the path and the fix; the secret itself never appears in a message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from lineguard.errors import ConfigError

__all__ = ["MAX_SECRET_BYTES", "read_secret"]

MAX_SECRET_BYTES: Final = 4096


def read_secret(path: Path, what: str, *, min_chars: int = 1) -> str:
    """The secret in ``path``; ``what`` is the config key (or option) that named the file."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_SECRET_BYTES + 1)
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{what} {path} cannot be read: file not found; create it holding the secret, or fix the path"
        ) from exc
    except OSError as exc:
        raise ConfigError(
            f"{what} {path} cannot be read: {exc.strerror or exc}; fix the path or its permissions"
        ) from exc
    if len(raw) > MAX_SECRET_BYTES:
        raise ConfigError(
            f"{what} {path} is over {MAX_SECRET_BYTES} bytes; point it at the file holding only the secret"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not UTF-8 text; write the secret as plain text") from exc
    secret = text.rstrip("\r\n")
    if not secret:
        raise ConfigError(f"{what} {path} is empty; write the secret into it")
    if len(secret) < min_chars:
        raise ConfigError(
            f"{what} {path} is shorter than {min_chars} characters; write a longer random secret into it"
        )
    return secret
