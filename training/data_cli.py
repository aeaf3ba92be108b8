"""``lineguard data``: make, import and inspect dataset versions."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["data"]


@click.group()
def data() -> None:
    """Make, import and inspect dataset versions."""


@data.command()
@click.option("--out", type=click.Path(path_type=Path), required=True, help="New dataset folder.")
@click.option("--images", type=click.IntRange(min=2), default=200, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--imgsz", type=click.IntRange(min=64, max=4096), default=320, show_default=True)
@click.option("--defect-rate", type=click.FloatRange(0, 1), default=0.5, show_default=True)
@click.option(
    "--condition",
    default="nominal",
    show_default=True,
    help="nominal, dark, bright, blur, noisy, new_defect or shifted (drift tests).",
)
@click.option("--video-frames", type=click.IntRange(min=0), default=60, show_default=True)
def synth(
    out: Path, images: int, seed: int, imgsz: int, defect_rate: float, condition: str, video_frames: int
) -> None:
    """Write a synthetic line as a YOLO dataset version (deterministic for a seed)."""
    from lineguard.training.synthetic_dataset import write_synthetic_dataset

    with click.progressbar(
        length=images, label="rendering units", file=click.get_text_stream("stderr")
    ) as bar:
        manifest = write_synthetic_dataset(
            out,
            images=images,
            seed=seed,
            imgsz=imgsz,
            defect_rate=defect_rate,
            condition=condition,
            video_frames=video_frames,
            progress=lambda done, _total: bar.update(done - bar.pos),
        )
    click.echo(f"wrote {images} images + {video_frames} video frames to {out}")
    click.echo(f"dataset version {manifest.content_hash[:12]} ({len(manifest.files)} files)")


@data.command()
@click.argument("root", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option(
    "--png",
    type=click.Path(path_type=Path),
    default=None,
    help="Where to write the sample grid [default: ROOT/../<name>_samples.png].",
)
def stats(root: Path, png: Path | None) -> None:
    """Print per-class counts and write a PNG grid of samples with their boxes."""
    from lineguard.training.dataset_stats import dataset_stats, write_sample_grid

    summary = dataset_stats(root)
    click.echo(summary.table())
    out = write_sample_grid(root, png or root.parent / f"{root.name}_samples.png")
    click.echo(f"sample grid: {out}")
