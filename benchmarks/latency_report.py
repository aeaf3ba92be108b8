"""Report files of the latency benchmark: JSON, a markdown table and a latency histogram PNG.

The markdown puts every variant's figures and its ratios to ultralytics' predict side by side
(all from one run), holds each against this machine's compute floor, states the machine's load
while it ran, and checks the issue's goals (overhead <= 2 ms median, >= 3x faster than
ultralytics' predict, mAP50 within 1 point) in plain words rather than hiding a miss. A run at
several input sizes writes one file set: the floors once, then a section per size (the JSON is
then ``{"reports": [...]}``, one report per size; a single size writes the report itself).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lineguard.benchmarks.floors import Floor
from lineguard.benchmarks.latency import LatencyReport, StageStats, VariantResult
from lineguard.provenance import provenance_markdown

__all__ = ["markdown", "write_report"]

_LABELS = {"fsync": "fsync", "no_fsync": "no fsync"}


def _p50(stats: dict[str, StageStats], stage: str) -> str:
    return f"{stats[stage].p50_ms:.2f}" if stage in stats else "—"


def _p50_p99(stats: dict[str, StageStats], stage: str) -> str:
    st = stats.get(stage)
    return f"{st.p50_ms:.2f} / {st.p99_ms:.2f}" if st else "—"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def _ratio(r: VariantResult, key: str) -> str:
    return f"**{r.ratios[key]:.2f}x**" if key in r.ratios else "—"


def _truth(report: LatencyReport) -> list[str]:
    """The one table per size: every path's p50/p99, speed-up over predict, floor ratio, mAP50."""
    head = [
        "variant",
        "computes in",
        "certified",
        "inference p50 / p99",
        "frame→verdict p50 / p99",
        "predict ÷ frame→verdict",
        "floor ms",
        "inference ÷ floor",
        "mAP50",
    ]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|" + "---:|" * (len(head) - 3)]
    for r in report.variants:
        certified = "—" if r.certified is None else ("yes" if r.certified else "**no**")
        cells = [r.label, r.computes_in, certified, _p50_p99(r.stages, "inference")]
        cells += [_p50_p99(r.stages, "frame_to_verdict"), _ratio(r, "predict_over_frame_to_verdict")]
        cells += [_ms(r.floor_ms), _times(r.floor_ratio), _pct(r.map50)]
        lines.append("| " + " | ".join(cells) + " |")
    ul = report.ultralytics
    if ul:
        floor = _best_floor(report.floors, "fp32")
        floor_ms = 1e3 * report.gflops / floor if floor and report.gflops else None
        ratio = ul["ultralytics_inference"].p50_ms / floor_ms if floor_ms else None
        cells = ["ultralytics predict (ONNX)", "fp32", "—", _p50_p99(ul, "ultralytics_inference")]
        cells += [_p50_p99(ul, "predict"), "1.00x", _ms(floor_ms), _times(ratio)]
        lines.append("| " + " | ".join([*cells, _pct(report.ultralytics_map50)]) + " |")
    lines.append("")
    for r in report.variants:
        if r.precision_choice.startswith("auto"):
            lines.append(f'- {r.label}: the station\'s `precision: auto` said "{r.precision_choice}"')
    lines.append(
        "- predict ÷ frame→verdict: ultralytics' `predict` p50 over the variant's decoded frame → "
        "verdict p50 (above 1: faster than ultralytics). inference ÷ floor: inference p50 over "
        "the floor time of the variant's precision (1.0 would be the matmul floor)."
    )
    return lines


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _times(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def _best_floor(floors: Sequence[Floor], precision: str) -> float | None:
    found = [f.gflops for f in floors if f.precision == precision]
    return max(found) if found else None


def _floors(reports: Sequence[LatencyReport]) -> list[str]:
    """This machine's matmul floors and, per size, the model's floor time in each precision."""
    floors = reports[0].floors
    if not floors:
        return []
    sized = [r for r in reports if r.gflops]
    f0 = floors[0]
    lines = [
        "## Compute floors of this machine",
        "",
        f"Best of the {f0.size}² matmuls on {f0.threads} threads timed at the start and at the end of "
        "the run (GOP/s for int8; on a loaded machine a floor is depressed too). A model's "
        "floor time is its FLOPs (2 x the multiply-adds of every Conv, MatMul and Gemm in its ONNX "
        "graph: "
        + ", ".join(f"{r.gflops:.2f} GFLOPs at {r.settings['imgsz']} px" for r in sized)
        + ") over the best throughput of its precision.",
        "",
        "| precision | runtime | GFLOP/s | "
        + " | ".join(f"floor ms at {r.settings['imgsz']} px" for r in sized)
        + " |",
        "|---|---|---:|" + "---:|" * len(sized),
    ]
    for f in floors:
        times = [f"{1e3 * (r.gflops or 0.0) / f.gflops:.2f}" for r in sized]
        lines.append(f"| {f.precision} | {f.runtime} | {f.gflops:.0f} | " + " | ".join(times) + " |")
    missing = [p for p in ("fp32", "bf16", "int8") if not any(f.precision == p for f in floors)]
    if missing:
        lines += ["", f"Not measured: {', '.join(missing)} (this CPU lacks the instructions or the runtime)."]
    return [*lines, ""]


def _summary(report: LatencyReport) -> list[str]:
    modes = report.mqtt.get("outbox_modes", [])
    head = ["backend", "precision", "inference p50", "frame→verdict p50 / p99"]
    head += [f"e2e via MQTT p50 / p99 ({_LABELS[m]})" for m in modes]
    head += [f"overhead p50 ({_LABELS[m]})" for m in modes] or ["overhead p50 (no MQTT)"]
    head += ["ultralytics predict p50", "predict ÷ frame→verdict"]
    head += ["ultralytics decode+predict p50", f"decode+predict ÷ e2e ({_LABELS[modes[0]]})"] if modes else []
    head += ["mAP50"]
    predict = _p50(report.ultralytics, "predict")
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for r in report.variants:
        precision = r.precision + (" + frame store" if r.frame_store else "")
        backend = r.backend if r.label.startswith(r.backend) else f"{r.label.split(' (')[0]}: {r.backend}"
        cells = [backend, precision, _p50(r.stages, "inference"), _p50_p99(r.stages, "frame_to_verdict")]
        cells += [_p50_p99(r.stages, f"e2e_{m}") for m in modes]
        cells += [_p50(r.stages, f"overhead_e2e_{m}") for m in modes] or [_p50(r.stages, "overhead")]
        cells += [predict, _ratio(r, "predict_over_frame_to_verdict")]
        if modes:
            cells += [
                _p50(report.ultralytics, "decode_predict"),
                _ratio(r, f"decode_predict_over_e2e_{modes[0]}"),
            ]
        cells += [_pct(r.map50)]
        lines.append("| " + " | ".join(cells) + " |")
    if report.ultralytics:
        ul = report.ultralytics
        cells = ["ultralytics predict", "fp32", _p50(ul, "ultralytics_inference"), "—"]
        cells += ["—"] * (2 * len(modes) or 1)
        cells += [predict, "1.00x"] + (["—", "—"] if modes else []) + [_pct(report.ultralytics_map50)]
        lines.append("| " + " | ".join(cells) + " |")
    ov = report.ultralytics_openvino
    if ov and report.ultralytics:
        speedup = report.ultralytics["predict"].p50_ms / ov["predict"].p50_ms
        cells = ["ultralytics predict, its OpenVINO export", "fp32", _p50(ov, "ultralytics_inference"), "—"]
        cells += ["—"] * (2 * len(modes) or 1)
        cells += [_p50(ov, "predict"), f"{speedup:.2f}x"] + (["—", "—"] if modes else [])
        lines.append("| " + " | ".join([*cells, _pct(report.ultralytics_openvino_map50)]) + " |")
    return lines


def _stages(report: LatencyReport) -> list[str]:
    names: list[str] = []
    for r in report.variants:
        names += [n for n in r.stages if n not in names]
    lines = [
        "| stage | " + " | ".join(r.label for r in report.variants) + " |",
        "|---|" + "---:|" * len(report.variants),
    ]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(_p50_p99(r.stages, name) for r in report.variants) + " |")
    if report.ultralytics:
        ov = report.ultralytics_openvino
        lines += ["", "| ultralytics stage | ONNX p50 / p99 |" + (" its OpenVINO export |" if ov else "")]
        lines += ["|---|---:|" + ("---:|" if ov else "")]
        for n in report.ultralytics:
            lines.append(
                f"| {n} | {_p50_p99(report.ultralytics, n)} |" + (f" {_p50_p99(ov, n)} |" if ov else "")
            )
    return lines


def _goals(report: LatencyReport) -> list[str]:
    modes = report.mqtt.get("outbox_modes", [])
    e2e = f"e2e_{modes[0]}" if modes else "frame_to_verdict"
    fastest = min(report.variants, key=lambda r: r.stages[e2e].p50_ms if e2e in r.stages else np.inf)
    lines = [f"Goal check (fastest variant by median {e2e}: **{fastest.label}**):", ""]
    for m in modes or [None]:
        stage = f"overhead_e2e_{m}" if m else "overhead"
        if stage in fastest.stages:
            value = fastest.stages[stage].p50_ms
            what = f"through the outbox ({_LABELS[m]}) and MQTT" if m else "without publishing"
            verdict = "met" if value <= 2.0 else "NOT met"
            lines.append(f"- overhead {what}: median {value:.2f} ms vs goal ≤ 2 ms: {verdict}")
    keys = ["predict_over_frame_to_verdict"]
    keys += [f"decode_predict_over_e2e_{modes[0]}"] if modes else []
    for key in keys:
        if key in fastest.ratios:
            value = fastest.ratios[key]
            what = key.replace("_over_", " ÷ edge ").replace("_", " ")
            verdict = "met" if value >= 3.0 else "NOT met"
            lines.append(f"- ultralytics {what} (medians): {value:.2f}x vs goal ≥ 3x: {verdict}")
    if "openvino_predict_over_frame_to_verdict" in fastest.ratios:
        value = fastest.ratios["openvino_predict_over_frame_to_verdict"]
        lines.append(
            f"- for reference, ultralytics predict on its own OpenVINO export ÷ edge frame→verdict "
            f"(medians): {value:.2f}x (the goal is set against predict on the ONNX)"
        )
    base = report.ultralytics_map50
    if base is None and report.variants[0].map50 is not None:
        base = report.variants[0].map50
    if base is not None:
        for r in report.variants:
            if r.map50 is not None:
                change = 100 * (r.map50 - base)
                mark = "within 1 point" if abs(change) <= 1.0 else "MORE than 1 point"
                lines.append(f"- mAP50 {r.label}: {100 * r.map50:.1f} ({change:+.1f} points, {mark})")
    return lines


def _kept(counts: dict[str, float]) -> str:
    share = counts.get("share", 1.0)
    if share >= 1.0:
        return "every frame kept (share 1.0, the worst case)"
    return f"{100 * share:g} % of frames kept (a line's FAILs, NO_DECISIONs and sampled PASSes)"


def _frame_store(report: LatencyReport) -> list[str]:
    """Frame→verdict with the frame store on ÷ off, per variant measured both ways."""
    off = {(r.backend, r.precision, r.model): r for r in report.variants if not r.frame_store}
    lines = []
    for on in (r for r in report.variants if r.frame_store):
        base = off.get((on.backend, on.precision, on.model))
        if base is None or "frame_to_verdict" not in base.stages:
            continue
        a, b = on.stages["frame_to_verdict"], base.stages["frame_to_verdict"]
        cost = on.stages["frame_store"]
        counts = on.frame_store
        lines.append(
            f"- frame store, {base.label}: frame→verdict p50 {a.p50_ms:.2f} ms on vs {b.p50_ms:.2f} off "
            f"(**{a.p50_ms / b.p50_ms:.3f}x**), p99 {a.p99_ms:.2f} vs {b.p99_ms:.2f}; on the inspection "
            f"thread after the verdict (plan + copy + hand-off) p50 {cost.p50_ms:.3f} ms; {_kept(counts)}: "
            f"{counts.get('kept', 0)} in the store "
            f"({counts.get('bytes', 0)} bytes), {counts.get('dropped_busy', 0)} not kept (writer behind)"
        )
    if lines:
        lines = ["## Frame store on vs off (same run, alternating blocks)", "", *lines, ""]
    return lines


def _busy(settings: dict[str, Any]) -> bool:
    """Other work ran when the benchmark started: 1-minute load above a quarter of the cores."""
    return float(settings["load_avg_start"][0]) > 0.25 * int(settings["cpu_count"])


def _omp_policy(value: str | None) -> str:
    if value is None:
        return (
            "OMP_WAIT_POLICY unset (spinning): run again with OMP_WAIT_POLICY=PASSIVE for a baseline "
            "without that contention."
        )
    if value == "PASSIVE":
        return (
            "OMP_WAIT_POLICY=PASSIVE (`lineguard bench latency`'s default, so those threads sleep; "
            "OMP_WAIT_POLICY=ACTIVE shows predict slowed by them)."
        )
    return f"OMP_WAIT_POLICY={value}."


def _load_line(s: dict[str, Any]) -> str:
    la0, la1 = s["load_avg_start"], s["load_avg_end"]
    busy = _busy(s)
    return (
        (
            "**Absolute times were taken under load**: "
            if busy
            else "The machine was idle at the start (the end figure includes this benchmark's own load): "
        )
        + f"load average (1/5/15 min) {la0[0]}/{la0[1]}/{la0[2]} at the start, "
        f"{la1[0]}/{la1[1]}/{la1[2]} at the end on {s['cpu_count']} cores."
        + (" Quote the ratios; the milliseconds are pessimistic." if busy else "")
    )


def _sections(report: LatencyReport, h: str) -> list[str]:
    """One size's tables, under headings of level ``h`` (``##`` or ``###``)."""
    lines = [f"{h} Against ultralytics and the floor (ms)", "", *_truth(report), ""]
    lines += [f"{h} Summary (ms)", "", *_summary(report), "", *_goals(report), ""]
    lines += [line.replace("## ", f"{h} ", 1) for line in _frame_store(report)]
    lines += [f"{h} Per stage (p50 / p99 ms)", "", *_stages(report), ""]
    fps = ", ".join(f"{r.label} {r.fps:.1f}" for r in report.variants)
    lines.append(f"Throughput (1 / mean frame→verdict, one thread): {fps} frames/s")
    if report.ultralytics_fps is not None:
        lines[-1] += f"; ultralytics predict {report.ultralytics_fps:.1f} frames/s"
    runtimes = ", ".join(f"{r.label}: {r.runtime}" for r in report.variants)
    return [*lines, "", f"Runtimes actually used: {runtimes}.", ""]


def markdown(reports: LatencyReport | Sequence[LatencyReport]) -> str:
    """The report of one run: at one input size, or a section per size after the floors."""
    several = [reports] if isinstance(reports, LatencyReport) else list(reports)
    report = several[0]
    s = report.settings
    model = s.get("model_label") or Path(s["model"]).name
    sizes = ", ".join(str(r.settings["imgsz"]) for r in several)
    lines = [
        f"# Edge latency: {model} at {sizes} px, {s['threads']} threads",
        "",
        *(provenance_markdown(report.provenance) if report.provenance else []),
        f"{s['frames']} frames: "
        + s.get("frames_of", f"JPEG frames of {s.get('frame_size')} (synthetic units)")
        + " (the decode, `capture`, stands in for the camera and is shown apart); policy conf "
        f"{s['conf']}, NMS IoU {s['iou']}; CPU {s['cpu']}, {s['cpu_count']} cores. All paths ran "
        "in alternating blocks of 10 frames in this one run, so ratios compare like with like.",
        "",
    ]
    if len(several) == 1:
        lines += [_load_line(s), ""]
    if report.mqtt.get("broker"):
        lines += [
            f"End to end via MQTT: each verdict is committed to the real SQLite outbox and published "
            f"by `MqttDelivery` (QoS 1) to {report.mqtt['broker']}; a paho subscriber (QoS 1) stamps "
            "its arrival. e2e = capture start → received; overhead = e2e − capture − inference. "
            "Outbox with fsync (`durable=True`, the default: the delivery's drain thread fsyncs the "
            "WAL right after the publish, and each unit waits for that before the next) and "
            f"without were used in turn, unit by unit. Lost: {report.variants[0].lost}.",
            "",
        ]
    else:
        lines += [f"End to end via MQTT: {report.mqtt.get('skipped', 'not measured')}.", ""]
    if s.get("data"):
        lines += [
            f"mAP50 on {s['data']} ({s['split']}), conf 0.001, IoU 0.7 (lineguard evaluate's settings).",
            "",
        ]
    lines += [
        "Ratios: *predict ÷ frame→verdict* compares decoded frame → boxes (ultralytics) with decoded "
        "frame → verdict (edge); *decode+predict ÷ e2e* compares JPEG bytes → boxes (ultralytics, "
        "nothing published) with JPEG bytes → verdict received by the MQTT subscriber (edge).",
        "",
        "Ultralytics prepares each frame with torch, whose OpenMP threads keep spinning after that "
        "work and can slow the onnxruntime call that follows on a small CPU; this run had "
        + _omp_policy(s.get("omp_wait_policy")),
        "",
        *_floors(several),
    ]
    if len(several) == 1:
        lines += _sections(report, "##")
    else:
        for r in several:
            lines += [f"## {r.settings['imgsz']} px", "", _load_line(r.settings), "", *_sections(r, "###")]
    return "\n".join(lines).rstrip("\n") + "\n"


def _histogram(reports: Sequence[LatencyReport], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(reports), 1, figsize=(7, 3.8 * len(reports)), squeeze=False)
    for ax, report in zip(axes[:, 0], reports, strict=True):
        everything = [v for values in report.samples_ms.values() for v in values]
        top = float(np.percentile(everything, 99)) * 1.05 if everything else 1.0
        bins = np.linspace(0.0, top, 60).tolist()
        for label, values in report.samples_ms.items():
            if values:
                ax.hist(
                    values,
                    bins=bins,
                    alpha=0.5,
                    histtype="stepfilled",
                    label=f"{label} (p50 {np.median(values):.1f} ms)",
                )
        s = report.settings
        load = " (machine under load)" if _busy(s) else ""
        ax.set_title(f"{Path(s['model']).name}, {s['imgsz']} px, {s['frames']} frames{load}")
        ax.set_xlabel("latency (ms)")
        ax.set_ylabel("frames")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_report(
    reports: LatencyReport | Sequence[LatencyReport], out_dir: Path, name: str = "latency"
) -> dict[str, Path]:
    """Write ``NAME.json``, ``NAME.md`` and ``NAME.png`` into ``out_dir`` (one set for all sizes)."""
    several = [reports] if isinstance(reports, LatencyReport) else list(reports)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        kind: out_dir / f"{name}.{ext}"
        for kind, ext in (("json", "json"), ("markdown", "md"), ("png", "png"))
    }
    if len(several) == 1:
        text = several[0].to_json()
    else:
        text = json.dumps({"reports": [json.loads(r.to_json()) for r in several]}, indent=2)
    paths["json"].write_text(text + "\n")
    paths["markdown"].write_text(markdown(several))
    _histogram(several, paths["png"])
    return paths
