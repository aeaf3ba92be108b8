"""Report files of the latency benchmark: JSON, a markdown table and a latency histogram PNG.

The markdown puts every variant's figures and its ratios to ultralytics' predict side by side
(all from one run), states the machine's load while it ran, and checks the issue's goals
(overhead <= 2 ms median, >= 3x faster than ultralytics' predict, mAP50 within 1 point) in
plain words rather than hiding a miss.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

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
        cells = [r.backend, precision, _p50(r.stages, "inference"), _p50_p99(r.stages, "frame_to_verdict")]
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


def markdown(report: LatencyReport) -> str:
    s = report.settings
    la0, la1 = s["load_avg_start"], s["load_avg_end"]
    busy = _busy(s)
    model = s.get("model_label") or Path(s["model"]).name
    lines = [
        f"# Edge latency: {model} at {s['imgsz']} px, {s['threads']} threads",
        "",
        *(provenance_markdown(report.provenance) if report.provenance else []),
        f"{s['frames']} frames: "
        + s.get("frames_of", f"JPEG frames of {s.get('frame_size')} (synthetic units)")
        + " (the decode, `capture`, stands in for the camera and is shown apart); policy conf "
        f"{s['conf']}, NMS IoU {s['iou']}; CPU {s['cpu']}, {s['cpu_count']} cores. All paths ran "
        "in alternating blocks of 10 frames in this one run, so ratios compare like with like.",
        "",
        (
            "**Absolute times were taken under load**: "
            if busy
            else "The machine was idle at the start (the end figure includes this benchmark's own load): "
        )
        + f"load average (1/5/15 min) {la0[0]}/{la0[1]}/{la0[2]} at the start, "
        f"{la1[0]}/{la1[1]}/{la1[2]} at the end on {s['cpu_count']} cores."
        + (" Quote the ratios; the milliseconds are pessimistic." if busy else ""),
        "",
    ]
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
    ]
    lines += ["## Summary (ms)", "", *_summary(report), "", *_goals(report), ""]
    lines += _frame_store(report)
    lines += ["## Per stage (p50 / p99 ms)", "", *_stages(report), ""]
    fps = ", ".join(f"{r.label} {r.fps:.1f}" for r in report.variants)
    lines.append(f"Throughput (1 / mean frame→verdict, one thread): {fps} frames/s")
    if report.ultralytics_fps is not None:
        lines[-1] += f"; ultralytics predict {report.ultralytics_fps:.1f} frames/s"
    runtimes = ", ".join(f"{r.label}: {r.runtime}" for r in report.variants)
    lines += ["", f"Runtimes actually used: {runtimes}."]
    return "\n".join(lines) + "\n"


def _histogram(report: LatencyReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.8))
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


def write_report(report: LatencyReport, out_dir: Path, name: str = "latency") -> dict[str, Path]:
    """Write ``NAME.json``, ``NAME.md`` and ``NAME.png`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        kind: out_dir / f"{name}.{ext}"
        for kind, ext in (("json", "json"), ("markdown", "md"), ("png", "png"))
    }
    paths["json"].write_text(report.to_json() + "\n")
    paths["markdown"].write_text(markdown(report))
    _histogram(report, paths["png"])
    return paths
