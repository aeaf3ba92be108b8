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
@click.option(
    "--calib-share",
    type=click.FloatRange(0, 1),
    default=0.25,
    show_default=True,
    help="Extra units, as a share of --images, rendered into the calib split (0 = none).",
)
def synth(
    out: Path,
    images: int,
    seed: int,
    imgsz: int,
    defect_rate: float,
    condition: str,
    video_frames: int,
    calib_share: float,
) -> None:
    """Write a synthetic line as a YOLO dataset version (deterministic for a seed)."""
    from lineguard.training.synthetic_dataset import write_synthetic_dataset

    def advance(done: int, total: int) -> None:
        click.echo(f"\r  rendered {done}/{total} units", nl=done == total, err=True)

    manifest = write_synthetic_dataset(
        out,
        images=images,
        seed=seed,
        imgsz=imgsz,
        defect_rate=defect_rate,
        condition=condition,
        video_frames=video_frames,
        calib_share=calib_share,
        progress=advance,
    )
    calib = manifest.counts.get("calib", {}).get("images", 0)
    click.echo(f"wrote {images} images + {calib} calibration images + {video_frames} video frames to {out}")
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
    grid = write_sample_grid(root, png or root.parent / f"{root.name}_samples.png")
    click.echo(f"sample grid: {grid.path} ({grid.defective} defective, {grid.good} defect-free)")


@data.command(name="import")
@click.argument("src", type=click.Path(path_type=Path, exists=True))
@click.option(
    "--format", "fmt", type=click.Choice(["yolo", "voc", "labelstudio"]), required=True, help="Source format."
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="New dataset version folder.")
@click.option(
    "--split-from",
    default=None,
    help="Comma-separated list files named <split>.txt (one image id a line), e.g. train.txt,val.txt.",
)
@click.option("--val-share", type=float, default=0.2, show_default=True, help="Seeded stratified split.")
@click.option(
    "--calib-share",
    type=float,
    default=0.15,
    show_default=True,
    help="Share held out for threshold calibration (by image id hash; 0 = none). Lists: calib.txt.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--classes", default=None, help="Comma-separated class order [default: as found, sorted].")
@click.option(
    "--images",
    "image_dirs",
    multiple=True,
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="Where Label Studio's images are (repeatable).",
)
@click.option("--parent", default=None, help="Hash of the dataset version this one extends.")
@click.option("--strict", is_flag=True, help="Fail instead of skipping unusable inputs.")
def import_(
    src: Path,
    fmt: str,
    out: Path,
    split_from: str | None,
    val_share: float,
    calib_share: float,
    seed: int,
    classes: str | None,
    image_dirs: tuple[Path, ...],
    parent: str | None,
    strict: bool,
) -> None:
    """Import YOLO, Pascal VOC or Label Studio labels as a new dataset version."""
    from lineguard.training.importers import import_dataset

    report = import_dataset(
        fmt,
        src,
        out,
        split_from=[Path(p.strip()) for p in split_from.split(",") if p.strip()] if split_from else None,
        val_share=val_share,
        calib_share=calib_share,
        seed=seed,
        classes=[c.strip() for c in classes.split(",") if c.strip()] if classes else None,
        image_dirs=list(image_dirs),
        parent=parent,
        strict=strict,
    )
    click.echo(report.summary())


@data.command()
@click.argument("root", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option(
    "--augment",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Training config YAML whose 'augment' section to preview [default: built-in defaults].",
)
@click.option(
    "--png", type=click.Path(path_type=Path), default=None, help="[default: ROOT/../<name>_augmented.png]"
)
@click.option("--samples", type=click.IntRange(1, 64), default=16, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def preview(root: Path, config_path: Path | None, png: Path | None, samples: int, seed: int) -> None:
    """Write a PNG grid of augmented training samples with their boxes."""
    from lineguard.training.augment import write_preview
    from lineguard.training.config import load_train_config

    cfg = load_train_config(config_path)
    out = write_preview(
        root, cfg.augment, png or root.parent / f"{root.name}_augmented.png", samples=samples, seed=seed
    )
    click.echo(f"augmentation preview: {out}")
