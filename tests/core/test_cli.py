"""The ``lineguard`` command as a user runs it: help, one-line errors, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lineguard.cli", *args], capture_output=True, text=True, cwd=cwd, check=False
    )


def test_help_lists_the_subcommands() -> None:
    out = run_cli("--help")
    assert out.returncode == 0
    for name in (
        "data",
        "train",
        "evaluate",
        "export",
        "model",
        "edge",
        "registry",
        "label",
        "bench",
        "demo",
    ):
        assert f"  {name}" in out.stdout


@pytest.mark.parametrize("command", ["data", "data synth", "data stats", "model import"])
def test_every_command_has_help(command: str) -> None:
    out = run_cli(*command.split(), "--help")
    assert out.returncode == 0
    assert "Usage:" in out.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["data", "synth", "--images", "-3", "--out", "x"], "--images"),
        (["data", "synth", "--images", "4"], "Missing option '--out'"),
        (["data", "stats", "/nonexistent/folder"], "does not exist"),
        (["nosuchcommand"], "No such command"),
    ],
)
def test_user_mistakes_are_one_line_with_exit_code_2(args: list[str], needle: str) -> None:
    out = run_cli(*args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: ") and needle in lines[0]
    assert "Traceback" not in out.stderr


def test_synth_then_stats_on_a_fresh_folder(tmp_path: Path) -> None:
    out = run_cli(
        "data",
        "synth",
        "--out",
        str(tmp_path / "s"),
        "--images",
        "8",
        "--seed",
        "1",
        "--imgsz",
        "96",
        "--video-frames",
        "3",
    )
    assert out.returncode == 0, out.stderr
    assert "wrote 8 images" in out.stdout
    stats = run_cli("data", "stats", str(tmp_path / "s"))
    assert stats.returncode == 0, stats.stderr
    assert "scratch" in stats.stdout
    assert (tmp_path / "s_samples.png").is_file()


def test_misspelled_config_key_is_one_line_with_exit_code_2(tmp_path: Path) -> None:
    config = tmp_path / "station.yaml"
    config.write_text("mqtt:\n  prot: 1883\n")
    out = run_cli("edge", "check", "--config", str(config))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "mqtt.prot: unknown key" in lines[0], out.stderr
