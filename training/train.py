"""Train a YOLO detector on a dataset version, offline and reproducibly, into a run folder.

Anyone holding a model must be able to say what made it, so the run folder keeps, beside
ultralytics' weights, curves and plots, a ``lineguard_run.json``: the resolved config and seed,
the dataset version's manifest hash (checked against the files before training), the git revision
of the code and the hardware. Training starts only from a model YAML or a local ``.pt``: nothing
is downloaded. Augmentation is the albumentations list from the config, handed to ultralytics'
``augmentations`` hook so it runs inside the training data loader.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

import lineguard
from lineguard.errors import ConfigError, DatasetError, InputError, ModelError
from lineguard.messages import DatasetManifest
from lineguard.provenance import cpu_model, git_revision
from lineguard.training.augment import build_transforms
from lineguard.training.config import TrainConfig
from lineguard.training.offline import load_ultralytics
from lineguard.training.station_val import station_trainer

__all__ = [
    "RUN_FILE",
    "TrainResult",
    "hardware_summary",
    "load_run",
    "resolve_model_source",
    "train",
]

RUN_FILE = "lineguard_run.json"
RUN_SCHEMA = "lineguard.training_run/1"


@dataclass(frozen=True)
class TrainResult:
    run: Path
    weights: Path
    map50: float
    map50_95: float
    duration_s: float
    epochs: int = 0


def resolve_model_source(model: str) -> str:
    """A local .pt/.yaml path, or a model YAML bundled with ultralytics; never a download."""
    path = Path(model).expanduser()
    if path.suffix == ".pt":
        if not path.is_file():
            raise ModelError(
                f"--model {model} is not a local file and weights cannot be downloaded offline; "
                "pass a local .pt path or a model YAML such as yolov8n.yaml or yolo11n.yaml"
            )
        return str(path.resolve())
    if path.suffix not in {".yaml", ".yml"}:
        raise ModelError(f"--model must be a model YAML or a local .pt file; got {model!r}")
    if path.is_file():
        return str(path.resolve())
    load_ultralytics()
    from ultralytics.nn.tasks import yaml_model_load

    try:
        yaml_model_load(model)  # maps the scale letter: yolov8n.yaml -> yolov8.yaml, scale n
        return model
    except (FileNotFoundError, AssertionError) as exc:
        raise ModelError(
            f"model YAML {model!r} is neither a local file nor bundled with ultralytics; "
            "try yolov8n.yaml or yolo11n.yaml"
        ) from exc


def hardware_summary(device: str = "cpu") -> str:
    """One line naming the CPU (and GPU when one is used), for run records and benchmarks."""
    text = f"{cpu_model()}, {os.cpu_count()} cores"
    if device not in {"cpu", ""}:
        import torch

        if torch.cuda.is_available():
            text += f"; GPU {torch.cuda.get_device_name(0)}"
    return text


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "0" if torch.cuda.is_available() else "cpu"
    if device != "cpu" and not torch.cuda.is_available():
        raise InputError(f"--device {device} asks for CUDA but torch sees no GPU; use --device cpu or auto")
    return device


def _check_dataset(data: Path) -> DatasetManifest:
    if not (data / "data.yaml").is_file():
        raise DatasetError(f"{data} has no data.yaml; pass a dataset version made by 'lineguard data import'")
    manifest = DatasetManifest.load(data)
    changed = manifest.verify(data)
    if changed:
        raise DatasetError(
            f"dataset version {data} no longer matches its manifest ({len(changed)} files changed, "
            f"e.g. {changed[0]}); import a new version instead of editing one"
        )
    return manifest


def _check_mlflow() -> None:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return
    try:
        import mlflow  # noqa: F401
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"MLFLOW_TRACKING_URI is set ({uri}) but the 'mlflow' package is not installed; "
            "pip install mlflow, or unset MLFLOW_TRACKING_URI"
        ) from exc


def load_run(run: Path) -> dict[str, Any]:
    """The run record written by ``train``; a clear error if ``run`` is not a training run."""
    path = run / RUN_FILE
    try:
        record: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise InputError(
            f"{run} is not a lineguard training run (no {RUN_FILE}); pass the --out of 'lineguard train'"
        ) from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from exc
    return record


def train(
    data: Path,
    out: Path,
    cfg: TrainConfig,
    *,
    progress: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train ``cfg.model`` on dataset version ``data``; everything lands in ``out``."""
    if out.exists() and any(out.iterdir()):
        raise InputError(f"run folder {out} exists and is not empty; pick a new --out")
    manifest = _check_dataset(data)
    source = resolve_model_source(cfg.model)
    _check_mlflow()
    load_ultralytics(threads=cfg.threads)
    from ultralytics import YOLO

    device = _resolve_device(cfg.device)
    out.mkdir(parents=True, exist_ok=True)
    record = _start_record(cfg, data, source, device, manifest.content_hash, manifest.classes)
    (out / "train_config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    _write_record(out, record)

    model = YOLO(source)
    if progress is not None:
        plan = (
            f"for up to {cfg.time_h:g} h (ultralytics sets the epoch count from the time an epoch takes)"
            if cfg.time_h is not None
            else f"for {cfg.epochs} epochs"
        )
        progress(f"training {cfg.model} {plan} at {cfg.imgsz} px on {device}: {data} -> {out}")
        model.add_callback("on_fit_epoch_end", _epoch_reporter(progress, cfg.time_h))
    start = time.monotonic()
    try:
        model.train(trainer=station_trainer(), **_train_arguments(cfg, data, out, device))
    except BaseException:
        record |= {"status": "failed", "duration_s": round(time.monotonic() - start, 1)}
        _write_record(out, record)
        raise
    return _finish(model, cfg, out, record, time.monotonic() - start)


def _start_record(
    cfg: TrainConfig, data: Path, source: str, device: str, dataset_hash: str, classes: list[str]
) -> dict[str, Any]:
    """The run record as training starts: what, from where, on what, by which versions."""
    return {
        "schema": RUN_SCHEMA,
        "config": cfg.model_dump(mode="json"),
        "model_source": source,
        "seed": cfg.seed,
        "device": device,
        "data": str(data.resolve()),
        "dataset_hash": dataset_hash,
        "classes": classes,
        "git_revision": git_revision(),
        "versions": _versions(),
        "hardware": hardware_summary(device),
        "started_at": datetime.now(UTC).isoformat(),
        "status": "running",
    }


def _train_arguments(cfg: TrainConfig, data: Path, out: Path, device: str) -> dict[str, Any]:
    """ultralytics' ``train`` keywords for ``cfg``."""
    extra: dict[str, Any] = {"lr0": cfg.lr0} if cfg.lr0 is not None else {}
    if cfg.time_h is not None:
        extra["time"] = cfg.time_h
    return {
        "data": str((data / "data.yaml").resolve()),
        "epochs": cfg.epochs,
        "imgsz": cfg.imgsz,
        "batch": cfg.batch,
        "seed": cfg.seed,
        "deterministic": True,
        "device": device,
        "workers": cfg.workers,
        "save_dir": str(out.resolve()),
        "exist_ok": True,
        "amp": False,  # the AMP check downloads weights
        "plots": cfg.plots,
        "patience": cfg.patience,
        "optimizer": cfg.optimizer,
        "nbs": cfg.nbs,
        "warmup_epochs": cfg.warmup_epochs,
        "mosaic": cfg.mosaic,
        "close_mosaic": cfg.close_mosaic,
        "cache": "ram" if cfg.cache else False,
        "augmentations": build_transforms(cfg.augment) or None,
        # flips are albumentations' job here (configured probabilities), not ultralytics'
        "fliplr": 0.0,
        "flipud": 0.0,
        "verbose": False,
        **extra,
    }


def _finish(model: Any, cfg: TrainConfig, out: Path, record: dict[str, Any], duration: float) -> TrainResult:
    """The result of a finished run, recorded as done; a run without ``best.pt`` is an error."""
    weights = out / "weights" / "best.pt"
    if not weights.is_file():
        raise ModelError(f"training finished without {weights}; see the log in {out}")
    metrics = model.trainer.metrics if model.trainer is not None else {}
    epochs_run = int(getattr(model.trainer, "epoch", cfg.epochs - 1)) + 1
    result = TrainResult(
        run=out,
        weights=weights,
        map50=float(metrics.get("metrics/mAP50(B)", 0.0)),
        map50_95=float(metrics.get("metrics/mAP50-95(B)", 0.0)),
        duration_s=duration,
        epochs=epochs_run,
    )
    record |= {
        "status": "done",
        "finished_at": datetime.now(UTC).isoformat(),
        "duration_s": round(duration, 1),
        "weights": "weights/best.pt",
        "imgsz": cfg.imgsz,
        "epochs_run": epochs_run,
        "val_metrics": {"map50": result.map50, "map50_95": result.map50_95},
    }
    _write_record(out, record)
    return result


def _write_record(out: Path, record: dict[str, Any]) -> None:
    (out / RUN_FILE).write_text(json.dumps(record, indent=2) + "\n")


def _versions() -> dict[str, str]:
    import torch
    import ultralytics

    return {
        "lineguard": lineguard.__version__,
        "ultralytics": ultralytics.__version__,
        "torch": torch.__version__,
    }


def _epoch_reporter(progress: Callable[[str], None], time_h: float | None) -> Callable[[Any], None]:
    """One line per epoch against the plan stated at the start: ``n/N``, or time used of the budget
    (under ``time_h`` ultralytics re-plans the epoch count every epoch, so an ``n/N`` would wander)."""
    started = time.monotonic()

    def report(trainer: Any) -> None:
        m = trainer.metrics or {}
        loss = trainer.tloss
        items = loss.items() if isinstance(loss, dict) else enumerate([] if loss is None else loss.tolist())
        loss_text = " ".join(f"{k} {float(v):.3f}" for k, v in items) or "-"
        if trainer.epoch >= trainer.epochs:
            head = "final (best.pt)"
        elif time_h is not None:
            used = (time.monotonic() - started) / 60
            head = f"epoch {trainer.epoch + 1} ({used:.0f} of {60 * time_h:.0f} min)"
        else:
            head = f"epoch {trainer.epoch + 1}/{trainer.epochs}"
        progress(
            f"{head}  loss {loss_text}  "
            f"mAP50 {float(m.get('metrics/mAP50(B)', 0)):.3f}  "
            f"mAP50-95 {float(m.get('metrics/mAP50-95(B)', 0)):.3f}"
        )

    return report
