"""Bring your own YOLO: an ultralytics ``.onnx`` or ``.pt`` becomes a model folder a station serves.

An engineer who already has a YOLO detector should not need a lineguard training run to benchmark
or deploy it. ultralytics writes what the card needs into every export's metadata (``task``,
``names``, ``imgsz``), so the card is built from the file's own metadata and its graph's static
shapes, read through onnxruntime alone: an edge install (no torch) can import an ONNX. A ``.pt``
needs the ``train`` extra and goes through export's own ONNX exporter first, then the same checks;
it is a pickle, which runs code as it loads, so only a trusted checkpoint may be imported. What the
station's letterbox and decoder cannot feed or read is refused in one line: another task, a
dynamic or non-square input, an unknown output layout, missing class names, a file larger than a
station downloads, or bytes onnxruntime cannot parse (never echoed).

Thresholds start as the uncalibrated default; with a labeled dataset they are calibrated on its
calib split (else val, with a warning) by training's calibration, and the targets and achieved
rates go into the card as ``lineguard calibrate --write`` puts them.
"""

from __future__ import annotations

import ast
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from pydantic import ValidationError

from lineguard.config import PolicyConfig, RegistryConfig
from lineguard.datasets import read_class_names
from lineguard.errors import InputError, MissingDependencyError, ModelError, validation_message
from lineguard.inference import CARD_NAME, DEFAULT_THRESHOLD
from lineguard.messages import ModelCard, sha256_file
from lineguard.training.calibrate import calibrate, calibration_split
from lineguard.training.evaluate import evaluate
from lineguard.training.export import _export_onnx, _safe
from lineguard.training.variants import MODEL_FILE, write_calibration

__all__ = ["ImportedModel", "import_model", "read_yolo_onnx"]

_MAX_NAMES_CHARS: Final = 64 * 1024  # 1000 classes of 60 characters fit; a megabyte of names does not
_MAX_CLASSES: Final = 1000
_CLASS_NAME: Final = re.compile(r"[^\x00-\x1f\x7f]{1,64}")
_TASK: Final = re.compile(r"[a-z]{1,16}")
_EXPORT_HINT: Final = "export it with ultralytics: YOLO('best.pt').export(format='onnx', imgsz=640)"


@dataclass(frozen=True)
class ImportedModel:
    """What the file says about itself, checked against what the station can serve."""

    classes: list[str]
    input_size: int
    ultralytics: str  # the ultralytics version that exported it, "" when not recorded


def _mib(size: int) -> str:
    return f"{size / 2**20:.0f} MiB" if size >= 2**20 else f"{size} bytes"


def _check_size(path: Path, max_bytes: int) -> None:
    size = path.stat().st_size
    if size > max_bytes:
        raise ModelError(
            f"{path.name} is {_mib(size)}, more than the {_mib(max_bytes)} a station downloads "
            "(registry.max_model_bytes); pick a smaller model or raise that limit"
        )


def _session(path: Path) -> Any:
    try:
        import onnxruntime as ort
    except ModuleNotFoundError as exc:
        raise MissingDependencyError("onnxruntime", "edge") from exc
    options = ort.SessionOptions()
    options.log_severity_level = 4  # its parse errors quote the file; ours names the problem instead
    try:
        return ort.InferenceSession(
            path.read_bytes(), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception:  # onnxruntime raises its own untyped errors for a bad file
        raise ModelError(f"{path.name} is not an ONNX model onnxruntime can read; {_EXPORT_HINT}") from None


def _names(path: Path, text: str | None) -> list[str]:
    """ultralytics' ``names`` metadata (a Python dict literal ``{0: 'scratch', ...}``) as a list."""
    if not text:
        raise ModelError(f"{path.name} has no class names in its metadata; {_EXPORT_HINT}")
    parsed: object = None
    if len(text) <= _MAX_NAMES_CHARS:
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError, RecursionError, MemoryError):
            parsed = None
    ok = (
        isinstance(parsed, dict)
        and 0 < len(parsed) <= _MAX_CLASSES
        and sorted(parsed) == list(range(len(parsed)))
        and all(isinstance(v, str) and _CLASS_NAME.fullmatch(v) for v in parsed.values())
    )
    if not ok or not isinstance(parsed, dict):
        raise ModelError(
            f"{path.name}'s class names metadata is not a map of 0..N-1 to names of 1-64 printable "
            f"characters; {_EXPORT_HINT}"
        )
    names = [str(parsed[i]) for i in range(len(parsed))]
    if len(set(names)) != len(names):
        raise ModelError(f"{path.name} names a class twice; give every class its own name and export again")
    return names


def read_yolo_onnx(path: Path, *, max_bytes: int | None = None) -> ImportedModel:
    """Classes and input size of an ultralytics ONNX export, or one line saying why it cannot serve."""
    _check_size(path, max_bytes or RegistryConfig().max_model_bytes)
    session = _session(path)
    meta: dict[str, str] = dict(session.get_modelmeta().custom_metadata_map)
    task = meta.get("task")
    if task is None:
        raise ModelError(f"{path.name} has no ultralytics metadata (task, names, imgsz); {_EXPORT_HINT}")
    if task != "detect":
        what = task if _TASK.fullmatch(task) else "non-detection"
        raise ModelError(
            f"{path.name} is a {what} model; lineguard serves YOLO detection models only "
            "(train or pick a detect model, e.g. from yolo11n.yaml)"
        )
    classes = _names(path, meta.get("names"))
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or not outputs:
        raise ModelError(f"{path.name} has {len(inputs)} inputs; the station feeds one image")
    shape = list(inputs[0].shape)
    if len(shape) != 4 or not all(isinstance(d, int) for d in shape):
        raise ModelError(
            f"{path.name} has a dynamic input shape; the station feeds a fixed square image: "
            "export with dynamic=False and a fixed imgsz"
        )
    batch, channels, height, width = shape
    if (batch, channels) != (1, 3):
        raise ModelError(f"{path.name} takes batch {batch} of {channels} channels; export with batch=1 (RGB)")
    if height != width:
        raise ModelError(
            f"{path.name} takes a {width}x{height} input; the station's letterbox feeds a square one: "
            "export with one imgsz (imgsz=640)"
        )
    out = [d if isinstance(d, int) else "?" for d in outputs[0].shape]  # a dim's name is the file's text
    if len(out) != 3 or out[0] != 1 or out[1] != 4 + len(classes) or not isinstance(out[2], int):
        raise ModelError(
            f"{path.name} outputs {out}, not the [1, {4 + len(classes)}, anchors] of a YOLOv8/YOLO11 "
            "detect head for its classes; export without the end-to-end/NMS head (nms=False, "
            "end2end=False)"
        )
    version = meta.get("version", "")
    return ImportedModel(classes, int(height), version if re.fullmatch(r"[0-9a-z.+-]{1,32}", version) else "")


def _pt_imgsz(weights: Path, imgsz: int | None) -> int:
    """The .pt's training size (or ``imgsz``), after refusing a checkpoint of another task."""
    from lineguard.training.offline import load_ultralytics

    ultralytics = load_ultralytics(threads=1)
    try:
        model: Any = ultralytics.YOLO(str(weights))  # ultralytics' loose annotations
    except Exception:  # a damaged or foreign checkpoint fails in torch or ultralytics, untyped
        raise ModelError(f"{weights.name} is not an ultralytics checkpoint torch can load") from None
    task = str(model.task)
    if task != "detect":
        what = task if _TASK.fullmatch(task) else "non-detection"
        raise ModelError(f"{weights.name} is a {what} model; lineguard serves YOLO detection models only")
    trained = (getattr(model, "ckpt", None) or {}).get("train_args", {}).get("imgsz")
    return int(imgsz or (trained if isinstance(trained, int) else 640))


def import_model(
    source: Path,
    out: Path,
    *,
    name: str | None = None,
    version: str | None = None,
    imgsz: int | None = None,
    data: Path | None = None,
    split: str | None = None,
    max_escape: float = 0.005,
    max_overkill: float | None = None,
    policy: PolicyConfig | None = None,
    max_bytes: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> ModelCard:
    """Write ``out/model.onnx`` + card from ``source`` (a .pt is exported first); calibrate on ``data``."""
    say = progress or (lambda _msg: None)
    if source.suffix not in {".onnx", ".pt"} or not source.is_file():
        raise InputError(
            f"{source} is not a .onnx or .pt file; import an ultralytics YOLO export or checkpoint"
        )
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} exists and is not empty; imported models are immutable, pick another --out")
    limit = max_bytes or RegistryConfig().max_model_bytes
    _check_size(source, limit)
    data_classes = read_class_names(data) if data is not None else None  # before any work
    if source.suffix == ".pt":
        size = _pt_imgsz(source, imgsz)
        say(f"exporting {source.name} to ONNX (static {size}x{size}) with lineguard export's exporter")
        with tempfile.TemporaryDirectory(prefix="lineguard-import-") as tmp:
            copy = Path(tmp) / source.name  # ultralytics writes its export beside the weights it loads
            shutil.copyfile(source, copy)
            onnx_path = _export_onnx(copy, size, out)
        try:
            found = read_yolo_onnx(onnx_path, max_bytes=limit)
        except ModelError:
            shutil.rmtree(out)
            raise
    else:
        found = read_yolo_onnx(source, max_bytes=limit)
        if imgsz is not None and imgsz != found.input_size:
            raise InputError(
                f"--imgsz {imgsz}: {source.name} is fixed at {found.input_size} px; export it again at "
                f"{imgsz} or omit --imgsz"
            )
        out.mkdir(parents=True, exist_ok=True)
        onnx_path = out / MODEL_FILE
        shutil.copyfile(source, onnx_path)
    if data_classes is not None and data_classes != found.classes:
        shutil.rmtree(out)
        raise InputError(
            f"{data} names classes {data_classes}, the model {found.classes}; calibrate on a dataset "
            "of the model's classes, in its order"
        )
    created = datetime.now(UTC)
    try:
        card = ModelCard(
            name=_safe(name or source.stem),
            version=version or f"{created:%Y%m%d.%H%M%S}",
            sha256=sha256_file(onnx_path),
            classes=found.classes,
            input_size=found.input_size,
            thresholds=dict.fromkeys(found.classes, DEFAULT_THRESHOLD),
            created_at=created,
        )
    except ValidationError as exc:
        shutil.rmtree(out)
        raise InputError(f"cannot make its model card: {validation_message(exc)}") from None
    card_path = out / CARD_NAME
    card.save(card_path)
    say(
        f"{source.name}: {len(found.classes)} classes, {found.input_size} px input"
        + (f", exported by ultralytics {found.ultralytics}" if found.ultralytics else "")
    )
    if data is None:
        return ModelCard.load(card_path)
    cal_split, warning = calibration_split(data, split)
    if warning:
        say(f"warning: {warning}")
    say(f"calibrating thresholds on {data} split {cal_split} for escape <= {100 * max_escape:.2f}%")
    evaluation = evaluate(onnx_path, data, split=cal_split, thresholds=card.thresholds)
    calibration = calibrate(evaluation, max_escape, max_overkill=max_overkill, policy=policy)
    say(calibration.verdict())
    return write_calibration(card_path, calibration)
