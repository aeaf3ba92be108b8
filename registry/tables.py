"""Plain-text tables for the ``lineguard registry`` commands: columns padded to their widest cell."""

from __future__ import annotations

import click

__all__ = ["echo_table"]


def echo_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
