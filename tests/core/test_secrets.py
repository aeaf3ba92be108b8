"""Secret files: one rule set for every password and token the config names."""

from __future__ import annotations

from pathlib import Path

import pytest

from lineguard.errors import ConfigError
from lineguard.secrets import MAX_SECRET_BYTES, read_secret

SECRET = "s3cr3t-Pa55word"


def _error(path: Path, **kwargs: int) -> str:
    with pytest.raises(ConfigError) as info:
        read_secret(path, "mqtt.password_file", **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert "mqtt.password_file" in message and str(path) in message
    return message


def test_only_the_trailing_line_break_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(f"{SECRET}\r\n".encode())
    assert read_secret(path, "mqtt.password_file") == SECRET
    path.write_text(f" {SECRET} \n")
    assert read_secret(path, "mqtt.password_file") == f" {SECRET} "


def test_missing_file_names_the_key_and_the_fix(tmp_path: Path) -> None:
    assert "cannot be read: file not found; create it" in _error(tmp_path / "absent")


@pytest.mark.parametrize("content", [b"", b"\n", b"\r\n\n"])
def test_empty_file_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "secret"
    path.write_bytes(content)
    assert "is empty" in _error(path)


def test_too_big_file_is_refused_without_echoing_it(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text(SECRET * (MAX_SECRET_BYTES // len(SECRET) + 1))
    message = _error(path)
    assert "over 4096 bytes" in message
    assert SECRET not in message


def test_non_utf8_and_short_secrets_are_refused_without_echoing_them(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"\xff\xfe" + SECRET.encode())
    assert "not UTF-8" in _error(path)
    path.write_text(SECRET)
    message = _error(path, min_chars=len(SECRET) + 1)
    assert "shorter than 16 characters" in message
    assert SECRET not in message


def test_a_directory_is_refused_in_one_line(tmp_path: Path) -> None:
    assert "cannot be read" in _error(tmp_path)
