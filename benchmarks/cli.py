"""``lineguard bench``: benchmarks that print figures and ratios from one run (no pass/fail).

Heavy imports (onnxruntime, ultralytics, matplotlib) happen inside the commands so that
``lineguard --help`` stays fast on any install.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from lineguard.errors import InputError

__all__ = ["bench"]


def _frame_size(value: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise InputError(f"--frame-size must look like 1280x1024; got {value!r}") from None
    if width < 16 or height < 16:
        raise InputError(f"--frame-size must be at least 16x16; got {value!r}")
    return width, height


@click.group()
def bench() -> None:
    """Latency and accuracy benchmarks."""


@bench.command()
@click.option(
    "--model",
    "model_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="ONNX model with model_card.json beside it; default: a random-weight YOLOv8n built now.",
)
@click.option("--imgsz", type=int, default=None, help="Model input size (default: the card's, or 320).")
@click.option(
    "--backend", type=click.Choice(["onnxruntime", "openvino"]), default="onnxruntime", show_default=True
)
@click.option(
    "--precision",
    type=click.Choice(["fp32", "bf16"]),
    default="fp32",
    show_default=True,
    help="OpenVINO inference precision (onnxruntime runs the file as it is: fp32).",
)
@click.option("--threads", type=click.IntRange(1, 256), default=2, show_default=True)
@click.option("--frames", type=click.IntRange(1), default=200, show_default=True)
@click.option("--frame-size", default="1280x1024", show_default=True, help="Camera frame WIDTHxHEIGHT.")
@click.option("--conf", type=click.FloatRange(0, 1, min_open=True), default=0.05, show_default=True)
@click.option("--iou", type=click.FloatRange(0, 1, min_open=True), default=0.45, show_default=True)
@click.option("--no-ultralytics", is_flag=True, help="Skip the ultralytics predict comparison.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("out/bench"),
    show_default=True,
)
def latency(
    model_path: Path | None,
    imgsz: int | None,
    backend: str,
    precision: str,
    threads: int,
    frames: int,
    frame_size: str,
    conf: float,
    iou: float,
    no_ultralytics: bool,
    out_dir: Path,
) -> None:
    """Per-stage p50/p95/p99 of the edge path vs ultralytics' predict on the same frames."""
    from lineguard.benchmarks.latency import run_latency_benchmark, write_report
    from lineguard.model_card import ModelCard

    size = _frame_size(frame_size)
    with tempfile.TemporaryDirectory(prefix="lineguard-bench-") as tmp:
        if model_path is None:
            from lineguard.benchmarks.models import build_random_yolo_onnx

            click.echo(f"building a random-weight YOLOv8n at {imgsz or 320} px ...", err=True)
            model_path = build_random_yolo_onnx(Path(tmp), imgsz=imgsz or 320, name="bench-yolov8n")
        elif imgsz is not None:
            card = ModelCard.load(model_path.parent / "model_card.json")
            if card.input_size != imgsz:
                raise InputError(
                    f"--imgsz {imgsz} does not match {model_path.name}'s input size {card.input_size}; "
                    "omit --imgsz or export the model at that size"
                )
        report = run_latency_benchmark(
            model_path,
            backend=backend,
            precision=precision,
            threads=threads,
            frames=frames,
            frame_size=size,
            conf=conf,
            iou=iou,
            compare_ultralytics=not no_ultralytics,
        )
        paths = write_report(report, out_dir)
    click.echo(paths["markdown"].read_text())
    click.echo("wrote " + ", ".join(str(p) for p in paths.values()))
