"""Results name the code they came from: a dirty checkout is refused unless the caller allows it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lineguard.errors import InputError
from lineguard.provenance import provenance


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_dirty_checkout_is_refused_unless_allowed_and_then_marked(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    _git(tmp_path, "add", "code.py")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    sha = _git(tmp_path, "rev-parse", "HEAD")
    clean = provenance(checkout=tmp_path, command="lineguard bench latency")
    assert clean["git_revision"] == sha and clean["command"] == "lineguard bench latency"
    assert clean["machine"]["cores"] >= 1 and clean["versions"]["python"]
    (tmp_path / "code.py").write_text("x = 2\n")
    with pytest.raises(InputError, match=r"uncommitted changes.*pass --allow-dirty"):
        provenance(checkout=tmp_path)
    assert provenance(checkout=tmp_path, allow_dirty=True)["git_revision"] == f"{sha}-dirty"
