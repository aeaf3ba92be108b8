"""``lineguard outbox check|quarantine``: one line on a healthy or damaged file; a damaged one is
moved aside with its -wal and -shm (kept for recovery) and the station starts afresh."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import yaml
from support.mqtt import add_verdicts

from lineguard.cli import main
from lineguard.edge.outbox import Outbox


def station_yaml(tmp_path: Path) -> Path:
    config = tmp_path / "station.yaml"
    data = {"station": {"data_dir": str(tmp_path / "var")}, "mqtt": {"enabled": False}}
    config.write_text(yaml.safe_dump(data))
    return config


def outbox_with(tmp_path: Path, verdicts: int) -> Path:
    path = tmp_path / "var" / "outbox.sqlite"
    box = Outbox(path)
    add_verdicts(box, verdicts)
    box.close()
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["outbox", *args])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_check_says_a_healthy_outbox_is_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = station_yaml(tmp_path)
    code, out = run(capsys, "check", "--config", str(config))
    assert code == 0 and "no outbox yet" in out
    path = outbox_with(tmp_path, 3)
    code, out = run(capsys, "check", "--config", str(config))
    assert code == 0
    assert out.startswith("OK") and str(path) in out and "3 unacknowledged verdicts, last seq 3" in out


@pytest.mark.parametrize("damage", ["garbage", "truncated", "another_schema"])
def test_check_names_a_damaged_outbox_and_quarantine_moves_it_aside(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    config = station_yaml(tmp_path)
    path = outbox_with(tmp_path, 3)
    if damage == "garbage":
        path.write_bytes(b"\x13\x37 not a database " * 300)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:1500])
    else:
        path.unlink()
        other = sqlite3.connect(path)
        other.executescript("CREATE TABLE pending (id TEXT, body BLOB); CREATE TABLE meta (k, v);")
        other.close()
    original = path.read_bytes()
    path.with_name("outbox.sqlite-wal").write_bytes(b"wal")
    code, out = run(capsys, "check", "--config", str(config))
    assert code == 1
    assert out.startswith("DAMAGED") and str(path) in out and "outbox quarantine" in out
    assert out.count("\n") == 1
    with pytest.raises(Exception, match="is damaged"):  # the station refuses it with the same line
        Outbox(path)

    code, out = run(capsys, "quarantine", "--config", str(config))
    assert code == 0
    moved = sorted(p.name for p in path.parent.glob("outbox.sqlite.damaged-*"))
    base = path.parent / moved[0]
    assert set(moved) <= {base.name, base.name + "-wal", base.name + "-shm"}
    assert base.read_bytes() == original  # kept, byte for byte, for recovery, with its WAL
    assert (path.parent / (base.name + "-wal")).read_bytes() == b"wal"
    assert f"moved   {path} -> {base}" in out
    assert not path.exists() and not path.with_name("outbox.sqlite-wal").exists()
    # The station starts with an empty outbox and does not reuse the seqs the old one handed out.
    box = Outbox(path)
    assert box.depth() == 0 and add_verdicts(box, 1)[0] > 3
    box.close()
    code, out = run(capsys, "check", "--config", str(config))
    assert code == 0


def test_quarantine_leaves_a_healthy_outbox_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = station_yaml(tmp_path)
    path = outbox_with(tmp_path, 2)
    code, out = run(capsys, "quarantine", "--config", str(config))
    assert code == 0 and "healthy; nothing moved" in out
    assert path.exists() and not list(path.parent.glob("*.damaged-*"))
