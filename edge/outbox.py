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
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from lineguard.durable import open_durable
from lineguard.errors import DeliveryError
from lineguard.logs import Events
from lineguard.messages import Verdict

__all__ = ["Outbox", "OutboxFullError", "PendingVerdict"]

event = Events(__name__)

SEQ_BLOCK = 1000  # seq numbers reserved per fsync; the most a power cut can skip

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


def boot_id() -> int:
    """This boot of the host (Linux's boot id as a number); 0 where the system does not say.

    A process that dies leaves its page cache to the kernel; only a new boot can have lost it.
    """
    try:
        text = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return int(text.replace("-", "")[:15], 16)
    except (OSError, ValueError):
        return 0


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
    ) -> None:
        self.path = path
        self.max_pending = max_pending
        self.durable = durable
        self._boot = boot_id() if boot is None else boot
        self._wal = path.with_name(path.name + "-wal")
        self._lock = threading.Lock()
        # Commits are not fsynced by SQLite: ``sync`` does it, off the inspection path.
        self._db = open_durable(path, what="verdict outbox", synchronous="NORMAL")
        self._db.executescript(_SCHEMA)
        self._depth = self._count()
        self._skip_seqs_a_power_cut_may_have_used()
        self._committed = self._synced = self.last_seq
        self._closed = False

    def _count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM pending").fetchone()[0])

    def _meta(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self._db.execute("SELECT key, value FROM meta").fetchall()}

    def _skip_seqs_a_power_cut_may_have_used(self) -> None:
        meta = self._meta()
        last, reserved = meta["last_seq"], meta["seq_reserved"]
        same_boot = self._boot != 0 and meta["boot"] == self._boot
        if reserved <= last or same_boot:
            return  # closed cleanly, or only the process died: the WAL holds every commit
        event(
            logging.WARNING,
            "outbox_seq_skipped",
            path=self.path,
            why="not closed before the host restarted: a verdict numbered up to the reserved seq "
            "may have been published before the power cut",
            next_seq=reserved + 1,
            instead_of=last + 1,
        )
        self._db.execute("UPDATE meta SET value=? WHERE key='last_seq'", (reserved,))
        self._fsync_wal()

    def _fsync_wal(self) -> None:
        """Make every commit so far survive a power cut (what ``synchronous=FULL`` does per commit)."""
        fd = os.open(self._wal, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @property
    def last_seq(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key='last_seq'").fetchone()
        return int(row[0])

    @property
    def synced_seq(self) -> int:
        """Verdicts up to this ``seq`` survive a power cut (in durable mode)."""
        with self._lock:
            return self._synced

    def sync(self) -> bool:
        """Fsync what was committed since the last call; False (and logged) if the disk refused."""
        with self._lock:
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
        """Number the next verdict and commit it in one transaction; return what was stored."""
        with self._lock:
            if self._depth >= self.max_pending:
                raise OutboxFullError(
                    f"verdict outbox {self.path} holds {self._depth} unacknowledged verdicts "
                    f"(max_pending={self.max_pending}); check the broker connection"
                )
            self._db.execute("BEGIN IMMEDIATE")
            try:
                meta = self._meta()
                last = meta["last_seq"]
                verdict = make(last + 1)
                if verdict.seq != last + 1:
                    raise ValueError(f"verdict seq {verdict.seq} != next seq {last + 1}")
                self._db.execute(
                    "INSERT INTO pending (seq, created, payload) VALUES (?, ?, ?)",
                    (verdict.seq, time.time() if now is None else now, verdict.to_json()),
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
                self._db.execute("ROLLBACK")
                raise
            if reserve:  # once per block: the reservation is on disk before its first seq is published
                self._fsync_wal()
                self._synced = verdict.seq
            self._committed = verdict.seq
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

        The commit is not fsynced: losing an ack to a power cut only means the verdict is sent again.
        """
        batch = [(int(seq),) for seq in seqs]
        if not batch:
            return 0
        with self._lock:
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
        """Sync what is committed and release the unused reserved numbers: a clean stop leaves no gap."""
        if self._closed:
            return
        self._closed = True
        self.sync()
        with self._lock:
            self._db.execute(
                "UPDATE meta SET value=(SELECT value FROM meta WHERE key='last_seq') WHERE key='seq_reserved'"
            )
            self._fsync_wal()
            self._db.close()
