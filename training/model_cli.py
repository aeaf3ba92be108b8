"""``lineguard model import``: an ultralytics YOLO ``.pt`` or ``.onnx`` becomes a lineguard model folder.

A thin click wrapper over ``lineguard.training.model_import``; progress goes to stderr, the result
to stdout, and a file the station cannot serve is one line (exit 2). Heavy imports happen inside
the command, so an edge install (no torch) imports an ONNX.
"""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["model"]


@click.group()
def model() -> None:
    """Bring your own YOLO: import a model lineguard did not train."""


@model.command("import")
@click.argument("source", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="New model folder.")
@click.option("--name", default=None, help="Model name [default: the file's stem].")
@click.option("--version", default=None, help="Model version [default: UTC timestamp].")
@click.option(
    "--imgsz", type=click.IntRange(32, 4096), default=None, help="For a .pt [default: its training size]."
)
@click.option(
    "--data",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    default=None,
    help="A YOLO dataset version of the model's classes: calibrate the thresholds on it.",
)
@click.option("--split", default=None, help="With --data [default: calib, else val with a warning].")
@click.option(
    "--max-escape",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.005,
    show_default=True,
    help="With --data: the escape ceiling calibration holds the thresholds to.",
)
@click.option(
    "--max-overkill", type=click.FloatRange(0, 1), default=None, help="With --data: also hold overkill."
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="Station YAML: its policy decides the units, its registry.max_model_bytes bounds the file.",
)
def import_(
    source: Path,
    out: Path,
    name: str | None,
    version: str | None,
    imgsz: int | None,
    data: Path | None,
    split: str | None,
    max_escape: float,
    max_overkill: float | None,
    config_path: Path | None,
) -> None:
    """Import an ultralytics YOLO detection model (.pt or .onnx) into OUT: model.onnx + model_card.json.

    A .pt is a pickle that runs code when it loads: import only checkpoints you trust.
    """
    from lineguard.config import load_config
    from lineguard.training.model_import import import_model

    cfg = load_config(config_path)
    card = import_model(
        source,
        out,
        name=name,
        version=version,
        imgsz=imgsz,
        data=data,
        split=split,
        max_escape=max_escape,
        max_overkill=max_overkill,
        policy=cfg.policy,
        max_bytes=cfg.registry.max_model_bytes,
        progress=lambda line: click.echo(line, err=True),
    )
    if card.achieved is None:
        same = ", ".join(f"{v:g}" for v in sorted(set(card.thresholds.values())))
        calibrated = f"threshold {same} for every class: uncalibrated default (pass --data to calibrate)"
    else:
        chosen = ", ".join(f"{k} {v:.2f}" for k, v in card.thresholds.items())
        calibrated = f"thresholds {chosen}, calibrated on {card.achieved.split}"
    click.echo(f"imported {card.ref} into {out}: {len(card.classes)} classes, {card.input_size} px")
    click.echo(calibrated)
    if card.missed_target():
        click.echo(f"warning: {card.missed_target()}; the registry refuses it without --accept-missed-target")
    click.echo(f"next: lineguard bench latency --model {out}, or lineguard registry add {out}")
