"""``lineguard edge``: run the inspection daemon, or self-check a station's config and model.

``edge run --config station.yaml`` starts the daemon in the foreground with one JSON log object per
line on stderr (``lineguard.logs``: ``ts``, ``level``, ``logger``, ``event`` or ``msg``, plus the
event's fields), and
prints one summary line on stdout when it stops (SIGTERM/SIGINT finish the unit in flight, exit 0):
units by verdict, frames skipped by reason, last seq and verdicts not yet delivered. ``--samples N``
adds a PNG grid of up to N decided units with their boxes (FAIL, NO_DECISION and PASS in turn) and
a second line naming it.
``edge check --config station.yaml`` loads the config (an error there is one ``error:`` line, exit
2) and the model, runs one synthetic frame through preprocess, inference and the verdict policy,
says how many sample frames (``--frames DIR``, else the configured folder or video) the
image-quality gate would reject with the model's bounds (``WARN`` above 0.5%), and prints one line
per check plus ``OK`` or ``FAILED`` (exit 1); an image build runs it to prove the install works
without a camera or broker.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from lineguard.config import LineguardConfig

__all__ = ["CONFIG_OPTION", "FRAMES_OPTION", "edge"]

CONFIG_OPTION = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="Station YAML (see configs/station.example.yaml).",
)

FRAMES_OPTION = click.option(
    "--frames",
    "frames_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Folder of sample frames for the image-quality check (default: the configured image "
    "folder or video).",
)


@click.group()
def edge() -> None:
    """Run and check the edge inspection daemon."""


@edge.command()
@CONFIG_OPTION
@click.option("--max-units", type=click.IntRange(min=1), default=None, help="Stop after this many units.")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
@click.option(
    "--samples",
    type=click.IntRange(min=0, max=64),
    default=0,
    show_default=True,
    help="At the end, draw up to this many decided units with their boxes into one PNG.",
)
@click.option(
    "--samples-out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Where the --samples PNG goes [default: <station.data_dir>/samples-<UTC time>.png].",
)
def run(
    config_path: Path, max_units: int | None, log_level: str, samples: int, samples_out: Path | None
) -> None:
    """Inspect units until stopped (SIGTERM/SIGINT) or a finite source ends."""
    from datetime import UTC, datetime

    from lineguard.config import load_config
    from lineguard.edge.daemon import EdgeDaemon
    from lineguard.errors import InputError
    from lineguard.logs import setup_json_logging

    cfg = load_config(config_path)
    out = None
    if samples:  # checked before the run, so a long run never ends without its picture
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        out = samples_out or cfg.station.data_dir / f"samples-{stamp}.png"
        _check_writable(out)
    setup_json_logging(log_level)
    daemon = EdgeDaemon(cfg, samples=samples)
    summary = daemon.run(max_units=max_units)
    click.echo(summary.line())
    if daemon.samples is not None and out is not None:
        try:
            drawn = daemon.samples.write(out)
        except OSError as exc:
            raise InputError(f"cannot write the samples PNG {out}: {exc.strerror or exc}") from None
        click.echo(f"samples: {drawn} units in {out}" if drawn else "samples: no unit decided, nothing drawn")


def _check_writable(out: Path) -> None:
    """The folder of ``out`` exists (made if need be) and may be written, else one line naming the fix."""
    import os

    from lineguard.errors import InputError

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        why = f"{out.parent} is a file, not a folder"
        raise InputError(f"cannot write the samples PNG {out}: {why}; pass another --samples-out") from None
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise InputError(f"cannot write the samples PNG {out}: {why}; pass another --samples-out") from None
    if out.is_dir() or not os.access(out.parent, os.W_OK):
        raise InputError(f"cannot write the samples PNG {out}: not writable; pass another --samples-out")


def _line(status: str, name: str, detail: str) -> None:
    click.echo(f"{status:<5} {name:<10} {detail}")


@edge.command()
@CONFIG_OPTION
@click.option("--camera/--no-camera", default=False, show_default=True, help="Also read one camera frame.")
@FRAMES_OPTION
def check(config_path: Path, camera: bool, frames_dir: Path | None) -> None:
    """Self-check: config, model, one synthetic frame through the pipeline (exit 1 on failure)."""
    from lineguard.config import load_config
    from lineguard.edge.quality_screen import screen_station
    from lineguard.errors import LineguardError
    from lineguard.inference import Detector, QualityGate, VerdictPolicy, quality_bounds
    from lineguard.synthetic import render_unit

    failed = False
    cfg = load_config(config_path)  # a config error is one line on stderr, exit 2 (as for every command)
    _line(
        "OK",
        "config",
        f"{config_path} (station {cfg.station.line}/{cfg.station.station}, mode {cfg.mode}, "
        f"camera {cfg.camera.kind}, delivery {'mqtt' if cfg.mqtt.enabled else 'jsonl'})",
    )
    detector = None
    if cfg.model.path is None:
        _line("WARN", "model", "model.path not set: every unit would get NO_DECISION/no_model")
    else:
        try:
            detector = Detector.for_station(cfg.model.path, cfg)
            card = detector.card
            _line("OK", "model", f"{card.ref} sha256 {card.sha256[:12]}… on {detector.backend}")
            verdict = "WARN" if detector.variant_failure else "OK"
            _line(verdict, "precision", detector.variant_failure or detector.precision_choice)
        except LineguardError as exc:
            _line("FAIL", "model", str(exc))
            failed = True
    try:
        policy = VerdictPolicy(detector.card if detector else None, cfg.policy)
        gate = QualityGate(
            cfg.policy.quality,
            cfg.camera.frozen_frames,
            quality_bounds(cfg.policy.quality, detector.card.reference if detector else None),
        )
        size = detector.card.input_size if detector else cfg.camera.synthetic_imgsz
        image = render_unit(cfg.camera.synthetic_seed, 0, imgsz=size).image
        t0 = time.perf_counter()
        quality = gate.check(image)
        detections = detector.detect(image)[0] if detector else None
        decision = policy.decide(detections, quality=quality, elapsed_ms=(time.perf_counter() - t0) * 1000)
        ms = (time.perf_counter() - t0) * 1000
        _line(
            "OK",
            "pipeline",
            f"synthetic {size} px frame -> {decision.verdict.value}/{decision.reason.value} in {ms:.1f} ms "
            f"(thresholds {policy.thresholds_id})",
        )
    except LineguardError as exc:
        _line("FAIL", "pipeline", str(exc))
        failed = True
    finally:
        if detector is not None:
            detector.close()
    screen = screen_station(cfg, detector.card if detector else None, frames_dir)
    _line("OK" if screen.ok else "WARN", "quality", screen.detail)
    if screen.fix:
        _line("", "", f"fix: {screen.fix}")
    if camera:
        failed |= not _check_camera(cfg)
    click.echo("FAILED" if failed else "OK")
    if failed:
        click.get_current_context().exit(1)


def _check_camera(cfg: LineguardConfig) -> bool:
    from lineguard.edge.source_factory import open_source
    from lineguard.errors import LineguardError

    try:
        source = open_source(cfg.camera)
    except LineguardError as exc:
        _line("FAIL", "camera", str(exc))
        return False
    source.start()
    try:
        if source.frames_on_demand:  # a triggered camera: connected first, then one frame on request
            deadline = time.monotonic() + cfg.camera.watchdog_s
            while not source.health().up and time.monotonic() < deadline:
                time.sleep(0.05)
            if source.health().up and not source.station_triggered:
                _line(
                    "OK", "camera", f"{source.name}: connected; hardware-triggered, no frame without a pulse"
                )
                return True
            source.request_frame()
        frame = source.read_latest(cfg.camera.watchdog_s)
        health = source.health()
    finally:
        source.stop()
    if frame is None:
        _line("FAIL", "camera", f"{source.name}: no frame in {cfg.camera.watchdog_s:g} s ({health.detail})")
        return False
    h, w = frame.image.shape[:2]
    _line("OK", "camera", f"{source.name}: {w}x{h} frame")
    return True
