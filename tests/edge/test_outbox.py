"""The SQLite verdict outbox: numbering that survives restarts, order, acks, and the bound."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.mqtt import add_verdicts, make_verdict

from lineguard.edge.outbox import SEQ_BLOCK, Outbox, OutboxFullError
from lineguard.errors import InputError


def test_seq_continues_after_reopening(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    add_verdicts(box, 3)
    box.ack(2)
    box.close()
    box = Outbox(tmp_path / "o.db")
    assert box.last_seq == 3
    assert box.depth() == 2
    assert add_verdicts(box, 1) == [4]
    assert [p.seq for p in box.pending()] == [1, 3, 4]


def test_pending_is_in_seq_order_after_a_cursor(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    assert box.pending() == []
    add_verdicts(box, 10)
    assert [p.seq for p in box.pending(after_seq=4, limit=3)] == [5, 6, 7]


def test_ack_removes_a_verdict_once(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    add_verdicts(box, 2)
    assert box.ack(1) is True
    assert box.ack(1) is False  # a duplicate PUBACK changes nothing
    assert box.depth() == 1


@pytest.mark.parametrize(
    ("acks", "removed", "left"),
    [([], 0, [1, 2, 3]), ([2], 1, [1, 3]), ([1, 3, 3, 9], 2, [2])],
)
def test_ack_many_removes_only_what_was_pending(
    tmp_path: Path, acks: list[int], removed: int, left: list[int]
) -> None:
    box = Outbox(tmp_path / "o.db")
    add_verdicts(box, 3)
    assert box.ack_many(acks) == removed
    assert [p.seq for p in box.pending()] == left
    assert box.depth() == len(left)


def test_full_outbox_refuses_new_verdicts_and_keeps_the_old(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", max_pending=10)
    add_verdicts(box, 10)
    with pytest.raises(OutboxFullError, match="holds 10 unacknowledged"):
        add_verdicts(box, 1)
    assert box.last_seq == 10
    assert [p.seq for p in box.pending(limit=100)] == list(range(1, 11))
    box.ack(1)
    assert add_verdicts(box, 1) == [11]


def test_a_verdict_with_the_wrong_seq_is_not_stored(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    with pytest.raises(ValueError, match="seq 7 != next seq 1"):
        box.add(lambda seq: make_verdict(7))
    assert box.last_seq == 0
    assert box.depth() == 0


def test_oldest_age_is_that_of_the_lowest_pending_seq(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", durable=False)
    assert box.oldest_age_s() == 0.0
    box.add(make_verdict, now=100.0)
    box.add(make_verdict, now=105.0)
    assert box.oldest_age_s(now=110.0) == 10.0
    box.ack(1)
    assert box.oldest_age_s(now=110.0) == 5.0


DIE_WITHOUT_CLOSE = """
import os, sys
from pathlib import Path
from lineguard.edge.outbox import Outbox
from support.mqtt import add_verdicts

box = Outbox(Path(sys.argv[1]), boot=int(sys.argv[2]))
print(*add_verdicts(box, int(sys.argv[3])), flush=True)
os._exit(0)  # no close(): as if the process were killed
"""


def station_dies(path: Path, boot: int, units: int) -> list[int]:
    """Commit ``units`` verdicts in another process that then dies; return their seqs."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    out = subprocess.run(
        [sys.executable, "-c", DIE_WITHOUT_CLOSE, str(path), str(boot), str(units)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    return [int(s) for s in out.split()]


def test_no_seq_is_used_twice_or_skipped_without_need(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "o.db"
    assert station_dies(path, boot=1, units=3) == [1, 2, 3]
    # The process died, the host did not restart: every commit is there, numbering goes on.
    box = Outbox(path, boot=1)
    assert add_verdicts(box, 1) == [4]
    box.close()
    assert station_dies(path, boot=1, units=2) == [5, 6]
    # The host restarted without a clean stop: seqs up to the block reserved at seq 5 may have been
    # published before a power cut took them from the disk, so numbering goes on after that block.
    box = Outbox(path, boot=2)
    assert add_verdicts(box, 1) == [5 + SEQ_BLOCK]
    assert "not closed before the host restarted" in caplog.text
    box.close()
    # A clean stop releases the block: the next boot goes on without a gap.
    box = Outbox(path, boot=3)
    assert add_verdicts(box, 1) == [6 + SEQ_BLOCK]
    assert [p.seq for p in box.pending(limit=100)] == [1, 2, 3, 4, 5, 6, 5 + SEQ_BLOCK, 6 + SEQ_BLOCK]
    box.close()


def test_sync_puts_what_was_committed_on_the_disk(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    add_verdicts(box, 5)
    assert box.synced_seq == 1  # the first seq reserved a block of numbers, fsynced at once
    assert box.sync()
    assert box.synced_seq == 5
    box.close()


def _overwrite_with_garbage(path: Path) -> None:
    size = path.stat().st_size
    path.write_bytes(b"not an outbox, a torn copy " * (size // 27 + 1))


def test_a_damaged_outbox_is_one_line_naming_the_file_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    box = Outbox(path)
    add_verdicts(box, 3)
    box.close()
    _overwrite_with_garbage(path)
    with pytest.raises(InputError) as caught:
        Outbox(path)
    message = str(caught.value)
    assert "\n" not in message
    assert f"verdict outbox {path} is damaged" in message
    assert "move it" in message and "aside" in message
