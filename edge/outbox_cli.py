"""``lineguard outbox``: check a station's verdict outbox file, or move a damaged one aside.

A damaged outbox stops the station at start with one line naming the file; ``outbox check``
says the same without starting anything (exit 1 when damaged), and ``outbox quarantine`` moves
the file with its ``-wal`` and ``-shm`` aside under a timestamped name, keeping all three
together so what they held can still be recovered, after which the station starts with an empty
outbox. The ``-seq`` marker stays in place: it keeps the new outbox from reusing seq numbers
the old one may have published. Run both with the station stopped.
"""

from __future__ import annotations

from pathlib import Path

import click

from lineguard.edge.cli import CONFIG_OPTION

__all__ = ["outbox"]


def _outbox_path(config_path: Path) -> Path:
    from lineguard.config import load_config
    from lineguard.edge.outbox import OUTBOX_FILE

    return load_config(config_path).station.data_dir / OUTBOX_FILE


def _damage(path: Path) -> str | None:
    """None for a healthy outbox, else the one-line error naming what is wrong."""
    from lineguard.edge.outbox import check_outbox
    from lineguard.errors import InputError

    try:
        check_outbox(path)
    except InputError as exc:
        return str(exc)
    return None


@click.group()
def outbox() -> None:
    """Check the verdict outbox, or move a damaged one aside."""


@outbox.command()
@CONFIG_OPTION
def check(config_path: Path) -> None:
    """Say whether the outbox file is readable (exit 1 when it is damaged)."""
    from lineguard.edge.outbox import check_outbox
    from lineguard.errors import InputError

    path = _outbox_path(config_path)
    if not path.exists():
        click.echo(f"OK      {path}: no outbox yet (the station creates it at start)")
        return
    try:
        summary = check_outbox(path)
    except InputError as exc:
        click.echo(f"DAMAGED {exc}")
        click.get_current_context().exit(1)
    click.echo(f"OK      {path}: {summary}")


@outbox.command()
@CONFIG_OPTION
def quarantine(config_path: Path) -> None:
    """Move a damaged outbox (with its -wal and -shm) aside, keeping it for recovery."""
    from lineguard.durable import quarantine as move_aside

    path = _outbox_path(config_path)
    if not path.exists():
        click.echo(f"nothing to do: no outbox at {path}")
        return
    damage = _damage(path)
    if damage is None:
        click.echo(f"nothing to do: {path} is healthy; nothing moved")
        return
    click.echo(f"damaged: {damage}")
    for src, dst in move_aside(path):
        click.echo(f"moved   {src} -> {dst}")
    click.echo("the station starts with an empty outbox; keep the moved files to recover what they held")
