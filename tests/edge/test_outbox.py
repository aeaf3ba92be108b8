"""The SQLite verdict outbox: numbering that survives restarts, order, acks, and the bound."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.mqtt import add_verdicts, make_verdict

from lineguard.edge.outbox import Outbox, OutboxFullError


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
