"""The verdict outbox: a verdict exists once its row commits here, and leaves only when acked.

SQLite in WAL mode, one row per unacknowledged verdict, plus the station's last ``seq`` so that
numbering survives restarts. The inspection loop calls ``add`` (one short transaction); a
delivery thread reads ``pending`` in ``seq`` order and calls ``ack`` when the broker (or the file
sink) has taken the message. Nothing is pruned: at ``max_pending`` the outbox refuses new verdicts
with ``OutboxFullError`` so the daemon can say so instead of dropping the oldest.

Durability without an fsync on the inspection path: a commit reaches the WAL in the OS page cache,
which survives the process dying, and ``sync`` fsyncs the WAL (``durable``). The delivery calls
``sync`` on its own thread right after it has handed the new rows on, so the fsync never delays
inspection nor competes with the publish. Only a power cut in between can lose a committed row,
and the broker may already hold its verdict; so that its ``seq`` is never handed out again,
numbers are reserved in durable blocks, and an outbox reopened after the host restarted without a
clean ``close`` goes on after the reserved block (a gap, never a reused ``seq``). Acks are not
fsynced: a lost ack only replays a verdict the consumer dedups.

Degraded, never dead: when the disk refuses a commit (full, I/O error) the unit still gets its
verdict. ``add`` then keeps it in memory, marked ``durable=false``, for the delivery to publish,
and the outbox says why in ``degraded`` until a retry (every ``retry_s``, from ``add`` and from
the delivery's ``sync``) commits again; the retry stores what is still unacknowledged and the
numbering, so nothing is lost from then on. Rows already committed stay on disk throughout. The
numbers handed out meanwhile are not in the database, so they are reserved in blocks in a small
file written in place (``<outbox>-seq``, its bytes allocated when the outbox opens, so writing it
needs no free space); the next start goes on after that block and a crash while degraded can skip
numbers but never repeat one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from lineguard.durable import corrupt_error, open_durable
from lineguard.errors import DeliveryError, InputError
from lineguard.logs import Events
from lineguard.messages import Verdict

__all__ = [
    "OUTBOX_FILE",
    "Outbox",
    "OutboxFullError",
    "PendingVerdict",
    "SeqMarker",
    "check_outbox",
    "storage_fault",
]

event = Events(__name__)

OUTBOX_FILE = "outbox.sqlite"  # in station.data_dir
SEQ_BLOCK = 1000  # seq numbers reserved per fsync; the most a power cut can skip
QUARANTINE_FIX = (
    "stop the station and move it aside with 'lineguard outbox quarantine --config <station.yaml>' "
    "(it keeps the file and its -wal and -shm to recover from)"
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS pending (
    seq INTEGER PRIMARY KEY,
    created REAL NOT NULL,
    payload TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('last_seq', 0), ('seq_reserved', 0), ('boot', 0);
"""
_COLUMNS = ("seq", "created", "payload", "attempts")
_META_KEYS = frozenset({"last_seq", "seq_reserved", "boot"})


def boot_id() -> int:
    """This boot of the host (Linux's boot id as a number); 0 where the system does not say.

    A process that dies leaves its page cache to the kernel; only a new boot can have lost it.
    """
    try:
        text = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return int(text.replace("-", "")[:15], 16)
    except (OSError, ValueError):
        return 0


def storage_fault(exc: BaseException) -> bool:
    """The disk, not the code, refused: full, I/O error, a lock held too long. Worth retrying."""
    if isinstance(exc, sqlite3.ProgrammingError | sqlite3.InterfaceError):
        return False
    return isinstance(exc, sqlite3.DatabaseError | OSError)


def _check_schema(db: sqlite3.Connection) -> None:
    """Raise ``sqlite3.DatabaseError`` when the file is another program's database, not an outbox."""
    if db.execute("SELECT COUNT(*) FROM sqlite_master WHERE type='table'").fetchone()[0] == 0:
        return  # a new, empty file
    columns = tuple(str(row[1]) for row in db.execute("PRAGMA table_info(pending)").fetchall())
    if columns != _COLUMNS:
        raise sqlite3.DatabaseError(f"not a verdict outbox: table 'pending' has columns {columns}")
    keys = {str(row[0]) for row in db.execute("SELECT key FROM meta").fetchall()}
    if not keys >= _META_KEYS:
        raise sqlite3.DatabaseError(f"not a verdict outbox: 'meta' lacks {sorted(_META_KEYS - keys)}")


def check_outbox(path: Path) -> str:
    """One line on a healthy outbox file; ``InputError`` (one line, with the fix) on a damaged one."""
    db = open_durable(
        path, what="verdict outbox", synchronous="NORMAL", fix=QUARANTINE_FIX, check=_check_schema
    )
    try:
        try:
            _check_schema(db)
            meta = {str(k): int(v) for k, v in db.execute("SELECT key, value FROM meta").fetchall()}
            count = int(db.execute("SELECT COUNT(*) FROM pending").fetchone()[0])
        except sqlite3.DatabaseError as exc:
            raise corrupt_error("verdict outbox", path, exc, QUARANTINE_FIX) from exc
    finally:
        db.close()
    return f"{count} unacknowledged verdicts, last seq {meta['last_seq']}"


class SeqMarker:
    """Two seq numbers kept beside the database, in a file rewritten in place.

    ``degraded``: the end of the block reserved while the database refused commits (numbers it
    does not hold). ``reserved``: a copy of the database's own reservation, so that an outbox file
    replaced by an empty one (quarantined, deleted) does not start numbering again from 1. Its
    bytes are allocated (and fsynced) when the outbox opens, so ``write`` needs no free space on
    a full disk: it overwrites them and fsyncs.
    """

    SIZE = 4096

    def __init__(self, path: Path) -> None:
        self.path = path
        self.degraded, self.reserved = self._read_or_create()

    @staticmethod
    def _encode(degraded: int, reserved: int) -> bytes:
        return f"{degraded:020d} {reserved:020d}\n".encode()

    def _read_or_create(self) -> tuple[int, int]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, self._encode(0, 0).ljust(self.SIZE, b"\0"))
                os.fsync(fd)
            finally:
                os.close(fd)
            return 0, 0
        fields = data[:42].decode("ascii", "replace").split()
        if len(data) != self.SIZE or len(fields) != 2 or not all(f.isdigit() for f in fields):
            raise InputError(
                f"seq marker {self.path} is damaged; stop the station and move it aside only if no "
                "verdict was published while the outbox was degraded (else seq numbers may repeat)"
            )
        return int(fields[0]), int(fields[1])

    def write(self, *, degraded: int | None = None, reserved: int | None = None) -> None:
        """Overwrite one or both numbers and fsync; raises ``OSError`` if the disk refuses."""
        new = (
            self.degraded if degraded is None else degraded,
            self.reserved if reserved is None else reserved,
        )
        fd = os.open(self.path, os.O_WRONLY)
        try:
            os.pwrite(fd, self._encode(*new), 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.degraded, self.reserved = new


class OutboxFullError(DeliveryError):
    """The outbox holds ``max_pending`` unacknowledged verdicts; nothing more is accepted."""


@dataclass(frozen=True)
class PendingVerdict:
    seq: int
    payload: str
    created: float
    attempts: int


class Outbox:
    """Durable, ordered queue of verdict payloads; safe to share between two threads."""

    def __init__(
        self,
        path: Path,
        *,
        max_pending: int = 100_000,
        durable: bool = True,
        boot: int | None = None,
        retry_s: float = 2.0,
    ) -> None:
        self.path = path
        self.max_pending = max_pending
        self.durable = durable
        self.retry_s = retry_s
        self._boot = boot_id() if boot is None else boot
        self._wal = path.with_name(path.name + "-wal")
        self._lock = threading.Lock()
        self._degraded: str | None = None
        self._degraded_since = 0.0
        self._retry_at = 0.0
        self._volatile: dict[int, PendingVerdict] = {}  # published but not stored (degraded), by seq
        self._acked_unsaved: set[int] = set()  # acked while the disk refused to delete them
        self._unprotected_logged = False
        # Commits are not fsynced by SQLite: ``sync`` does it, off the inspection path.
        self._db = open_durable(
            path, what="verdict outbox", synchronous="NORMAL", fix=QUARANTINE_FIX, check=_check_schema
        )
        try:
            self._set_up()
        except BaseException:
            self._db.close()
            raise
        self._committed = self._synced = self._handed
        self._closed = False

    def _set_up(self) -> None:
        try:
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:  # a full disk refuses even a no-op write: check what is there
            self._rollback()
            self._degrade(exc)
        try:
            _check_schema(self._db)
        except sqlite3.DatabaseError as exc:
            raise corrupt_error("verdict outbox", self.path, exc, QUARANTINE_FIX) from exc
        self._marker = self._open_marker()
        self._depth = self._count()
        self._handed = self._skip_seqs_that_may_have_been_used()

    def _open_marker(self) -> SeqMarker | None:
        try:
            return SeqMarker(self.path.with_name(self.path.name + "-seq"))
        except OSError as exc:
            event(logging.ERROR, "outbox_seq_marker_unavailable", path=self.path, error=exc)
            return None

    def _count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM pending").fetchone()[0])

    def _meta(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self._db.execute("SELECT key, value FROM meta").fetchall()}

    def _skip_seqs_that_may_have_been_used(self) -> int:
        """The last seq to count from: after any number a power cut or a degraded run may have used."""
        meta = self._meta()
        last, reserved = meta["last_seq"], meta["seq_reserved"]
        same_boot = self._boot != 0 and meta["boot"] == self._boot
        start = last
        if reserved > last and not same_boot:  # only the process died: the WAL holds every commit
            start = reserved
            why = (
                "not closed before the host restarted: a verdict numbered up to the reserved seq "
                "may have been published before the power cut"
            )
            event(logging.WARNING, "outbox_seq_skipped", path=self.path, why=why, next_seq=start + 1)
        degraded, mirrored = (
            (0, 0) if self._marker is None else (self._marker.degraded, self._marker.reserved)
        )
        for marked, why in (
            (
                degraded,
                "verdicts up to the marked seq may have been published while the outbox could not commit",
            ),
            (
                mirrored if mirrored > reserved else 0,
                "the outbox file was replaced (quarantined or deleted): verdicts up to the seq it had "
                "reserved may have been published",
            ),
        ):
            if marked > start:
                start = marked
                event(logging.WARNING, "outbox_seq_skipped", path=self.path, why=why, next_seq=start + 1)
        if start > last:
            try:
                self._db.execute("UPDATE meta SET value=? WHERE key='last_seq'", (start,))
                self._fsync_wal()
            except (sqlite3.DatabaseError, OSError) as exc:  # the marker still holds it; retried later
                self._degrade(exc)
        return start

    def _fsync_wal(self) -> None:
        """Make every commit so far survive a power cut (what ``synchronous=FULL`` does per commit)."""
        fd = os.open(self._wal, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _rollback(self) -> None:
        """Roll back if a transaction is still open: SQLite already ended it when a COMMIT failed."""
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")

    @property
    def last_seq(self) -> int:
        """The last seq handed out, stored or (while degraded) only published."""
        with self._lock:
            return self._handed

    @property
    def synced_seq(self) -> int:
        """Verdicts up to this ``seq`` survive a power cut (in durable mode)."""
        with self._lock:
            return self._synced

    @property
    def degraded(self) -> str | None:
        """Why verdicts are not being stored right now; None while every verdict commits."""
        with self._lock:
            return self._degraded

    @property
    def degraded_since(self) -> float:
        """Unix time the outbox last became degraded (0 when it never was)."""
        with self._lock:
            return self._degraded_since

    def _degrade(self, exc: BaseException) -> None:
        reason = f"cannot store verdicts in {self.path}: {exc}"
        if self._degraded is None:
            self._degraded_since = time.time()
            event(
                logging.ERROR,
                "outbox_degraded",
                path=self.path,
                error=str(exc),
                action=f"verdicts are published marked durable=false; retrying every {self.retry_s:g} s",
            )
        self._degraded = reason
        self._retry_at = time.monotonic() + self.retry_s

    def sync(self) -> bool:
        """Fsync what was committed since the last call (retrying a degraded outbox first).

        False (and logged) if the disk refused.
        """
        with self._lock:
            if self._degraded is not None and not self._try_recover():
                return False
            target = self._committed
            if target <= self._synced or not self.durable:
                return True
        try:
            self._fsync_wal()  # outside the lock: inspection goes on committing meanwhile
        except OSError as exc:  # the rows stay committed; the next call tries again
            event(logging.ERROR, "outbox_fsync_failed", path=self._wal, error=exc)
            return False
        with self._lock:
            self._synced = max(self._synced, target)
        return True

    def add(self, make: Callable[[int], Verdict], *, now: float | None = None) -> Verdict:
        """Number the next verdict and commit it in one transaction; return what was stored.

        When the disk refuses the commit the verdict comes back marked ``durable=false`` and is
        kept in memory until acknowledged; it never raises for a fault of the disk.
        """
        created = time.time() if now is None else now
        with self._lock:
            depth = self._depth + len(self._volatile)
            if depth >= self.max_pending:
                raise OutboxFullError(
                    f"verdict outbox {self.path} holds {depth} unacknowledged verdicts "
                    f"(max_pending={self.max_pending}); check the broker connection"
                )
            if self._degraded is None or self._try_recover():
                try:
                    return self._add_durable(make, created)
                except Exception as exc:
                    if not storage_fault(exc):
                        raise
                    self._degrade(exc)
            return self._add_volatile(make, created)

    def _add_durable(self, make: Callable[[int], Verdict], created: float) -> Verdict:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            meta = self._meta()
            last = meta["last_seq"]
            verdict = make(last + 1)
            if verdict.seq != last + 1:
                raise ValueError(f"verdict seq {verdict.seq} != next seq {last + 1}")
            self._db.execute(
                "INSERT INTO pending (seq, created, payload) VALUES (?, ?, ?)",
                (verdict.seq, created, verdict.to_json()),
            )
            self._db.execute("UPDATE meta SET value=? WHERE key='last_seq'", (verdict.seq,))
            reserve = verdict.seq > meta["seq_reserved"] or meta["boot"] != self._boot
            if reserve:
                self._db.executemany(
                    "UPDATE meta SET value=? WHERE key=?",
                    ((verdict.seq - 1 + SEQ_BLOCK, "seq_reserved"), (self._boot, "boot")),
                )
            self._db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        self._handed = self._committed = verdict.seq
        self._depth += 1
        if reserve:  # once per block: the reservation is on disk before its first seq is published
            try:
                self._fsync_wal()
                self._synced = verdict.seq
            except OSError as exc:  # stored, but the block is not reserved: number in memory until fixed
                self._degrade(exc)
                return verdict
            self._mirror_reservation(verdict.seq - 1 + SEQ_BLOCK)
        return verdict

    def _mirror_reservation(self, reserved: int) -> None:
        """Copy the database's reservation to the marker (after it, so the copy is never ahead)."""
        if self._marker is None:
            return
        try:
            self._marker.write(reserved=reserved)
        except OSError as exc:  # only a replaced outbox file would miss it
            event(logging.WARNING, "outbox_seq_marker_not_written", path=self._marker.path, error=str(exc))

    def _add_volatile(self, make: Callable[[int], Verdict], created: float) -> Verdict:
        seq = self._handed + 1
        self._reserve_in_marker(seq)
        verdict = make(seq)
        if verdict.seq != seq:
            raise ValueError(f"verdict seq {verdict.seq} != next seq {seq}")
        verdict = verdict.model_copy(update={"durable": False})
        self._volatile[seq] = PendingVerdict(seq, verdict.to_json(), created, 0)
        self._handed = seq
        return verdict

    def _reserve_in_marker(self, seq: int) -> None:
        """Before a number the database does not hold is published, reserve its block in the marker."""
        marker = self._marker
        if marker is not None and seq <= marker.degraded:
            return
        try:
            if marker is None:
                raise OSError("no seq marker file (it could not be created at start)")
            marker.write(degraded=seq - 1 + SEQ_BLOCK)
        except OSError as exc:
            if not self._unprotected_logged:
                self._unprotected_logged = True
                event(
                    logging.ERROR,
                    "outbox_seq_unprotected",
                    path=self.path,
                    error=str(exc),
                    risk="if the station stops before the outbox recovers, these seqs may be reused",
                )

    def _release_degraded_block(self) -> None:
        """The database holds the numbering again: the unused rest of the marker's block is free."""
        if self._marker is None or self._marker.degraded <= self._handed:
            return
        try:
            self._marker.write(degraded=self._handed)
        except OSError as exc:  # the next start skips the rest of the block: a gap, never a repeat
            event(logging.WARNING, "outbox_seq_marker_not_written", path=self._marker.path, error=str(exc))

    def _try_recover(self) -> bool:
        """Store the verdicts kept in memory and the numbering, if the disk takes them again now."""
        if time.monotonic() < self._retry_at:
            return False
        self._retry_at = time.monotonic() + self.retry_s
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT OR IGNORE INTO pending (seq, created, payload) VALUES (?, ?, ?)",
                [(r.seq, r.created, r.payload) for r in self._volatile.values()],
            )
            self._db.executemany("DELETE FROM pending WHERE seq = ?", [(s,) for s in self._acked_unsaved])
            self._db.execute("UPDATE meta SET value=MAX(value, ?) WHERE key='last_seq'", (self._handed,))
            self._db.execute("COMMIT")
            self._fsync_wal()
        except (sqlite3.DatabaseError, OSError) as exc:
            self._rollback()
            self._degraded = f"cannot store verdicts in {self.path}: {exc}"
            return False
        self._release_degraded_block()
        self._depth = self._count()
        stored = len(self._volatile)
        self._volatile.clear()
        self._acked_unsaved.clear()
        self._committed = self._synced = self._handed
        self._degraded = None
        self._unprotected_logged = False
        event(
            logging.INFO,
            "outbox_recovered",
            path=self.path,
            stored_from_memory=stored,
            degraded_s=round(time.time() - self._degraded_since, 1),
        )
        return True

    def pending(self, *, after_seq: int = 0, limit: int = 100) -> list[PendingVerdict]:
        """Unacknowledged verdicts with ``seq > after_seq``, oldest first (stored or only in memory)."""
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT seq, payload, created, attempts FROM pending WHERE seq > ? ORDER BY seq LIMIT ?",
                    (after_seq, limit + len(self._acked_unsaved)),
                ).fetchall()
            except sqlite3.DatabaseError as exc:  # an unreadable disk must not stop what memory holds
                self._degrade(exc)
                rows = []
            stored = [PendingVerdict(int(s), str(p), float(c), int(a)) for s, p, c, a in rows]
            stored = [r for r in stored if r.seq not in self._acked_unsaved]
            held = [r for r in self._volatile.values() if r.seq > after_seq][:limit]
        return sorted(stored + held, key=lambda r: r.seq)[:limit]

    def mark_attempt(self, seq: int) -> None:
        with self._lock, contextlib.suppress(sqlite3.DatabaseError):  # a count for people; not worth a fault
            self._db.execute("UPDATE pending SET attempts = attempts + 1 WHERE seq = ?", (seq,))

    def ack(self, seq: int) -> bool:
        """Remove an acknowledged verdict; False if it was already gone (a duplicate ack)."""
        return self.ack_many((seq,)) > 0

    def ack_many(self, seqs: Iterable[int]) -> int:
        """Remove acknowledged verdicts in one transaction; return how many were still pending.

        The commit is not fsynced: losing an ack to a power cut only means the verdict is sent again.
        When the disk refuses the delete, the rows are forgotten in memory and deleted on recovery.
        """
        batch = {int(seq) for seq in seqs}
        with self._lock:
            removed = sum(self._volatile.pop(seq, None) is not None for seq in batch)
            batch -= self._acked_unsaved
            if not batch:
                return removed
            try:
                self._db.execute("BEGIN IMMEDIATE")
                before = self._db.total_changes
                self._db.executemany("DELETE FROM pending WHERE seq = ?", [(s,) for s in batch])
                gone = self._db.total_changes - before
                self._db.execute("COMMIT")
            except Exception as exc:
                self._rollback()
                if not storage_fault(exc):
                    raise
                self._degrade(exc)
                gone = self._forget_acked(batch)
            self._depth -= gone
        return removed + gone

    def _forget_acked(self, seqs: set[int]) -> int:
        """Hide acked rows the disk would not delete; return how many were pending."""
        held = {int(r[0]) for r in self._db.execute("SELECT seq FROM pending").fetchall()} & seqs
        self._acked_unsaved |= held
        return len(held)

    def depth(self) -> int:
        with self._lock:
            return self._depth + len(self._volatile)

    def oldest_age_s(self, now: float | None = None) -> float:
        """Age of the oldest unacknowledged verdict in seconds; 0 when empty."""
        with self._lock:
            # The lowest seq is the oldest row; reading it by primary key stays O(1) at any depth.
            row = self._db.execute(
                "SELECT created FROM pending WHERE seq NOT IN (SELECT value FROM json_each(?)) "
                "ORDER BY seq LIMIT 1",
                (json.dumps(sorted(self._acked_unsaved)),),
            ).fetchone()
            oldest = [float(row[0])] if row is not None else []
            oldest += [r.created for r in self._volatile.values()][:1]
        if not oldest:
            return 0.0
        return max(0.0, (time.time() if now is None else now) - min(oldest))

    def close(self) -> None:
        """Sync what is committed and release the unused reserved numbers: a clean stop leaves no gap."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            self._retry_at = 0.0
        self.sync()
        with self._lock:
            try:
                if self._degraded is not None:
                    event(
                        logging.ERROR,
                        "outbox_closed_degraded",
                        path=self.path,
                        lost_unacknowledged=len(self._volatile),
                        next_start="goes on after the reserved seqs",
                    )
                    return
                self._db.execute(
                    "UPDATE meta SET value=(SELECT value FROM meta WHERE key='last_seq') "
                    "WHERE key='seq_reserved'"
                )
                self._fsync_wal()
                self._mirror_reservation(self._handed)
            except (sqlite3.DatabaseError, OSError) as exc:  # the reservation stays: a gap, never a repeat
                event(logging.ERROR, "outbox_close_failed", path=self.path, error=str(exc))
            finally:
                self._db.close()
