"""``lineguard train``, ``evaluate``, ``calibrate`` and ``export``: the training loop's commands.

Thin click wrappers: options become a ``TrainConfig`` or function arguments, progress goes to
stderr, results to stdout, and every user mistake surfaces as a ``LineguardError`` (one line, exit
2, printed centrally). Heavy imports happen inside the commands so ``lineguard --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from lineguard.errors import InputError
from lineguard.model_refs import ModelPathType
from lineguard.training.config import PARITY_MIN_BOXES

if TYPE_CHECKING:
    from lineguard.config import PolicyConfig

__all__ = ["calibrate", "evaluate", "export", "train"]


def _err(message: str) -> None:
    click.echo(message, err=True)


def _parse_thresholds(text: str | None) -> dict[str, float] | None:
    """``scratch=0.4,pit=0.3`` or one number for every class (``0.4``)."""
    if not text:
        return None
    if "=" not in text:
        try:
            return {"*": float(text)}
        except ValueError as exc:
            raise InputError(f"--thresholds must be NAME=VALUE,... or one number; got {text!r}") from exc
    out = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError as exc:
            raise InputError(f"--thresholds entry {part!r} is not NAME=NUMBER") from exc
    return out


def _expand(thresholds: dict[str, float] | None, classes: list[str]) -> dict[str, float] | None:
    if thresholds is None or "*" not in thresholds:
        return thresholds
    return dict.fromkeys(classes, thresholds["*"])


@click.command()
@click.option("--data", type=click.Path(path_type=Path, exists=True, file_okay=False), required=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="New run folder.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), help="Training config YAML.")
@click.option(
    "--model", default=None, help="yolov8n.yaml, yolo11n.yaml or a local .pt [default: yolov8n.yaml]"
)
@click.option("--epochs", type=int, default=None, help="[default: 50]")
@click.option("--imgsz", type=int, default=None, help="[default: 320]")
@click.option("--batch", type=int, default=None, help="[default: 16]")
@click.option("--seed", type=int, default=None, help="[default: 0]")
@click.option("--device", default=None, help="auto, cpu or a CUDA index [default: auto]")
@click.option("--workers", type=int, default=None, help="Data loader workers [default: 2]")
@click.option(
    "--max-escape",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.005,
    show_default=True,
    help="Calibrate per-class thresholds for this escape rate after training.",
)
def train(
    data: Path,
    out: Path,
    config_path: Path | None,
    model: str | None,
    epochs: int | None,
    imgsz: int | None,
    batch: int | None,
    seed: int | None,
    device: str | None,
    workers: int | None,
    max_escape: float,
) -> None:
    """Train a detector on a dataset version, offline, into a new run folder."""
    from lineguard.training.calibrate import calibrate_run
    from lineguard.training.config import load_train_config
    from lineguard.training.train import train as run_training

    overrides = {
        "model": model,
        "epochs": epochs,
        "imgsz": imgsz,
        "batch": batch,
        "seed": seed,
        "device": device,
        "workers": workers,
    }
    cfg = load_train_config(config_path, overrides)
    result = run_training(data, out, cfg, progress=_err)
    click.echo(
        f"trained {result.epochs} epochs in {result.duration_s:.0f} s: mAP50 {100 * result.map50:.1f}, "
        f"mAP50-95 {100 * result.map50_95:.1f}; weights {result.weights}"
    )
    calibration = calibrate_run(out, max_escape=max_escape, warn=_err)
    click.echo(
        f"thresholds {', '.join(f'{k} {v:.2f}' for k, v in calibration.thresholds.items())}: "
        f"{calibration.verdict()}; see {out / 'calibration.md'}"
    )


@click.command()
@click.option("--model", type=ModelPathType(), required=True, help=".pt, .onnx, or NAME@production")
@click.option("--data", type=click.Path(path_type=Path, exists=True, file_okay=False), required=True)
@click.option("--split", default="val", show_default=True)
@click.option("--imgsz", type=int, default=None, help="For .pt models [default: the training size].")
@click.option("--thresholds", default=None, help="NAME=CONF,... or one number [default: card/run/0.5].")
@click.option(
    "--max-escape", type=click.FloatRange(0, 1, max_open=True), default=None, help="Also calibrate."
)
@click.option(
    "--max-overkill",
    type=click.FloatRange(0, 1),
    default=None,
    help="With --max-escape: also hold calibration to this overkill rate.",
)
@click.option(
    "--json", "json_out", type=click.Path(path_type=Path), default=None, help="Write the report here."
)
@click.option("--curve", type=click.Path(path_type=Path), default=None, help="Calibration trade-off PNG.")
def evaluate(
    model: Path,
    data: Path,
    split: str,
    imgsz: int | None,
    thresholds: str | None,
    max_escape: float | None,
    max_overkill: float | None,
    json_out: Path | None,
    curve: Path | None,
) -> None:
    """Evaluate a .pt or .onnx model: mAP, per class, confusion matrix, escape and overkill."""
    from dataclasses import asdict

    from lineguard.datasets import read_class_names
    from lineguard.training.calibrate import calibrate, write_curve_png
    from lineguard.training.evaluate import evaluate as run_evaluation

    if model.suffix not in {".pt", ".onnx"}:
        raise InputError(f"--model must be a .pt or .onnx file; got {model.name}")
    given = _expand(_parse_thresholds(thresholds), read_class_names(data))
    with click.progressbar(length=1, label="evaluating", file=sys.stderr) as bar:

        def step(done: int, total: int) -> None:
            bar.length = total
            bar.update(done - bar.pos)

        result = run_evaluation(model, data, split=split, thresholds=given, imgsz=imgsz, progress=step)
    click.echo(result.report())
    body = result.summary()
    if max_escape is not None:
        calibration = calibrate(result, max_escape, max_overkill=max_overkill)
        click.echo(f"calibration for max escape {100 * max_escape:.2f}%:\n{calibration.table()}")
        click.echo(calibration.verdict())
        body["calibration"] = asdict(calibration)
        if curve is not None:
            click.echo(f"trade-off curve: {write_curve_png(calibration, curve)}")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(body, indent=2) + "\n")
        click.echo(f"report: {json_out}")


@click.command()
@click.argument("run", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--out", type=click.Path(path_type=Path), default=None, help="[default: RUN/model]")
@click.option("--name", default=None, help="Model name [default: the run folder's name].")
@click.option("--version", default=None, help="Model version [default: UTC timestamp].")
@click.option("--parent", default=None, help="Version this model was trained from.")
@click.option("--thresholds", default=None, help="NAME=CONF,... [default: RUN/calibration.json].")
@click.option(
    "--max-escape", type=click.FloatRange(0, 1, max_open=True), default=None, help="Re-calibrate first."
)
@click.option("--int8", is_flag=True, help="Also write a static INT8 (QDQ) model and its mAP change.")
@click.option(
    "--variants/--no-variants",
    default=True,
    show_default=True,
    help="Write and certify the OpenVINO INT8 (QDQ) and bf16 variants in the card.",
)
@click.option(
    "--parity-images",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Validation images with defects the PyTorch-vs-ONNX check runs on.",
)
@click.option(
    "--parity-min-boxes",
    type=click.IntRange(min=0),
    default=PARITY_MIN_BOXES,
    show_default=True,
    help="Fewest boxes the parity check must compare to pass.",
)
@click.option("--register", is_flag=True, help="Add the model to the registry as a candidate.")
@click.option(
    "--registry-root", type=click.Path(path_type=Path), default=None, help="[default: registry.root]"
)
def export(
    run: Path,
    out: Path | None,
    name: str | None,
    version: str | None,
    parent: str | None,
    thresholds: str | None,
    max_escape: float | None,
    int8: bool,
    variants: bool,
    parity_images: int,
    parity_min_boxes: int,
    register: bool,
    registry_root: Path | None,
) -> None:
    """Export a training run to model.onnx + model_card.json (parity-checked)."""
    from lineguard.training.calibrate import calibrate_run
    from lineguard.training.export import export_run
    from lineguard.training.train import load_run

    classes = list(load_run(run).get("classes", []))
    if max_escape is not None:
        calibrate_run(run, max_escape=max_escape, warn=_err)
    folder = export_run(
        run,
        out=out,
        name=name,
        version=version,
        parent=parent,
        thresholds=_expand(_parse_thresholds(thresholds), classes),
        int8=int8,
        variants=variants,
        parity_images=parity_images,
        parity_min_boxes=parity_min_boxes,
        progress=_err,
    )
    report = json.loads((folder / "export_report.json").read_text())
    parity = report["parity"]
    click.echo(
        f"exported {folder / 'model.onnx'} (opset {report['opset']}): mAP50 {100 * report['map50']:.1f}, "
        f"parity {'passed' if parity['passed'] else 'FAILED'} ({parity['boxes']} boxes compared, "
        f"max box diff {parity['max_box_diff']:.4f}, "
        f"conf diff {parity['max_conf_diff']:.4f}, tolerance {parity['tolerance']})"
    )
    for v in report.get("variants", []):
        state = "certified" if v["certified"] else "not certified"
        click.echo(f"variant {v['name']} ({v['runtime']}): {state}: {v['reason']}")
    for why in report.get("variants_left_out", []):
        click.echo(f"variant left out: {why}")
    if "int8" in report:
        q = report["int8"]
        click.echo(f"int8 model {q['folder']}: mAP50 change {q['map50_change_points']:+.2f} points")
    if register:
        _register(folder, registry_root)


def _register(folder: Path, root: Path | None) -> None:
    try:
        from lineguard.registry import Registry
    except ImportError as exc:
        raise InputError("--register needs lineguard's registry, which this install lacks") from exc
    from lineguard.config import RegistryConfig

    registry = Registry(root or RegistryConfig().root)
    version = registry.add(folder, why="lineguard export --register")
    click.echo(f"registered {version.ref} as {version.stage}")


@click.command()
@click.option(
    "--model",
    type=click.Path(path_type=Path, exists=True),
    required=True,
    help="Exported model folder, its model_card.json, a .onnx or a .pt file.",
)
@click.option("--data", type=click.Path(path_type=Path, exists=True, file_okay=False), required=True)
@click.option("--split", default=None, help="[default: calib, else val with a warning]")
@click.option(
    "--max-escape",
    type=click.FloatRange(0, 1, max_open=True),
    default=None,
    help="Escape ceiling [default: the card's target, else 0.005].",
)
@click.option("--max-overkill", type=click.FloatRange(0, 1), default=None, help="Also hold overkill to this.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="Station YAML whose policy (review band, floor) decides the units [default: built-in policy].",
)
@click.option("--write", is_flag=True, help="Write each variant's own thresholds and rates into its card.")
@click.option(
    "--json", "json_out", type=click.Path(path_type=Path), default=None, help="Write the report here."
)
def calibrate(
    model: Path,
    data: Path,
    split: str | None,
    max_escape: float | None,
    max_overkill: float | None,
    config_path: Path | None,
    write: bool,
    json_out: Path | None,
) -> None:
    """Tune and check thresholds on the calibration split: fp32 and every fast variant on its own."""
    from lineguard.config import load_config
    from lineguard.messages import ModelCard
    from lineguard.training.calibrate import calibration_split
    from lineguard.training.variants import model_file

    path = model_file(model)
    if write and path.suffix == ".pt":
        raise InputError("--write needs an exported model (its card); a .pt has none: run lineguard export")
    policy = load_config(config_path).policy
    split, warning = calibration_split(data, split)
    if warning:
        _err(f"warning: {warning}")
    targets = ModelCard.load(path.parent / "model_card.json").targets if path.suffix == ".onnx" else None
    if max_escape is None:
        max_escape = targets.max_escape if targets is not None else 0.005
    if max_overkill is None and targets is not None:
        max_overkill = targets.max_overkill
    doubtful = "FAIL" if policy.uncertain_action == "fail" else "NO_DECISION"
    click.echo(
        f"calibrating on {data} split {split}, review band {policy.review_band:g} ({doubtful}), "
        f"target escape {100 * max_escape:.2f}%"
    )
    if path.suffix == ".pt":
        found = {"pt": _calibrate_pt(path, data, split, max_escape, max_overkill, policy)}
    else:
        found = _calibrate_variants(path, data, split, max_escape, max_overkill, policy, write)
    if json_out is not None:
        report = {"split": split, "data": str(data), "max_escape": max_escape, "variants": found}
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=2) + "\n")
        click.echo(f"report: {json_out}")


def _calibrate_pt(
    path: Path, data: Path, split: str, max_escape: float, max_overkill: float | None, policy: PolicyConfig
) -> dict[str, Any]:
    from dataclasses import asdict

    from lineguard.training.calibrate import calibrate as run_calibration
    from lineguard.training.evaluate import evaluate as run_evaluation

    evaluation = run_evaluation(path, data, split=split)
    result = run_calibration(evaluation, max_escape, max_overkill=max_overkill, policy=policy)
    click.echo(f"\npt: {path} on {evaluation.units} units\n{result.table()}\n{result.verdict()}")
    return asdict(result)


def _calibrate_variants(
    path: Path,
    data: Path,
    split: str,
    max_escape: float,
    max_overkill: float | None,
    policy: PolicyConfig,
    write: bool,
) -> dict[str, Any]:
    """Each variant: its table and one line; with ``write``, its thresholds into its card."""
    from dataclasses import asdict

    from lineguard.training.variants import calibrate_variant, find_variants, write_calibration

    report: dict[str, Any] = {}
    fp32: dict[str, float] = {}
    for variant in find_variants(path):
        found = calibrate_variant(
            variant, data, split, max_escape=max_escape, max_overkill=max_overkill, policy=policy
        )
        own = found.calibration.thresholds
        fp32 = fp32 or own
        ran = found.evaluation.computed_in
        if variant.precision == "bf16" and ran != "bf16":
            click.echo(f"\nbf16: not checked: this CPU has no bf16, so OpenVINO computes {ran} as fp32 does")
            continue
        defective = int(found.evaluation.unit_defective.sum())
        click.echo(
            f"\n{variant.name}: {variant.onnx} on {found.evaluation.units} units ({defective} defective)"
        )
        shipped = ", ".join(f"{k} {v:.2f}" for k, v in found.shipped_thresholds.items())
        click.echo(found.calibration.table(every=0.1, extra={f"shipped: {shipped}": found.shipped}))
        click.echo(found.line())
        report[variant.name] = asdict(found.calibration) | {
            "computed_in": found.evaluation.computed_in,
            "shipped_thresholds": found.shipped_thresholds,
            "shipped": asdict(found.shipped),
        }
        if write and variant.own_card:
            write_calibration(variant.card, found.calibration)
            click.echo(f"  wrote its thresholds and its rates on {split} into {variant.card}")
        elif write and own != fp32:
            pairs = ", ".join(f"{k}: {v:.2f}" for k, v in own.items())
            click.echo(
                f"  {variant.name} shares the fp32 card: set policy.class_thresholds {{{pairs}}} there"
            )
    return report
