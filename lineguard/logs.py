"""One logging style for every part: named events with fields, one JSON object per line.

A log line is read by people tailing a station and by log shippers, so each record is an event
name plus fields (``camera_dropped camera=rtsp://… retry_in_s=0.5``) rather than a sentence with
values spliced in: the text stays greppable and ``JsonLogFormatter`` puts the same fields at the
top level of the JSON object. Each module binds its logger once (``event = Events(__name__)``).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Final

__all__ = ["QUIET_LIBRARIES", "Events", "JsonLogFormatter", "setup_json_logging"]


class Events:
    """Structured events on one logger: ``event(logging.WARNING, "name", key=value, ...)``."""

    def __init__(self, logger: str) -> None:
        self.logger = logging.getLogger(logger)

    def __call__(self, level: int, name: str, /, *, exc_info: bool = False, **fields: Any) -> None:
        """Log ``name k=v ...``; the JSON formatter also gets ``fields``; ``exc_info`` adds the traceback."""
        if not self.logger.isEnabledFor(level):
            return
        text = " ".join(f"{k}={v}" for k, v in fields.items())
        self.logger.log(
            level, f"{name} {text}".strip(), exc_info=exc_info, extra={"event": name, "fields": fields}
        )


class JsonLogFormatter(logging.Formatter):
    """One JSON object per log record; structured events add their fields at the top level."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        name = getattr(record, "event", None)
        fields = getattr(record, "fields", None)
        if isinstance(name, str) and isinstance(fields, dict):
            out["event"] = name
            out.update({k: v for k, v in fields.items() if k not in out})
        else:
            out["msg"] = record.getMessage()
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


# Libraries that log every request at INFO: a station uploading to Label Studio wrote 121 httpx
# lines in 141. They speak up from WARNING unless the operator asks for DEBUG.
QUIET_LIBRARIES: Final = (
    "httpx",
    "httpcore",
    "urllib3",
    "requests",
    "label_studio_sdk",
    "uvicorn",
    "multipart",
)


def setup_json_logging(level: str) -> None:
    """Every record of the process as one JSON line on stderr, from ``level`` up (libraries: WARNING)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    quiet = logging.NOTSET if root.level <= logging.DEBUG else logging.WARNING
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(quiet)
