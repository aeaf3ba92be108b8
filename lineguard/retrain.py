"""``lineguard retrain``: QA's labels -> a new dataset version -> a better model on the line.

The flywheel's one command, so that nobody copies a file between labeling, training and the
registry: pull the finished Label Studio annotations as a new dataset version (parent + new),
fine-tune from the production model's weights, export and evaluate, register the candidate, run
the promotion gate against production on the frozen evaluation set, and with ``--auto-promote``
promote and roll out when the gate passes, then give the project's tasks still waiting for QA the
new model's boxes. Each step is an event in the registry's history. Like
``cli.py`` and ``demo.py`` this module is wiring across parts.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from lineguard.config import LineguardConfig, PolicyConfig, load_config
from lineguard.errors import InputError

if TYPE_CHECKING:
    from lineguard.labeling import LabelStudioClient
    from lineguard.registry import ModelVersion, Registry
    from lineguard.training.config import TrainConfig

__all__ = ["RetrainReport", "next_version", "retrain", "retrain_command"]


@dataclass(frozen=True)
class RetrainReport:
    dataset: Path
    new_tasks: int
    candidate: str
    gate_passed: bool
    gate_summary: str
    promoted: bool


def next_version(version: str) -> str:
    """``1.0.2`` -> ``1.0.3``; a version without a trailing number gets ``.1``."""
    match = re.search(r"(\d+)$", version)
    if match is None:
        return f"{version}.1"
    return version[: match.start()] + str(int(match.group(1)) + 1)


def retrain(
    cfg: LineguardConfig,
    *,
    name: str,
    project: str,
    parent_data: Path,
    out: Path,
    client: LabelStudioClient,
    epochs: int = 10,
    auto_promote: bool = False,
    accept_missed_target: str = "",
    train_cfg: TrainConfig | None = None,
    variants: bool = True,
    say: Callable[[str], None] = print,
) -> RetrainReport:
    """Run the loop once; ``client`` is a ``LabelStudioClient`` (passed in so tests choose the server).

    ``train_cfg`` holds the fine-tuning settings (batch, optimizer, threads, ...); its model,
    epochs and image size are replaced by production's weights, ``epochs`` and production's input
    size. ``variants`` False exports fp32 only (a shorter export); otherwise the gate re-checks
    every variant the export certified and decertifies, in the registry, one its frozen set does
    not bear out, while the candidate is still judged (and promoted) on fp32.
    """
    from lineguard.labeling import refresh_after_promotion
    from lineguard.registry import Registry, Stage, gate_from_config, publish_model
    from lineguard.releases import Signer
    from lineguard.training.export import export_run

    registry = Registry.from_config(cfg.registry)
    production = registry.production(name)
    if production is None:
        raise InputError(f"model {name!r} has no production version to improve; promote one first")
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} exists and is not empty; pick a new --out for this retraining")

    new_tasks = _pull(registry, production, client, project, parent_data, out, say)
    _train(registry, production, out, epochs, train_cfg, cfg.policy, say)

    version = next_version(production.version)
    say(f"3/5 export + register: {name}:{version}")
    model_dir = export_run(
        out / "run",
        out=out / "model",
        name=name,
        version=version,
        parent=production.version,
        variants=variants,
        progress=lambda m: say(f"    {m}"),
    )
    candidate = registry.add(model_dir, why=f"retrained on {new_tasks} QA-labeled frames")

    say(f"4/5 gate: {candidate.ref} against production {production.ref}")
    report = gate_from_config(
        cfg, registry, name, version, report_dir=out / "gate", accept_missed_target=accept_missed_target
    )
    say(f"    {report.summary}")

    promoted = False
    if auto_promote and report.passed:
        say(f"5/5 promote: {candidate.ref} to production and roll out")
        registry.promote(
            name,
            version,
            Stage.PRODUCTION,
            why="retrain --auto-promote, gate passed",
            gate=report.audit(out / "gate"),
            accept_missed_target=accept_missed_target,
        )
        if registry.stations(name):
            key = cfg.registry.signing_key
            signer = Signer.from_file(key) if key is not None else None
            publish_model(registry, name, cfg.mqtt, public_url=cfg.registry.public_url, signer=signer)
        promoted = True
        refresh_after_promotion(
            cfg, Path(f"{name}@{version}"), client=client, project=project, say=lambda m: say(f"    {m}")
        )
    else:
        say("5/5 promote: skipped (" + ("gate failed" if not report.passed else "no --auto-promote") + ")")
    return RetrainReport(out / "data", new_tasks, candidate.ref, report.passed, report.summary, promoted)


def _pull(
    registry: Registry,
    production: ModelVersion,
    client: LabelStudioClient,
    project: str,
    parent_data: Path,
    out: Path,
    say: Callable[[str], None],
) -> int:
    """Step 1: QA's finished annotations as a new dataset version; the number of new tasks."""
    from lineguard.labeling import pull_dataset

    say(f"1/5 pull: finished annotations of Label Studio project {project!r}")
    pulled = pull_dataset(client, project, out / "data", parent=parent_data)
    say(f"    {pulled.summary()}")
    if pulled.out is None or pulled.added == 0:
        raise InputError(
            f"Label Studio project {project!r} has no newly finished tasks: nothing to retrain on"
        )
    new_tasks = pulled.added
    registry.record(
        production.name,
        production.version,
        "retrain_data",
        why=f"{new_tasks} labeled tasks",
        detail={"dataset": str(out / "data"), "parent": str(parent_data)},
    )
    return new_tasks


def _train(
    registry: Registry,
    production: ModelVersion,
    out: Path,
    epochs: int,
    train_cfg: TrainConfig | None,
    policy: PolicyConfig,
    say: Callable[[str], None],
) -> None:
    """Step 2: fine-tune from production's weights at its input size, then calibrate like it."""
    from lineguard.training.config import TrainConfig
    from lineguard.training.train import train

    weights = Path(production.card.training_run) / "weights" / "best.pt"
    start_from = str(weights) if production.card.training_run and weights.is_file() else "yolov8n.yaml"
    say(f"2/5 train: {epochs} epochs from {start_from}")
    started = time.monotonic()
    settings = (train_cfg or TrainConfig(plots=False)).model_copy(
        update={"model": start_from, "epochs": epochs, "imgsz": production.card.input_size}
    )
    result = train(out / "data", out / "run", settings, progress=lambda line: say(f"    {line}"))
    calibrated = _calibrate_like_production(production.card.training_run, out / "run", policy, say)
    registry.record(
        production.name,
        production.version,
        "retrain_train",
        why=f"mAP50 {result.map50:.3f} in {time.monotonic() - started:.0f} s",
        detail={"run": str(out / "run"), "start_from": start_from, "thresholds": calibrated},
    )


def _calibrate_like_production(
    production_run: str | None, run: Path, policy: PolicyConfig, say: Callable[[str], None]
) -> dict[str, float] | None:
    """Calibrate the new run's thresholds with production's escape target, if production was calibrated.

    ``policy`` is the station's: its floor and review band bound the thresholds from below.

    Without this the candidate ships the 0.5 default while production ships calibrated
    thresholds, and the gate compares two policies instead of two models.
    """
    from lineguard.training.calibrate import CALIBRATION_FILE, calibrate_run

    if not production_run:
        return None
    found = Path(production_run) / CALIBRATION_FILE
    if not found.is_file():
        return None
    max_escape = float(json.loads(found.read_text())["max_escape"])
    calibration = calibrate_run(run, max_escape=max_escape, policy=policy)
    say(f"    thresholds calibrated like production's (max escape {max_escape:g}): {calibration.thresholds}")
    return calibration.thresholds


@click.command("retrain")
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="Station/registry config: registry root, gate, eval set, MQTT.",
)
@click.option("--model", "name", required=True, help="Model name in the registry.")
@click.option("--project", required=True, help="Label Studio project with the QA labels.")
@click.option(
    "--parent-data",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    required=True,
    help="The dataset version the production model was trained on.",
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="New folder for this round.")
@click.option("--url", default="", help="Label Studio URL [default: sampling.label_studio_url].")
@click.option("--token", default="", help="Label Studio token [default: sampling.label_studio_token_file].")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--auto-promote", is_flag=True, help="Promote and roll out when the gate passes.")
@click.option(
    "--no-variants",
    is_flag=True,
    help="Export fp32 only: no INT8/bf16 variants (a shorter export; the gate decertifies a variant "
    "its frozen set does not bear out, so this is not needed for the gate to pass).",
)
@click.option(
    "--accept-missed-target",
    default="",
    metavar="REASON",
    help="Let the gate pass a candidate that misses its calibration target (reason audited).",
)
def retrain_command(
    config_path: Path | None,
    name: str,
    project: str,
    parent_data: Path,
    out: Path,
    url: str,
    token: str,
    epochs: int,
    auto_promote: bool,
    no_variants: bool,
    accept_missed_target: str,
) -> None:
    """Pull QA labels, fine-tune, export, register, gate and (optionally) promote."""
    from lineguard.labeling import LabelStudioClient, read_token

    cfg = load_config(config_path)
    url = url or cfg.sampling.label_studio_url
    if not url:
        raise InputError("no Label Studio URL: pass --url or set sampling.label_studio_url")
    if not token and cfg.sampling.label_studio_token_file is not None:
        token = read_token(cfg.sampling.label_studio_token_file)
    report = retrain(
        cfg,
        name=name,
        project=project,
        parent_data=parent_data,
        out=out,
        client=LabelStudioClient(url, token),
        epochs=epochs,
        auto_promote=auto_promote,
        accept_missed_target=accept_missed_target,
        variants=not no_variants,
        say=click.echo,
    )
    click.echo(
        f"{report.candidate}: gate {'passed' if report.gate_passed else 'failed'}"
        f"{', promoted' if report.promoted else ''}"
    )
