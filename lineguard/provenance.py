"""Where a published figure came from: date, code revision, machine, package versions and command.

A figure without its provenance cannot be checked or reproduced: the same benchmark differs by 2x
between an AVX2 and an AVX-512 bf16 CPU, and a number made from uncommitted code names no code at
all. Every results writer (``lineguard bench``, the NEU-DET and drift benchmarks, the flywheel
test) stamps its JSON and Markdown with :func:`provenance`, which refuses a dirty checkout unless
the caller says so, and then marks the revision ``-dirty``.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import lineguard
from lineguard.errors import InputError

__all__ = [
    "ALLOW_DIRTY_HELP",
    "CPU_FLAGS",
    "cpu_flags",
    "cpu_model",
    "cpu_summary",
    "git_revision",
    "provenance",
    "provenance_markdown",
]

ALLOW_DIRTY_HELP = "Run on a checkout with uncommitted changes; the results name the revision '<sha>-dirty'."
# The vector extensions that decide which precision runs fast (bf16 needs avx512_bf16 or AMX).
CPU_FLAGS = ("avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
# Packages whose version moves a figure; those not installed are left out.
_PACKAGES = ("lineguard", "onnxruntime", "onnxruntime-gpu", "openvino", "torch", "ultralytics")


def _checkout() -> Path:
    return Path(lineguard.__file__).resolve().parent.parent


def _git(where: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


RESULTS_DIR = "benchmarks/results"


def git_revision(checkout: Path | None = None) -> str | None:
    """``<sha>`` or ``<sha>-dirty`` of the checkout lineguard runs from; None outside git."""
    where = checkout or _checkout()
    sha = _git(where, "rev-parse", "HEAD")
    if sha is None:
        return None
    # Results being written are not a change to the code that made them.
    dirty = _git(
        where, "status", "--porcelain", "--untracked-files=no", "--", ".", f":(exclude){RESULTS_DIR}"
    )
    return sha + ("-dirty" if dirty else "")


def _cpuinfo() -> tuple[str, set[str]]:
    name, flags = platform.processor() or platform.machine(), set[str]()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    return name, flags


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where it cannot be read)."""
    return frozenset(_cpuinfo()[1])


def cpu_model() -> str:
    return _cpuinfo()[0]


def cpu_summary() -> str:
    """The CPU's model and the vector extensions it has, e.g. ``AMD EPYC 9454 (avx2, avx512f)``."""
    name, flags = _cpuinfo()
    return f"{name} ({', '.join(f for f in CPU_FLAGS if f in flags) or 'no AVX2'})"


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in _PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[package] = metadata.version(package)
    return found


def _command() -> str:
    """The command line as typed; ``python -m NAME ...`` when run as a module."""
    argv = list(sys.argv)
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if argv and argv[0].endswith(".py") and spec is not None and spec.name:
        return shlex.join(["python", "-m", spec.name.removesuffix(".__main__"), *argv[1:]])
    return shlex.join(argv)


def provenance(
    *, allow_dirty: bool = False, command: str | None = None, checkout: Path | None = None
) -> dict[str, Any]:
    """Date, revision, machine, versions and command of this run, for a results file.

    Raises InputError on a checkout with uncommitted changes unless ``allow_dirty``: a figure made
    from such code cannot be traced back to it. ``checkout`` defaults to the one lineguard runs from.
    """
    revision = git_revision(checkout)
    if revision is not None and revision.endswith("-dirty") and not allow_dirty:
        raise InputError(
            f"the checkout {checkout or _checkout()} has uncommitted changes, so its results could not "
            "be traced to a revision; commit them, or pass --allow-dirty to record it as '<sha>-dirty'"
        )
    name, flags = _cpuinfo()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_revision": revision,
        "machine": {
            "cpu": name,
            "cpu_flags": [f for f in CPU_FLAGS if f in flags],
            "cores": os.cpu_count(),
            "os": platform.platform(),
        },
        "versions": _versions(),
        "command": command if command is not None else _command(),
    }


def provenance_markdown(p: dict[str, Any]) -> list[str]:
    """The provenance as Markdown lines for a report's header."""
    m = p["machine"]
    flags = ", ".join(m["cpu_flags"]) or "no AVX2"
    versions = ", ".join(f"{k} {v}" for k, v in p["versions"].items())
    return [
        f"Made {p['date']} from revision `{p['git_revision'] or 'unknown (not a git checkout)'}` "
        f"on {m['cpu']} ({flags}), {m['cores']} cores, {m['os']}; {versions}.",
        "",
        f"Command: `{p['command']}`",
        "",
    ]
