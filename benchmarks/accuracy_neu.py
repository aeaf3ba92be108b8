"""NEU-DET accuracy benchmark: import the real steel-defect set, train a nano YOLO, report mAP.

Synthetic data proves the plumbing; NEU-DET (1,800 real hot-rolled steel images, 6 classes) shows
how far the pipeline gets on real defects next to published nano-model figures. The dataset is
read from ``--src`` (default ``../shared/datasets/neu-det`` beside the checkout; results name it
relative to the repository), imported as a dataset version under ``--work`` (default
``var/bench``), trained from a model YAML (no pretrained weights exist offline), evaluated on the
fixed ``splits/val.txt`` list, calibrated for ``--max-escape``, exported to ONNX and evaluated
again through the edge's pre/post-processing. Each run goes to
``benchmarks/results/neu_det_<model>_<imgsz>-seed<N>.{md,json}``; then the spread (min / median /
max) over every seed run there is rewritten to ``neu_det_<model>_<imgsz>.{md,json}``, since one
training run is one sample.

    for seed in 0 1 2; do
        python -m lineguard.benchmarks.accuracy_neu --model yolov8n.yaml --imgsz 256 --time-h 0.4 --seed $seed
    done
    python -m lineguard.benchmarks.accuracy_neu --model yolov8n.yaml --imgsz 640 --epochs 100 \
        --batch 32 --workers 8 --device 0          # the GPU run
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lineguard.provenance import ALLOW_DIRTY_HELP, provenance, provenance_markdown
from lineguard.spread import min_median_max

__all__ = ["PUBLISHED", "main", "write_spread"]

# Published nano-model figures on NEU-DET (their own splits; COCO-pretrained weights).
PUBLISHED = {
    "yolov8n": {"map50": 0.777, "map50_95": 0.462, "note": "YOLOv8n, one published table"},
    "yolo11n": {"map50": 0.753, "map50_95": None, "note": "YOLO11n, another published table"},
}
_REPO = Path(__file__).resolve().parents[1]
_DEFAULT_SRC = _REPO.parent / "shared" / "datasets" / "neu-det"
_RESULTS = Path(__file__).resolve().parent / "results"


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--src", type=Path, default=_DEFAULT_SRC, help="NEU-DET folder (IMAGES, ANNOTATIONS, splits)"
    )
    p.add_argument("--work", type=Path, default=Path("var/bench"), help="Dataset version + run go here")
    p.add_argument("--model", default="yolov8n.yaml")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--time-h", type=float, default=None, help="Train for this many hours instead")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0, help="Training seed; run 0, 1, 2 for the published spread")
    p.add_argument("--max-escape", type=float, default=0.005)
    p.add_argument("--run", type=Path, default=None, help="Reuse a finished training run (skip training)")
    p.add_argument("--results", type=Path, default=_RESULTS)
    p.add_argument("--allow-dirty", action="store_true", help=ALLOW_DIRTY_HELP)
    return p.parse_args(argv)


def _dataset(src: Path, work: Path) -> Path:
    from lineguard.training import import_dataset

    out = work / "neu-det-v1"
    if (out / "manifest.json").is_file():
        return out
    report = import_dataset(
        "voc", src, out, split_from=[src / "splits" / "train.txt", src / "splits" / "val.txt"]
    )
    print(report.summary(), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    command = shlex.join(
        ["python", "-m", "lineguard.benchmarks.accuracy_neu", *(sys.argv[1:] if argv is None else argv)]
    )
    origin = provenance(allow_dirty=args.allow_dirty, command=command)  # refused before hours of training
    data = _dataset(args.src, args.work)
    model_tag = Path(args.model).stem
    if args.run is None:
        from lineguard.training import TrainConfig, train

        run = args.work / f"run_{model_tag}_{args.imgsz}_seed{args.seed}_{datetime.now(UTC):%Y%m%d%H%M%S}"
        cfg = TrainConfig(
            model=args.model,
            epochs=args.epochs,
            time_h=args.time_h,
            imgsz=args.imgsz,
            batch=args.batch,
            device=args.device,
            workers=args.workers,
            seed=args.seed,
        )
        print(f"training {args.model} at {args.imgsz} px, seed {args.seed}, into {run}", flush=True)
        train(data, run, cfg, progress=lambda line: print(line, flush=True))
    else:
        run = args.run
    return _report(args, origin, data, run, model_tag)


def _shown(path: Path) -> str:
    """A path relative to the repository (``../shared/...`` beside it), never a machine's absolute path."""
    where = path.resolve()
    if where.is_relative_to(_REPO.parent):
        return os.path.relpath(where, _REPO)
    return path.name


def _report(args: argparse.Namespace, origin: dict[str, Any], data: Path, run: Path, model_tag: str) -> int:
    from lineguard.training import calibrate_run, evaluate, export_run, load_run

    record = load_run(run)
    weights = run / "weights" / "best.pt"
    t0 = time.monotonic()
    pt_eval = evaluate(weights, data)
    calibration = calibrate_run(run, max_escape=args.max_escape, warn=lambda line: print(line, flush=True))
    model_dir = run / "model"  # exported models are immutable: a report made again reuses it
    if not (model_dir / "model_card.json").is_file():
        model_dir = export_run(run)
    onnx_eval = evaluate(model_dir / "model.onnx", data, thresholds=calibration.thresholds)
    eval_s = time.monotonic() - t0
    epochs = int(record.get("epochs_run", args.epochs))
    published = PUBLISHED.get(model_tag.replace(".yaml", ""), {})
    result: dict[str, Any] = {
        "benchmark": "neu_det_accuracy",
        "provenance": origin,
        "command": origin["command"],
        "dataset_source": _shown(args.src),
        "model": args.model,
        "imgsz": args.imgsz,
        "seed": int(record.get("seed", args.seed)),
        "epochs": epochs,
        "train_seconds": record.get("duration_s"),
        "hardware": record.get("hardware"),
        "device": record.get("device"),
        "dataset_hash": record.get("dataset_hash"),
        "git_revision": record.get("git_revision"),
        "val_images": pt_eval.units,
        # what training printed: ultralytics' validator run as the station sees frames (StationTrainer)
        "ultralytics_val": record.get("val_metrics"),
        "pt": pt_eval.summary(),
        "onnx": onnx_eval.summary(),
        "calibration": {
            "max_escape": args.max_escape,
            "split": calibration.split,
            "thresholds": calibration.thresholds,
            # with the station's policy: a defective unit in the review band is NO_DECISION, not PASS
            "escape_rate": calibration.escape_rate,
            "no_decision_rate": calibration.no_decision_rate,
            "overkill_rate": calibration.overkill_rate,
            "met": calibration.met,
            "verdict": calibration.verdict(),
            "note": "NEU-DET has no defect-free images: overkill is not measurable here.",
        },
        "published": published,
        "eval_seconds": round(eval_s, 1),
        "run": str(run),
        "finished_at": datetime.now(UTC).isoformat(),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    prefix = f"neu_det_{model_tag}_{args.imgsz}"
    stem = f"{prefix}-seed{result['seed']}"
    (args.results / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.results / f"{stem}.md").write_text(_markdown(result, pt_eval.per_class_table()))
    print(_markdown(result, pt_eval.per_class_table()))
    spread = write_spread(args.results, prefix)
    print(f"spread over seeds {spread['seeds']}: {args.results / prefix}.md", flush=True)
    return 0


# What the spread summarises: label -> how to read it from one run's JSON (None: not measured).
_FIGURES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "mAP50 (.pt)": lambda r: r["pt"]["map50"],
    "mAP50 (.onnx, edge pre/post)": lambda r: r["onnx"]["map50"],
    "mAP50 (ultralytics' validator)": lambda r: (r.get("ultralytics_val") or {}).get("map50"),
    "mAP50-95 (.pt)": lambda r: r["pt"]["map50_95"],
    "escape at calibrated thresholds": lambda r: r["calibration"]["escape_rate"],
    "NO_DECISION at calibrated thresholds": lambda r: r["calibration"].get("no_decision_rate"),
}


def write_spread(folder: Path, prefix: str) -> dict[str, Any]:
    """``<prefix>.{json,md}``: min / median / max of each figure over the ``<prefix>-seed<N>`` runs."""
    runs = [json.loads(p.read_text()) for p in sorted(folder.glob(f"{prefix}-seed*.json"))]
    spread = {
        label: min_median_max([float(v) for r in runs if (v := read(r)) is not None])
        for label, read in _FIGURES.items()
    }
    summary = {"benchmark": "neu_det_accuracy_spread", "seeds": [r["seed"] for r in runs], "spread": spread}
    (folder / f"{prefix}.json").write_text(json.dumps(summary | {"runs": runs}, indent=2) + "\n")
    (folder / f"{prefix}.md").write_text(_spread_markdown(prefix, runs, spread))
    return summary


def _not_held_out(cal: dict[str, Any]) -> str:
    if cal["split"] == "calib":
        return ""
    return (
        f"The dataset has no calib split, so these rates are measured on the {cal['split']} split the "
        "thresholds were chosen on, not on held-out images. "
    )


def _spread_markdown(prefix: str, runs: list[dict[str, Any]], spread: dict[str, Any]) -> str:
    first = runs[0]
    pub = first["published"]

    def mmm(s: dict[str, float | None]) -> str:
        return f"{_pct(s['median'])} ({_pct(s['min'])} – {_pct(s['max'])})"

    lines = [
        f"# NEU-DET accuracy: {first['model']} at {first['imgsz']} px, spread over {len(runs)} seed(s)",
        "",
        f"Seeds {', '.join(str(r['seed']) for r in runs)}; each run's own file is `{prefix}-seed<N>.md` "
        "with its provenance, per-class table and calibration. Median (min – max) over the seeds, percent:",
        "",
        "| figure | median (min – max) | published |",
        "|---|---:|---:|",
        *(
            f"| {label} | {mmm(s)} | "
            + (_pct(pub.get("map50")) if label.startswith("mAP50 (.pt)") else "")
            + " |"
            for label, s in spread.items()
        ),
        "",
        "| seed | revision | date | machine | epochs | training s | mAP50 .pt | mAP50 .onnx | validator "
        "| escape / NO_DECISION at calibrated thresholds | command |",
        "|---:|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in runs:
        origin = r.get("provenance", {})
        machine = origin.get("machine", {})
        lines.append(
            f"| {r['seed']} | {str(origin.get('git_revision'))[:12]} | {str(origin.get('date', '?'))[:10]} "
            f"| {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores | {r['epochs']} "
            f"| {r['train_seconds']} | {_pct(r['pt']['map50'])} | {_pct(r['onnx']['map50'])} "
            f"| {_pct((r.get('ultralytics_val') or {}).get('map50'))} "
            f"| {_pct(r['calibration']['escape_rate'])} / {_pct(r['calibration'].get('no_decision_rate'))} "
            f"| `{r['command']}` |"
        )
    lines += [
        "",
        f"Published: {pub.get('note', 'none for this model')}, from COCO-pretrained weights on their "
        "own random splits; ours train from scratch (no weights can be downloaded offline) on the "
        "fixed splits, so the comparison is rough. Escape and NO_DECISION are the station policy's, "
        f"at each run's calibrated thresholds. {_not_held_out(first['calibration'])}NEU-DET has no "
        "defect-free images: overkill is not measurable here.",
        "",
    ]
    return "\n".join(lines)


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * float(value):.1f}"


def _markdown(r: dict[str, Any], per_class: str) -> str:
    pub = r["published"]
    ul = r.get("ultralytics_val") or {}
    cal = r["calibration"]
    lines = [
        f"# NEU-DET accuracy: {r['model']} at {r['imgsz']} px, {r['epochs']} epochs, seed {r.get('seed', 0)}",
        "",
        *provenance_markdown(r["provenance"]),
        f"Hardware: {r['hardware']} (device {r['device']}); training took {r['train_seconds']} s.",
        f"Dataset version {str(r['dataset_hash'])[:12]} (NEU-DET from `{r.get('dataset_source', '?')}`, "
        "splits/train.txt 1440 / "
        f"splits/val.txt {r['val_images']} images); code {r['git_revision']}.",
        "",
        "| figure | this run (.pt) | this run (.onnx, edge pre/post) | ultralytics' validator (.pt) "
        "| published |",
        "|---|---:|---:|---:|---:|",
        f"| mAP50 | {_pct(r['pt']['map50'])} | {_pct(r['onnx']['map50'])} | {_pct(ul.get('map50'))} "
        f"| {_pct(pub.get('map50'))} |",
        f"| mAP50-95 | {_pct(r['pt']['map50_95'])} | {_pct(r['onnx']['map50_95'])} "
        f"| {_pct(ul.get('map50_95'))} | {_pct(pub.get('map50_95'))} |",
        "",
        "The validator column is what training printed: ultralytics' validator on best.pt, run "
        "as the station sees frames (square letterbox, one label per box; runs before 2026-12 "
        "0.1 used its padded, multi-label default). It should equal the .pt column within 0.5 point.",
        "",
        f"Published: {pub.get('note', 'none for this model')}, trained from COCO-pretrained weights on "
        "their own random splits (NEU-DET has no official split); ours is trained from scratch "
        "(no weights can be downloaded offline), so the comparison is rough.",
        "",
        "Per class (.pt, val split), percent:",
        "",
        per_class,
        "",
        f"Calibrated with the station's policy (a defective unit in the review band below a threshold "
        f"is NO_DECISION, sent to a person): {cal['verdict']}; thresholds "
        + ", ".join(f"{k} {v:.3f}" for k, v in cal["thresholds"].items())
        + f". {_not_held_out(cal)}{cal['note']}",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
