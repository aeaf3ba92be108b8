"""``lineguard bench``: benchmarks that print figures and ratios from one run (no pass/fail).

Heavy imports (onnxruntime, ultralytics, matplotlib) happen inside the commands so that
``lineguard --help`` stays fast on any install.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from lineguard.errors import InputError
from lineguard.model_refs import ModelPathType
from lineguard.provenance import ALLOW_DIRTY_HELP, provenance

if TYPE_CHECKING:
    from lineguard.benchmarks.latency import LatencyReport, Variant

__all__ = ["bench"]


def _frame_size(value: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise InputError(f"--frame-size must look like 1280x1024; got {value!r}") from None
    if width < 16 or height < 16:
        raise InputError(f"--frame-size must be at least 16x16; got {value!r}")
    return width, height


def _weights_of(model_path: Path) -> Path | None:
    """The PyTorch weights an ONNX model was exported from, when they are still where they were."""
    from lineguard.messages import ModelCard

    beside = model_path.with_suffix(".pt")  # a model built by the benchmark itself
    if beside.is_file():
        return beside
    card_path = model_path.parent / "model_card.json"
    if not card_path.is_file():
        return None  # loading the model says what is missing
    card = ModelCard.load(card_path)
    best = Path(card.training_run) / "weights" / "best.pt" if card.training_run else None
    return best if best is not None and best.is_file() else None


@click.group()
def bench() -> None:
    """Latency and accuracy benchmarks."""


@bench.command()
@click.option(
    "--model",
    "model_path",
    type=ModelPathType(),
    default=None,
    help="Model folder or ONNX with model_card.json beside it ('lineguard model import' makes one "
    "from a YOLO file), or NAME@production in the registry; "
    "default: a random-weight YOLOv8n built now.",
)
@click.option(
    "--imgsz",
    "sizes",
    type=click.IntRange(32, 4096),
    multiple=True,
    help="Model input size; repeat to build and time a random-weight YOLOv8n at each size in one run "
    "(default: the card's, or 320). A given --model runs at its own size only.",
)
@click.option(
    "--backend",
    "backends",
    type=click.Choice(["onnxruntime", "openvino"]),
    multiple=True,
    default=["onnxruntime"],
    show_default=True,
    help="Repeat to measure several backends side by side in one run. The station as the README "
    "configures it (precision auto) and every variant the model's card lists are always timed too.",
)
@click.option(
    "--precision",
    "precisions",
    type=click.Choice(["fp32", "bf16"]),
    multiple=True,
    default=["fp32"],
    show_default=True,
    help="OpenVINO inference precision; repeat for several (onnxruntime always runs fp32).",
)
@click.option(
    "--int8-model",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="A quantized (QDQ) ONNX with its card: also measured as 'int8' on each --backend.",
)
@click.option(
    "--weights",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="The .pt the ONNX came from, for ultralytics' own OpenVINO export "
    "[default: weights/best.pt of the card's training run].",
)
@click.option(
    "--data",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="A YOLO dataset version: report each variant's mAP50 on its --split.",
)
@click.option("--split", default="val", show_default=True)
@click.option("--mqtt-host", default="127.0.0.1", show_default=True)
@click.option("--mqtt-port", type=click.IntRange(1, 65535), default=1883, show_default=True)
@click.option("--no-mqtt", is_flag=True, help="Skip the end-to-end leg through the outbox and MQTT.")
@click.option(
    "--outbox",
    type=click.Choice(["both", "fsync", "no-fsync"]),
    default="both",
    show_default=True,
    help="Outbox durability for the MQTT leg; 'both' alternates them unit by unit.",
)
@click.option("--threads", type=click.IntRange(1, 256), default=2, show_default=True)
@click.option(
    "--floor-size",
    type=click.IntRange(64, 8192),
    default=2048,
    show_default=True,
    help="Side of the square matmuls that measure this CPU's compute floors.",
)
@click.option("--frames", type=click.IntRange(1), default=200, show_default=True)
@click.option("--warmup", type=click.IntRange(0), default=10, show_default=True)
@click.option(
    "--frame-size",
    default="1280x1024",
    show_default=True,
    help="Synthetic frame WIDTHxHEIGHT (--data times the dataset's own frames instead).",
)
@click.option("--conf", type=click.FloatRange(0, 1, min_open=True), default=0.05, show_default=True)
@click.option("--iou", type=click.FloatRange(0, 1, min_open=True), default=0.45, show_default=True)
@click.option("--no-ultralytics", is_flag=True, help="Skip the ultralytics predict comparison.")
@click.option(
    "--frame-store",
    is_flag=True,
    help="Also time each variant with the frame store on, alternating with it off.",
)
@click.option(
    "--frame-store-share",
    type=click.FloatRange(0, 1, min_open=True),
    default=1.0,
    show_default=True,
    help="With --frame-store: share of units whose frame is kept (1.0 = every frame, the worst case; "
    "about 0.05 = a line's FAILs, NO_DECISIONs and 2 %% of its PASSes).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("out/bench"),
    show_default=True,
)
@click.option("--name", default="latency", show_default=True, help="Report file stem: NAME.{json,md,png}.")
@click.option("--allow-dirty", is_flag=True, help=ALLOW_DIRTY_HELP)
def latency(
    model_path: Path | None,
    sizes: tuple[int, ...],
    backends: tuple[str, ...],
    precisions: tuple[str, ...],
    int8_model: Path | None,
    weights: Path | None,
    data: Path | None,
    split: str,
    mqtt_host: str,
    mqtt_port: int,
    no_mqtt: bool,
    outbox: str,
    threads: int,
    floor_size: int,
    frames: int,
    warmup: int,
    frame_size: str,
    conf: float,
    iou: float,
    no_ultralytics: bool,
    frame_store: bool,
    frame_store_share: float,
    out_dir: Path,
    name: str,
    allow_dirty: bool,
) -> None:
    """Per-stage and end-to-end p50/p95/p99 per variant vs ultralytics' predict and this CPU's floors."""
    # Ultralytics' torch pre-processing leaves OpenMP threads spinning, and on a small CPU they slow
    # the onnxruntime call that follows (12.2 vs 8.0 ms seen on 2 cores): unless told otherwise,
    # compare with ultralytics without that handicap. libgomp reads this when torch loads, below.
    from lineguard.benchmarks.latency import default_omp_wait_policy

    omp_wait_policy = default_omp_wait_policy("PASSIVE")
    from lineguard.benchmarks.latency_report import write_report

    size = _frame_size(frame_size)
    if model_path is not None and not (model_path.parent / "model_card.json").is_file():
        raise InputError(
            f"{model_path.name} has no model_card.json beside it; for a YOLO .onnx or .pt of your own run "
            f"'lineguard model import {model_path.name} --out DIR', then --model DIR"
        )
    if "bf16" in precisions and "openvino" not in backends:
        raise InputError("--precision bf16 needs --backend openvino; onnxruntime runs fp32 only")
    if model_path is not None and len(set(sizes)) > 1:
        raise InputError(
            f"--model runs at its own input size; got --imgsz {', '.join(map(str, sizes))}: "
            "pass one --imgsz, or omit --model to time a random-weight YOLOv8n at each size"
        )
    origin = provenance(allow_dirty=allow_dirty)  # before the run: a refusal costs nothing

    def say(line: str) -> None:
        click.echo(line, err=True)

    mqtt, skipped = _pick_broker(no_mqtt, mqtt_host, mqtt_port, say)
    modes = {"both": (True, False), "fsync": (True,), "no-fsync": (False,)}[outbox]
    from lineguard.benchmarks.floors import best_floors, measure_floors
    from lineguard.benchmarks.latency import add_floors

    say(f"measuring this CPU's matmul floors on {threads} threads ...")
    at_start = measure_floors(threads=threads, size=floor_size)
    reports = []
    with tempfile.TemporaryDirectory(prefix="lineguard-bench-") as tmp:
        for imgsz in dict.fromkeys(sizes or [None]):
            reports.append(
                _latency_at(
                    model_path,
                    imgsz,
                    Path(tmp) / f"model-{imgsz}",
                    backends=backends,
                    precisions=precisions,
                    int8_model=int8_model,
                    weights=weights,
                    say=say,
                    no_ultralytics=no_ultralytics,
                    threads=threads,
                    frames=frames,
                    frame_size=size,
                    warmup=warmup,
                    conf=conf,
                    iou=iou,
                    data=data,
                    split=split,
                    mqtt=mqtt,
                    outbox_modes=modes,
                    frame_store=frame_store_share if frame_store else None,
                    omp_wait_policy=omp_wait_policy,
                )
            )
    say("measuring the floors again, to keep the best of the run's start and end ...")
    floors = best_floors(at_start, measure_floors(threads=threads, size=floor_size))
    for report in reports:
        add_floors(report, floors, report.gflops or 0.0)
        report.provenance = origin
        if mqtt is None:
            report.mqtt["skipped"] = skipped
    paths = write_report(reports, out_dir, name)
    click.echo(paths["markdown"].read_text())
    click.echo("wrote " + ", ".join(str(p) for p in paths.values()))


def _latency_at(
    model_path: Path | None,
    imgsz: int | None,
    build_dir: Path,
    *,
    backends: Sequence[str],
    precisions: Sequence[str],
    int8_model: Path | None,
    weights: Path | None,
    say: Callable[[str], None],
    no_ultralytics: bool,
    **options: Any,
) -> LatencyReport:
    """One size: the given model (or a random-weight YOLOv8n built at ``imgsz``), every variant."""
    from lineguard.benchmarks.floors import model_gflops
    from lineguard.benchmarks.latency import run_latency_benchmark

    built = model_path is None
    if model_path is None:
        from lineguard.benchmarks.models import build_random_yolo_onnx

        say(f"building a random-weight YOLOv8n at {imgsz or 320} px ...")
        model_path = build_random_yolo_onnx(build_dir, imgsz=imgsz or 320, name="bench-yolov8n")
    _check_imgsz((model_path, int8_model), imgsz)
    if weights is None:
        weights = _weights_of(model_path)
    if weights is None and "openvino" in backends and not no_ultralytics:
        say(
            "ultralytics' own OpenVINO export skipped: no .pt beside the model or in its card's "
            "training run (pass --weights)"
        )
    report = run_latency_benchmark(
        model_path,
        variants=_variants(backends, precisions, model_path, int8_model),
        compare_ultralytics=not no_ultralytics,
        ultralytics_weights=weights,
        say=say,
        **options,
    )
    report.gflops = model_gflops(model_path)
    if built:
        report.settings["model_label"] = "random-weight YOLOv8n (built for this run)"
    return report


@bench.command("frame-store")
@click.option("--minutes", type=click.FloatRange(0, min_open=True), default=10.0, show_default=True)
@click.option("--fps", type=click.FloatRange(0, 1000, min_open=True), default=10.0, show_default=True)
@click.option("--size", type=click.IntRange(64, 4096), default=640, show_default=True, help="Frame side, px.")
@click.option("--max-bytes", type=click.IntRange(64 * 1024), default=8 * 1024 * 1024, show_default=True)
@click.option("--json-out", type=click.Path(path_type=Path, dir_okay=False), default=None)
@click.option("--allow-dirty", is_flag=True, help=ALLOW_DIRTY_HELP)
def frame_store_soak(
    minutes: float, fps: float, size: int, max_bytes: int, json_out: Path | None, allow_dirty: bool
) -> None:
    """Soak the frame store at the camera's full rate (every frame kept) and report its peak bytes."""
    import json

    from lineguard.benchmarks.frame_store import run_soak

    origin = provenance(allow_dirty=allow_dirty) if json_out is not None else None
    report = run_soak(minutes * 60.0, fps=fps, size=size, max_bytes=max_bytes)
    for line in report.lines():
        click.echo(line)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps({"provenance": origin, **report.to_dict()}, indent=2) + "\n")


@bench.command()
@click.option("--stations", type=click.IntRange(2, 500), default=20, show_default=True)
@click.option(
    "--fps", type=click.FloatRange(0.1, 30), default=2.0, show_default=True, help="Each station's rate."
)
@click.option(
    "--soak-units",
    type=click.IntRange(1),
    default=10,
    show_default=True,
    help="Units per canary in the soak.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("benchmarks/results"),
    show_default=True,
    help="Folder for fleet_<N>.json and .md.",
)
@click.option("--allow-dirty", is_flag=True, help=ALLOW_DIRTY_HELP)
def fleet(stations: int, fps: float, soak_units: int, out: Path, allow_dirty: bool) -> None:
    """Start N station processes on one broker; time a good and a bad canary rollout; count the traffic."""
    import json

    from lineguard.benchmarks.fleet import fleet_markdown, run_fleet_check
    from lineguard.benchmarks.mqtt_delivery import run_mosquitto

    origin = provenance(allow_dirty=allow_dirty)  # before the run: a refusal costs nothing
    with tempfile.TemporaryDirectory(prefix="lineguard-fleet-") as tmp, run_mosquitto(Path(tmp)) as port:
        report = run_fleet_check(Path(tmp) / "fleet", port, stations=stations, fps=fps, soak_units=soak_units)
    for line in report.lines():
        click.echo(line)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"fleet_{stations}"
    stem.with_suffix(".json").write_text(
        json.dumps({"provenance": origin, **report.to_dict()}, indent=2) + "\n"
    )
    stem.with_suffix(".md").write_text(fleet_markdown(report, origin))
    click.echo(f"wrote {stem}.json and {stem}.md")


@bench.command("opcua")
@click.option(
    "--model",
    "model_path",
    type=ModelPathType(),
    default=None,
    help="ONNX model with model_card.json beside it; default: a random-weight YOLOv8n at 160 px built now.",
)
@click.option("--units", type=click.IntRange(10), default=300, show_default=True)
@click.option("--triggers", type=click.IntRange(1), default=50, show_default=True)
@click.option("--fps", type=click.FloatRange(1, 100), default=20.0, show_default=True)
@click.option("--mqtt-host", default="127.0.0.1", show_default=True)
@click.option("--mqtt-port", type=click.IntRange(1, 65535), default=1883, show_default=True)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Write NAME.{json,md} with provenance here (e.g. benchmarks/results); default: print only.",
)
@click.option("--name", default="opcua", show_default=True, help="Report file stem.")
@click.option("--allow-dirty", is_flag=True, help=ALLOW_DIRTY_HELP)
def opcua(
    model_path: Path | None,
    units: int,
    triggers: int,
    fps: float,
    mqtt_host: str,
    mqtt_port: int,
    out_dir: Path | None,
    name: str,
    allow_dirty: bool,
) -> None:
    """A verdict's OPC UA data change vs its MQTT arrival (1 ms publishing), and Trigger's round trip."""
    import json
    import socket

    from lineguard.benchmarks.latency_mqtt import broker_answers
    from lineguard.benchmarks.opcua_mirror import OpcuaBenchSettings, run_opcua_benchmark, write_opcua_report

    origin = provenance(allow_dirty=allow_dirty or out_dir is None)  # before the run: a refusal costs nothing
    if not broker_answers(mqtt_host, mqtt_port):
        raise InputError(
            f"no MQTT broker answered at {mqtt_host}:{mqtt_port}; start one or pass --mqtt-host/--mqtt-port"
        )

    def say(line: str) -> None:
        click.echo(line, err=True)

    with tempfile.TemporaryDirectory(prefix="lineguard-bench-opcua-") as tmp:
        if model_path is None:
            from lineguard.benchmarks.models import build_random_yolo_onnx

            say("building a random-weight YOLOv8n at 160 px ...")
            model_path = build_random_yolo_onnx(Path(tmp) / "model", imgsz=160, name="bench-yolov8n")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        settings = OpcuaBenchSettings(model_path, mqtt_host, mqtt_port, port, units, triggers, fps)
        report = run_opcua_benchmark(settings, Path(tmp), say)
    report = {"provenance": origin, **report}
    if out_dir is None:
        click.echo(json.dumps(report, indent=2))
        return
    paths = write_opcua_report(report, out_dir, name)
    click.echo(paths["markdown"].read_text())
    click.echo("wrote " + ", ".join(str(p) for p in paths.values()))


def _pick_broker(
    no_mqtt: bool, host: str, port: int, say: Callable[[str], None]
) -> tuple[tuple[str, int] | None, str]:
    """``(host, port)`` of the broker for the end-to-end leg, or None and why it is skipped."""
    from lineguard.benchmarks.latency_mqtt import broker_answers

    if no_mqtt:
        return None, "skipped (--no-mqtt)"
    if broker_answers(host, port):
        return (host, port), "skipped (--no-mqtt)"
    skipped = f"skipped: no MQTT broker answered at {host}:{port}"
    say(f"end to end via MQTT {skipped} (start one or pass --mqtt-host/--mqtt-port)")
    return None, skipped


def _check_imgsz(paths: Iterable[Path | None], imgsz: int | None) -> None:
    """An explicit ``--imgsz`` must match every given model's input size."""
    from lineguard.messages import ModelCard

    for path in paths:
        if path is not None and imgsz is not None:
            card = ModelCard.load(path.parent / "model_card.json")
            if card.input_size != imgsz:
                raise InputError(
                    f"--imgsz {imgsz} does not match {path.name}'s input size {card.input_size}; "
                    "omit --imgsz or export the model at that size"
                )


def _variants(
    backends: Sequence[str], precisions: Sequence[str], model_path: Path, int8_model: Path | None
) -> list[Variant]:
    """The station default; each backend once, OpenVINO at every precision asked for, the others in
    fp32; the --int8-model copy; and every variant the card lists (marked certified or not)."""
    from lineguard.benchmarks.latency import Variant, card_variants

    variants = []
    for backend in dict.fromkeys(backends):
        for precision in dict.fromkeys(precisions) if backend == "openvino" else ("fp32",):
            variants.append(Variant(backend, precision, model_path))
        if int8_model is not None:
            variants.append(Variant(backend, "int8", int8_model))
    listed = card_variants(model_path)
    marked = {(v.backend, v.precision, v.model_path) for v in listed}
    asked = [v for v in variants if (v.backend, v.precision, v.model_path) not in marked]
    return [Variant.default(model_path), *asked, *listed]
