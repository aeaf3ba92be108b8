"""A small file system of the test's own, to fill up: a tmpfs of a few hundred kB, mounted as root.

Disk-full tests need a real ENOSPC from the kernel, not a mock. Mounting needs root (CI runs as
root); elsewhere the test is skipped with the reason, and under root a failed mount fails it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

__all__ = ["fill", "small_fs"]


@contextmanager
def small_fs(path: Path, size: str = "1m") -> Iterator[Path]:
    """``path`` as a fresh tmpfs of ``size``; unmounted (whatever the test did) on the way out."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root (CI runs these tests as root)")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path, name: str = "filler") -> Path:
    """Write ``folder/name`` until the file system has no byte left; return it (delete it to free)."""
    filler = folder / name
    with filler.open("ab", buffering=0) as fh:
        chunk = b"\0" * 4096
        while True:
            try:
                fh.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
        with contextlib.suppress(OSError):
            os.fsync(fh.fileno())
    return filler
