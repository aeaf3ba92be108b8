"""The verdict outbox: a verdict exists once its row commits here, and leaves only when acked.

SQLite in WAL mode, one row per unacknowledged verdict, plus the station's last ``seq`` so that
numbering survives restarts. The inspection loop calls ``add`` (one short transaction); a
delivery thread reads ``pending`` in ``seq`` order and calls ``ack`` when the broker (or the file
sink) has taken the message. Nothing is pruned: at ``max_pending`` the outbox refuses new verdicts
with ``OutboxFullError`` so the daemon can say so instead of dropping the oldest. Adds are fsynced
(``durable=True``); acks are not, because a lost ack only replays a verdict the consumer dedups.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from lineguard.errors import DeliveryError
from lineguard.verdict import Verdict

__all__ = ["Outbox", "OutboxFullError", "PendingVerdict"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS pending (
    seq INTEGER PRIMARY KEY,
    created REAL NOT NULL,
    payload TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('last_seq', 0);
"""


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

    def __init__(self, path: Path, *, max_pending: int = 100_000, durable: bool = True) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_pending = max_pending
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed verdict survives power loss, not only a killed process.
        self._sync = "FULL" if durable else "NORMAL"
        self._db.execute(f"PRAGMA synchronous={self._sync}")
        self._db.executescript(_SCHEMA)
        self._depth = self._count()

    def _count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM pending").fetchone()[0])

    @property
    def last_seq(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key='last_seq'").fetchone()
        return int(row[0])

    def add(self, make: Callable[[int], Verdict], *, now: float | None = None) -> Verdict:
        """Number the next verdict and commit it in one transaction; return what was stored."""
        with self._lock:
            if self._depth >= self.max_pending:
                raise OutboxFullError(
                    f"verdict outbox {self.path} holds {self._depth} unacknowledged verdicts "
                    f"(max_pending={self.max_pending}); check the broker connection"
                )
            self._db.execute("BEGIN IMMEDIATE")
            try:
                last = self._db.execute("SELECT value FROM meta WHERE key='last_seq'").fetchone()[0]
                verdict = make(int(last) + 1)
                if verdict.seq != last + 1:
                    raise ValueError(f"verdict seq {verdict.seq} != next seq {last + 1}")
                self._db.execute(
                    "INSERT INTO pending (seq, created, payload) VALUES (?, ?, ?)",
                    (verdict.seq, time.time() if now is None else now, verdict.to_json()),
                )
                self._db.execute("UPDATE meta SET value=? WHERE key='last_seq'", (verdict.seq,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._depth += 1
            return verdict

    def pending(self, *, after_seq: int = 0, limit: int = 100) -> list[PendingVerdict]:
        """Unacknowledged verdicts with ``seq > after_seq``, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, payload, created, attempts FROM pending WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        return [PendingVerdict(int(s), str(p), float(c), int(a)) for s, p, c, a in rows]

    def mark_attempt(self, seq: int) -> None:
        with self._lock:
            self._db.execute("UPDATE pending SET attempts = attempts + 1 WHERE seq = ?", (seq,))

    def ack(self, seq: int) -> bool:
        """Remove an acknowledged verdict; False if it was already gone (a duplicate ack)."""
        return self.ack_many((seq,)) > 0

    def ack_many(self, seqs: Iterable[int]) -> int:
        """Remove acknowledged verdicts in one transaction; return how many were still pending.

        The commit is not fsynced: losing an ack to a power cut only means the verdict is sent
        again, and keeping the fsync out of here keeps the inspection loop's ``add`` from waiting.
        """
        batch = [(int(seq),) for seq in seqs]
        if not batch:
            return 0
        with self._lock:
            self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                before = self._db.total_changes
                self._db.executemany("DELETE FROM pending WHERE seq = ?", batch)
                removed = self._db.total_changes - before
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            finally:
                self._db.execute(f"PRAGMA synchronous={self._sync}")
            self._depth -= removed
        return removed

    def depth(self) -> int:
        with self._lock:
            return self._depth

    def oldest_age_s(self, now: float | None = None) -> float:
        """Age of the oldest unacknowledged verdict in seconds; 0 when empty."""
        with self._lock:
            # The lowest seq is the oldest row; reading it by primary key stays O(1) at any depth.
            row = self._db.execute("SELECT created FROM pending ORDER BY seq LIMIT 1").fetchone()
        if row is None:
            return 0.0
        return max(0.0, (time.time() if now is None else now) - float(row[0]))

    def close(self) -> None:
        with self._lock:
            self._db.close()
