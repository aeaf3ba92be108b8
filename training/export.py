"""Export a training run to what the edge runs: ``model.onnx`` + ``model_card.json``, checked.

The edge reads nothing but an ONNX file and its card, so the card must carry everything it needs:
classes, the static input size, per-class thresholds (from ``calibration.json`` when the run was
calibrated), metrics measured through the edge's own detector, the dataset hash, drift reference
statistics (brightness, contrast and sharpness measured by the edge's ``QualityGate`` on validation
images spread over the split, with what they were measured on and the training frames' range; top
confidences, per-class and FAIL rates) and the export parity result. The
parity check runs PyTorch and ONNX on validation images; an export that disagrees beyond
``PARITY_TOLERANCE`` fails. The card's ``achieved`` rates (escape, overkill, NO_DECISION under
the default review band) are measured through the ONNX model on the calibration split, images
training never used. ``variants`` writes and certifies the OpenVINO INT8 (QDQ) and bf16 variants
(``lineguard.training.certified``) into the card's ``variants``. ``int8`` adds a statically
quantized sibling (QDQ) with its mAP change; when the fp32 thresholds miss the card's escape
target on it, it gets thresholds calibrated on its own.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from lineguard.datasets import iter_split
from lineguard.errors import InputError, ModelError
from lineguard.messages import (
    CalibrationTargets,
    ClassMetrics,
    ExportParity,
    ModelCard,
    ModelMetrics,
    ReferenceStats,
    TargetsAchieved,
    sha256_file,
)
from lineguard.training._parity import check_parity, quantize_int8
from lineguard.training.calibrate import CALIBRATION_FILE, calibrate, calibration_split, station_rates
from lineguard.training.certified import certified_variants
from lineguard.training.config import PARITY_MIN_BOXES
from lineguard.training.evaluate import Evaluation, evaluate
from lineguard.training.offline import load_ultralytics
from lineguard.training.reference import image_reference
from lineguard.training.train import load_run

__all__ = ["OPSET", "PARITY_TOLERANCE", "export_run"]

OPSET = 17  # onnxruntime >= 1.15 and OpenVINO both run it
PARITY_TOLERANCE = 0.01  # largest box-corner difference (share of the frame) and confidence difference


def _metrics(evaluation: Evaluation, dataset_hash: str) -> ModelMetrics:
    return ModelMetrics(
        map50=evaluation.map50,
        map50_95=evaluation.map50_95,
        per_class={
            name: ClassMetrics(
                precision=m["precision"], recall=m["recall"], ap50=m["ap50"], ap50_95=m["ap50_95"]
            )
            for name, m in evaluation.per_class.items()
        },
        escape_rate=evaluation.escape_rate,
        overkill_rate=evaluation.overkill_rate,
        eval_dataset=dataset_hash,
    )


def _reference(evaluation: Evaluation, data: Path, split: str, dataset_hash: str) -> ReferenceStats:
    from lineguard.config import PolicyConfig

    reference, indices = image_reference(data, split, dataset_hash=dataset_hash)
    floor = PolicyConfig().min_confidence
    thresholds = evaluation.threshold_array(evaluation.thresholds)
    hits = evaluation.unit_scores >= thresholds[None, :]
    top = evaluation.top_confidence
    return reference.model_copy(
        update={
            # The edge drops boxes below policy.min_confidence before it sees them and reports 0.
            "top_confidence": [round(top[i], 4) if top[i] >= floor else 0.0 for i in indices if i < len(top)],
            "class_rates": {c: float(hits[:, i].mean()) for i, c in enumerate(evaluation.classes)},
            "fail_rate": float(hits.any(axis=1).mean()),
        }
    )


def _thresholds(
    run: Path, classes: list[str], given: dict[str, float] | None
) -> tuple[dict[str, float], str, CalibrationTargets | None]:
    """The thresholds to ship, where they came from, and the targets they were calibrated for."""
    if given is not None:
        return {c: float(given.get(c, 0.5)) for c in classes}, "given", None
    path = run / CALIBRATION_FILE
    if path.is_file():
        body = json.loads(path.read_text())
        found = body["thresholds"]
        targets = CalibrationTargets(max_escape=body["max_escape"], max_overkill=body.get("max_overkill"))
        return {c: float(found.get(c, 0.5)) for c in classes}, str(path), targets
    return dict.fromkeys(classes, 0.5), "default 0.5 (run not calibrated)", None


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "model"


def export_run(
    run: Path,
    *,
    out: Path | None = None,
    name: str | None = None,
    version: str | None = None,
    parent: str | None = None,
    thresholds: dict[str, float] | None = None,
    int8: bool = False,
    variants: bool = True,
    parity_images: int = 32,
    parity_min_boxes: int = PARITY_MIN_BOXES,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write ``model.onnx`` + ``model_card.json`` for ``run`` into ``out`` (default RUN/model)."""
    say = progress or (lambda _msg: None)
    record = load_run(run)
    if record.get("status") != "done":
        raise InputError(f"{run} is not a finished training run (status {record.get('status')!r})")
    weights = run / "weights" / "best.pt"
    if not weights.is_file():
        raise ModelError(f"{weights} is missing; the run folder is incomplete")
    out = out or run / "model"
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} exists and is not empty; exported models are immutable, pick another --out")
    data, classes, imgsz = Path(record["data"]), list(record["classes"]), int(record["imgsz"])
    chosen, source, targets = _thresholds(run, classes, thresholds)

    say(f"exporting {weights} to ONNX (opset {OPSET}, static {imgsz}x{imgsz})")
    onnx_path = _export_onnx(weights, imgsz, out)
    say(f"parity check: PyTorch vs ONNX on up to {parity_images} validation images with defects")
    parity, report = _check_export_parity(
        weights, onnx_path, data, (classes, imgsz, chosen), parity_images, parity_min_boxes
    )
    report["thresholds_from"] = source
    say(
        f"parity: {parity.boxes} boxes compared ({parity.boxes_at_threshold} at the thresholds) "
        f"on {parity.images} images, {'passed' if parity.passed else 'FAILED'}"
    )
    if not parity.passed:
        (out / "export_report.json").write_text(json.dumps(report, indent=2) + "\n")
        onnx_path.rename(out / "model.onnx.failed")
        raise ModelError(f"export parity failed: {_parity_problem(parity)}; see {out / 'export_report.json'}")

    say("evaluating the ONNX model through the edge detector")
    evaluation = evaluate(onnx_path, data, thresholds=chosen)
    cal_split, warning = calibration_split(data)
    if warning:
        say(f"warning: {warning}")
    cal_eval = (
        evaluation if cal_split == "val" else evaluate(onnx_path, data, split=cal_split, thresholds=chosen)
    )
    created = datetime.now(UTC)
    card = ModelCard(
        name=_safe(name or run.name),
        version=version or f"{created:%Y%m%d.%H%M%S}",
        sha256=sha256_file(onnx_path),
        classes=classes,
        input_size=imgsz,
        opset=OPSET,
        thresholds=chosen,
        dataset_hash=str(record.get("dataset_hash", "")),
        metrics=_metrics(evaluation, str(record.get("dataset_hash", ""))),
        reference=_reference(evaluation, data, "val", str(record.get("dataset_hash", ""))),
        parent=parent,
        parity=parity,
        targets=targets,
        achieved=_achieved(cal_eval, chosen),
        created_at=created,
        training_run=str(run.resolve()),
    )
    card.save(out / "model_card.json")
    ModelCard.load(out / "model_card.json")  # the file we wrote must validate
    report |= {
        "map50": evaluation.map50,
        "map50_95": evaluation.map50_95,
        "missed_target": card.missed_target(),
    }
    if card.missed_target():
        say(f"warning: {card.missed_target()}; the registry refuses it without --accept-missed-target")
    if variants:
        found, left_out, kept_float = certified_variants(
            out, card, (evaluation, cal_eval), data, cal_split, say
        )
        card = card.model_copy(update={"variants": found})
        card.save(out / "model_card.json")
        ModelCard.load(out / "model_card.json")
        report["variants"] = [v.model_dump() for v in found]
        report["variants_left_out"] = left_out
        report["int8_float_convs"] = kept_float

    if int8:
        report["int8"] = _export_int8(out, card, data, (evaluation, cal_split), say)
    (out / "export_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return out


def _export_onnx(weights: Path, imgsz: int, out: Path) -> Path:
    """ultralytics' ONNX export of ``weights`` (static shape, fp32), moved to ``out/model.onnx``."""
    load_ultralytics()
    import torch
    from ultralytics import YOLO

    with warnings.catch_warnings():
        # torch announces its new exporter and warns about traced shape checks: neither applies here
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        exported = Path(
            YOLO(str(weights)).export(
                format="onnx",
                imgsz=imgsz,
                opset=OPSET,
                dynamic=False,
                simplify=True,
                half=False,
                verbose=False,
            )
        )
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / "model.onnx"
    shutil.move(str(exported), onnx_path)
    return onnx_path


def _parity_problem(parity: ExportParity) -> str:
    """Why a parity check failed, in words: too little compared, or boxes that disagree."""
    if parity.boxes is not None and parity.min_boxes is not None and parity.boxes < parity.min_boxes:
        return (
            f"only {parity.boxes} boxes compared on {parity.images} validation images with defects, "
            f"fewer than the {parity.min_boxes} needed to vouch for the export (more --parity-images, "
            "or a model that detects the defects)"
        )
    return (
        f"PyTorch and ONNX differ by {parity.max_box_diff:.4f} (boxes) / {parity.max_conf_diff:.4f} "
        f"(confidence), tolerance {parity.tolerance}"
    )


def _check_export_parity(
    weights: Path,
    onnx_path: Path,
    data: Path,
    model: tuple[list[str], int, dict[str, float]],
    parity_images: int,
    min_boxes: int,
) -> tuple[ExportParity, dict[str, Any]]:
    """PyTorch vs ONNX on validation images with defects, at the edge's floor and the card's thresholds."""
    from lineguard.config import PolicyConfig

    classes, imgsz, thresholds = model
    images = [item.path for item in iter_split(data) if item.defective][:parity_images]
    parity = check_parity(
        weights,
        onnx_path,
        classes,
        imgsz,
        thresholds,
        images,
        floor=PolicyConfig().min_confidence,
        tolerance=PARITY_TOLERANCE,
        min_boxes=min_boxes,
    )
    report: dict[str, Any] = {"opset": OPSET, "thresholds_from": None, "parity": parity.model_dump()}
    return parity, report


def _achieved(evaluation: Evaluation, thresholds: dict[str, float]) -> TargetsAchieved:
    """What ``thresholds`` do on the evaluation's split as the station's default policy decides."""
    from lineguard.config import PolicyConfig

    policy = PolicyConfig()
    rates = station_rates(evaluation, thresholds, policy)
    return TargetsAchieved(
        escape_rate=rates.escape_rate,
        overkill_rate=rates.overkill_rate,
        no_decision_rate=rates.no_decision_rate,
        review_band=policy.review_band,
        split=evaluation.split,
    )


def _int8_thresholds(
    q_path: Path, card: ModelCard, data: Path, split: str, say: Callable[[str], None]
) -> tuple[dict[str, float], TargetsAchieved]:
    """The fp32 thresholds if INT8 meets the card's target with them on ``split``, else its own."""
    q_cal = evaluate(q_path, data, split=split, thresholds=card.thresholds, precision="int8")
    achieved = _achieved(q_cal, card.thresholds)
    targets = card.targets
    if targets is None or (achieved.escape_rate or 0.0) <= targets.max_escape + 1e-9:
        escape = "n/a" if achieved.escape_rate is None else f"{achieved.escape_rate:.1%}"
        say(f"INT8 at the fp32 thresholds on {split}: escape {escape}, kept")
        return dict(card.thresholds), achieved
    own = calibrate(q_cal, targets.max_escape, max_overkill=targets.max_overkill)
    say(
        f"INT8 at the fp32 thresholds on {split}: escape {achieved.escape_rate:.1%} > target "
        f"{targets.max_escape:.1%}; recalibrated thresholds {own.thresholds}: {own.verdict()}"
    )
    return dict(own.thresholds), _achieved(q_cal, own.thresholds)


def _export_int8(
    out: Path,
    card: ModelCard,
    data: Path,
    fp32_and_split: tuple[Evaluation, str],
    say: Callable[[str], None],
) -> dict[str, Any]:
    fp32, cal_split = fp32_and_split
    q_dir = out.parent / f"{out.name}_int8"
    if q_dir.exists() and any(q_dir.iterdir()):
        raise InputError(f"{q_dir} exists and is not empty; remove it or export to another --out")
    q_dir.mkdir(parents=True, exist_ok=True)
    train_images = [item.path for item in iter_split(data, "train")]
    rng = np.random.default_rng(0)
    picked = [train_images[i] for i in sorted(rng.permutation(len(train_images))[:64])]
    say(f"INT8: static quantization (QDQ) calibrated on {len(picked)} training images")
    q_path = q_dir / "model.onnx"
    quantize_int8(out / "model.onnx", q_path, picked, card.input_size, runtime="onnxruntime")
    q_thresholds, q_achieved = _int8_thresholds(q_path, card, data, cal_split, say)
    q_eval = evaluate(q_path, data, thresholds=q_thresholds, precision="int8")
    q_card = card.model_copy(
        update={
            "version": f"{card.version}-int8",
            "sha256": sha256_file(q_path),
            "thresholds": q_thresholds,
            "metrics": _metrics(q_eval, card.dataset_hash),
            "achieved": q_achieved,
            "parent": card.version,
            "parity": None,
            "variants": [],  # its own file is the variant; the fp32 card's list names other files
        }
    )
    q_card.save(q_dir / "model_card.json")
    return {
        "folder": str(q_dir),
        "map50_fp32": fp32.map50,
        "map50_int8": q_eval.map50,
        "map50_change_points": round(100 * (q_eval.map50 - fp32.map50), 2),
        "thresholds": q_thresholds,
        "map50_95_change_points": round(100 * (q_eval.map50_95 - fp32.map50_95), 2),
    }
