"""The one family of errors lineguard raises on purpose.

Callers catch a branch, not a message. The CLI turns any ``LineguardError`` into one line on
stderr and exit code 2, so each one must say what failed, the value seen and the fix::

    LineguardError                  anything lineguard reports to a person
    ├── ConfigError                 a config file or option is wrong (key path in the message)
    ├── InputError                  a file, image, payload or argument cannot be used
    │   └── DatasetError            a dataset folder is malformed (missing image, bad box, ...)
    ├── MissingDependencyError      an optional extra is not installed (names the pip command)
    ├── ModelError                  a model file or card is unusable (bad sha256, shape, classes)
    └── DeliveryError               an output (MQTT, Label Studio, registry) refused or is down
"""

from __future__ import annotations

from pydantic import ValidationError

__all__ = [
    "ConfigError",
    "DatasetError",
    "DeliveryError",
    "InputError",
    "LineguardError",
    "MissingDependencyError",
    "ModelError",
    "validation_message",
]


class LineguardError(Exception):
    """Base of every error meant for a person rather than a stack trace."""


class ConfigError(LineguardError):
    """A configuration value is missing, misspelled or of the wrong type."""


class InputError(LineguardError):
    """An input (file, image, payload, argument) cannot be used as given."""


class DatasetError(InputError):
    """A dataset on disk does not have the layout or content it claims."""


class MissingDependencyError(LineguardError):
    """An optional extra is needed; the message names the ``pip install`` that brings it."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"the Python package '{module}' is not installed; "
            f"install it with: pip install 'lineguard[{extra}]'"
        )
        self.module = module
        self.extra = extra


class ModelError(LineguardError):
    """A model artifact or model card failed a check and must not be used."""


class DeliveryError(LineguardError):
    """An output could not take what was sent; the data stays queued locally."""


def validation_message(exc: ValidationError, limit: int = 3) -> str:
    """Pydantic's errors as one line: ``key.path: problem (got VALUE)``, joined by ``; ``."""
    parts = []
    for err in exc.errors()[:limit]:
        where = ".".join(str(p) for p in err["loc"]) or "<root>"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (misspelled?)"
        elif "input" in err and not isinstance(err["input"], dict | list):
            msg = f"{msg} (got {_excerpt(err['input'])})"
        parts.append(f"{where}: {msg}")
    more = len(exc.errors()) - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _excerpt(value: object, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters: an error names the bad value, never echoes a megabyte."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}… ({len(text)} chars)"
