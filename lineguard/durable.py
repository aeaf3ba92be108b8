"""One way to open the SQLite files that queue work durably (verdict outbox, review queue).

Both queues are the one copy of what they hold until it is handed on, so they open alike: WAL
journal (readers never block the writer), a busy timeout instead of an instant "database is
locked", and a ``quick_check`` at open. A torn or overwritten file then stops the station with
one line naming the file and the fix, not a traceback at the first write. ``synchronous`` is the
one setting that differs: the review queue lets SQLite fsync each commit (``FULL``); the verdict
outbox fsyncs on the delivery thread itself (``NORMAL`` plus ``Outbox.sync``), off the inspection
path.
"""

from __future__ import annotations

import fcntl
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, TextIO

from lineguard.errors import ConfigError, InputError

__all__ = ["BUSY_TIMEOUT_S", "corrupt_error", "exclusive_lock", "open_durable", "quarantine"]

BUSY_TIMEOUT_S = 5.0  # how long a write waits for another connection's lock before failing

Synchronous = Literal["NORMAL", "FULL"]


def corrupt_error(what: str, path: Path, exc: sqlite3.DatabaseError, fix: str | None = None) -> InputError:
    """The one-line error for a queue file SQLite cannot read, naming the fix (``fix`` if given)."""
    fix = fix or (
        f"stop the station, move it and any {path.name}-wal and {path.name}-shm beside it aside "
        "(keep them to inspect), and start again with an empty one"
    )
    return InputError(f"{what} {path} is damaged ({exc}); {fix}")


def quarantine(path: Path, *, now: datetime | None = None) -> list[tuple[Path, Path]]:
    """Move ``path`` and its ``-wal`` and ``-shm`` aside under one timestamped name; return the moves.

    The three keep their pairing (``X.damaged-<UTC time>``, ``…-wal``, ``…-shm``), so SQLite can
    still open the set together to recover what it held. Never overwrites: an existing target
    name is an error.
    """
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    moves = [
        (path.with_name(path.name + suffix), target.with_name(target.name + suffix))
        for suffix in ("", "-wal", "-shm")
        if path.with_name(path.name + suffix).exists()
    ]
    for _, dst in moves:
        if dst.exists():
            raise InputError(f"{dst} exists already; wait a second and try again")
    for src, dst in moves:
        src.rename(dst)
    return moves


def open_durable(
    path: Path,
    *,
    what: str,
    synchronous: Synchronous = "FULL",
    fix: str | None = None,
    check: Callable[[sqlite3.Connection], None] | None = None,
) -> sqlite3.Connection:
    """``path`` opened for sharing between threads in autocommit mode, checked and set up.

    ``what`` names the queue in errors ("verdict outbox"), ``fix`` what to do about a damaged
    file; ``check`` (raising ``sqlite3.DatabaseError``) tells an existing file of another
    program, before anything is written to it. Raises ``InputError`` for a damaged file and
    ``ConfigError`` where SQLite cannot keep a WAL journal (a network share).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        _check_read_only(path, what, fix, check)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_S)
    try:
        _set_up(db, path, what, synchronous)
    except sqlite3.DatabaseError as exc:
        db.close()
        if _damaged(exc):
            raise corrupt_error(what, path, exc, fix) from exc
        raise InputError(
            f"cannot open {what} {path}: {exc}; check the disk under it (free space, permissions)"
        ) from exc
    except BaseException:
        db.close()
        raise
    return db


def _damaged(exc: sqlite3.DatabaseError) -> bool:
    """The file's content is wrong (not the disk's space or a lock)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB) or str(exc).startswith("quick_check")


def _check_read_only(
    path: Path, what: str, fix: str | None, check: Callable[[sqlite3.Connection], None] | None
) -> None:
    """Check an existing file through a read-only connection first.

    A read-write connection to a damaged file may checkpoint and delete its ``-wal`` on close,
    and with it what could still be recovered; a read-only one never writes.
    """
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
    except sqlite3.Error:
        return  # the read-write open below reports it
    try:
        _quick_check(db)
        if check is not None:
            try:
                check(db)
            except sqlite3.DatabaseError as exc:
                raise sqlite3.DatabaseError(f"quick_check: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        if _damaged(exc):
            raise corrupt_error(what, path, exc, fix) from exc
    finally:
        db.close()


def _quick_check(db: sqlite3.Connection) -> None:
    problems = [str(row[0]) for row in db.execute("PRAGMA quick_check(3)").fetchall()]
    if problems != ["ok"]:
        raise sqlite3.DatabaseError("quick_check: " + "; ".join(problems))


def _set_up(db: sqlite3.Connection, path: Path, what: str, synchronous: Synchronous) -> None:
    db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise ConfigError(
            f"{what} {path}: SQLite cannot use its WAL journal there (got {mode!r}); "
            "put station.data_dir on a local disk, not a network share"
        )
    db.execute(f"PRAGMA synchronous={synchronous}")
    _quick_check(db)


def exclusive_lock(path: Path, busy: str) -> TextIO:
    """Hold ``path`` (a lock file) until the returned handle is closed; ``busy`` is the error if taken.

    One owner per folder of queued frames: a second process would delete or evict the first
    one's fresh files. The lock is an ``flock``, released by the kernel if the process dies.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.close()
        raise InputError(busy) from exc
    return handle
