"""Latency benchmark of the edge inference path, per stage, against ultralytics' own predict.

One run decodes the same JPEG frames through the edge path (capture/decode -> quality gate ->
preprocess -> inference -> postprocess -> verdict policy, plus any extra stages a caller adds,
e.g. publish) and through ``YOLO(model.onnx).predict``, then reports p50/p95/p99 per stage,
throughput and the ratios of medians. The machine is shared and noisy, so only figures from one
run are compared, and the two paths alternate in blocks of frames so both see the same load.
``EdgePipeline`` / ``run_edge_pipeline`` are the pieces to extend: the MQTT/daemon benchmarks pass
their own stages (publish, capture-to-acknowledged) as ``extra_stages``.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from lineguard.config import ModelConfig, PolicyConfig, QualityConfig
from lineguard.edge import Decision, Detector, QualityGate, VerdictPolicy
from lineguard.synthetic import render_unit

__all__ = [
    "EDGE_STAGES",
    "EdgePipeline",
    "LatencyRecorder",
    "LatencyReport",
    "StageStats",
    "UltralyticsPredict",
    "encode_frames",
    "run_edge_pipeline",
    "run_latency_benchmark",
    "write_report",
]

Frame = npt.NDArray[np.uint8]
ExtraStage = Callable[[Decision, Frame], object]
EDGE_STAGES = ("capture", "quality", "preprocess", "inference", "postprocess", "verdict")


@dataclass(frozen=True)
class StageStats:
    """Summary of one stage's samples, in milliseconds."""

    n: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> StageStats:
        ms = np.asarray(seconds, np.float64) * 1e3
        if ms.size == 0:
            return cls(0, *(float("nan"),) * 6)
        p50, p95, p99 = np.percentile(ms, [50, 95, 99])
        return cls(
            int(ms.size),
            float(p50),
            float(p95),
            float(p99),
            float(ms.mean()),
            float(ms.min()),
            float(ms.max()),
        )


@dataclass
class LatencyRecorder:
    """Seconds per named stage, in the order stages were first seen."""

    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, stage: str, seconds: float) -> None:
        self.samples.setdefault(stage, []).append(seconds)

    def stats(self) -> dict[str, StageStats]:
        return {stage: StageStats.of(values) for stage, values in self.samples.items()}


def encode_frames(count: int, *, width: int, height: int, seed: int = 0, unique: int = 24) -> list[bytes]:
    """``count`` JPEG frames of synthetic units, ``width`` x ``height``; ``unique`` distinct ones cycle."""
    side = min(max(width, height), 640)  # render small, resize: a 1280 px unit takes ~0.4 s to draw
    pool = []
    for i in range(min(unique, count)):
        image = cv2.resize(render_unit(seed, i, imgsz=side).image, (width, height))
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise RuntimeError("OpenCV could not encode a JPEG frame")
        pool.append(buf.tobytes())
    return [pool[i % len(pool)] for i in range(count)]


def _decode(jpeg: bytes) -> Frame:
    frame = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if frame is None:
        raise RuntimeError("a benchmark frame did not decode")
    return frame.astype(np.uint8, copy=False)


@dataclass
class EdgePipeline:
    """The edge path for one frame, timed per stage; ``extra_stages`` run after the verdict in order.

    Extra stages (e.g. ``{"publish": publish_fn}``) are timed as stages of their own and count in
    ``end_to_end``. ``pipeline`` is end to end minus capture and inference: the overhead our code
    adds around the model.
    """

    detector: Detector
    policy: VerdictPolicy
    gate: QualityGate
    extra_stages: Mapping[str, ExtraStage] = field(default_factory=dict)
    recorder: LatencyRecorder = field(default_factory=LatencyRecorder)

    def step(self, jpeg: bytes, *, record: bool = True) -> Decision:
        t0 = time.perf_counter()
        frame = _decode(jpeg)
        t1 = time.perf_counter()
        report = self.gate.check(frame)
        t2 = time.perf_counter()
        detections, times = self.detector.detect(frame)
        t3 = time.perf_counter()
        decision = self.policy.decide(detections, quality=report, elapsed_ms=(t3 - t0) * 1e3)
        t4 = end = time.perf_counter()
        extra_times = {}
        for name, stage in self.extra_stages.items():
            stage(decision, frame)
            now = time.perf_counter()
            extra_times[name] = now - end
            end = now
        if record:
            for name, seconds in (
                ("capture", t1 - t0),
                ("quality", t2 - t1),
                ("preprocess", times.preprocess_s),
                ("inference", times.inference_s),
                ("postprocess", times.postprocess_s),
                ("verdict", t4 - t3),
                *extra_times.items(),
                ("frame_to_verdict", t4 - t1),
                ("end_to_end", end - t0),
                ("pipeline", (end - t0) - (t1 - t0) - times.inference_s),
            ):
                self.recorder.add(name, seconds)
        return decision


def run_edge_pipeline(
    detector: Detector,
    policy: VerdictPolicy,
    gate: QualityGate,
    jpegs: Sequence[bytes],
    *,
    warmup: int = 10,
    extra_stages: Mapping[str, ExtraStage] | None = None,
) -> tuple[LatencyRecorder, float]:
    """Time each stage of the edge path over ``jpegs``; return the samples and frames per second."""
    pipeline = EdgePipeline(detector, policy, gate, dict(extra_stages or {}))
    for jpeg in jpegs[:warmup]:
        pipeline.step(jpeg, record=False)
    for jpeg in jpegs:
        pipeline.step(jpeg)
    return pipeline.recorder, _fps(pipeline.recorder, "end_to_end")


def _fps(recorder: LatencyRecorder, stage: str) -> float:
    samples = recorder.samples.get(stage, [])
    return len(samples) / sum(samples) if samples else float("nan")


class UltralyticsPredict:
    """``YOLO(model).predict`` per decoded frame: wall clock plus ultralytics' own stage timings."""

    def __init__(self, model_path: Path, *, imgsz: int, conf: float, iou: float) -> None:
        from lineguard.training.offline import load_ultralytics

        yolo_class: Any = load_ultralytics().YOLO  # through the module: its own annotations are loose
        self._model = yolo_class(str(model_path), task="detect")
        self._kwargs = {"imgsz": imgsz, "conf": conf, "iou": iou, "verbose": False}
        self.recorder = LatencyRecorder()

    def step(self, frame: Frame, *, record: bool = True) -> None:
        t0 = time.perf_counter()
        result = self._model.predict(frame, **self._kwargs)[0]
        if record:
            self.recorder.add("predict", time.perf_counter() - t0)
            for stage, ms in result.speed.items():
                self.recorder.add(f"ultralytics_{stage}", (ms or 0.0) / 1e3)


def _interleaved(
    pipeline: EdgePipeline,
    reference: UltralyticsPredict | None,
    jpegs: Sequence[bytes],
    *,
    warmup: int,
    block: int,
) -> None:
    """Alternate blocks of frames between the two paths, so both see the same load on a shared machine."""
    frames = [_decode(jpeg) for jpeg in jpegs] if reference is not None else []
    for i in range(min(warmup, len(jpegs))):
        pipeline.step(jpegs[i], record=False)
        if reference is not None:
            reference.step(frames[i], record=False)
    for first in range(0, len(jpegs), block):
        for jpeg in jpegs[first : first + block]:
            pipeline.step(jpeg)
        if reference is not None:
            for frame in frames[first : first + block]:
                reference.step(frame)


@dataclass
class LatencyReport:
    """Everything one run measured; ``ratios`` compare medians from this same run."""

    settings: dict[str, Any]
    edge: dict[str, StageStats]
    edge_fps: float
    ultralytics: dict[str, StageStats] = field(default_factory=dict)
    ultralytics_fps: float | None = None
    ratios: dict[str, float] = field(default_factory=dict)
    samples_ms: dict[str, list[float]] = field(default_factory=dict)

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("samples_ms")
        return json.dumps(data, indent=2)


def run_latency_benchmark(
    model_path: Path,
    *,
    backend: str = "onnxruntime",
    precision: str = "fp32",
    threads: int = 2,
    frames: int = 200,
    frame_size: tuple[int, int] = (1280, 1024),
    warmup: int = 10,
    conf: float = 0.05,
    iou: float = 0.45,
    compare_ultralytics: bool = True,
) -> LatencyReport:
    """Measure the edge path (and ultralytics' predict) on the same synthetic JPEG frames."""
    cfg = ModelConfig(backend=backend, precision=precision, threads=threads, warmup_runs=3)  # type: ignore[arg-type]
    jpegs = encode_frames(frames, width=frame_size[0], height=frame_size[1])
    with Detector.load(model_path, cfg, min_confidence=conf, nms_iou=iou) as detector:
        policy = VerdictPolicy(detector.card, PolicyConfig(min_confidence=conf, nms_iou=iou))
        gate = QualityGate(QualityConfig(), frozen_frames=1_000_000)  # frames cycle: not a frozen camera
        pipeline = EdgePipeline(detector, policy, gate)
        imgsz, backend_name = detector.input_size, detector.backend
        reference = None
        if compare_ultralytics:
            reference = UltralyticsPredict(model_path, imgsz=imgsz, conf=conf, iou=iou)
        _interleaved(pipeline, reference, jpegs, warmup=warmup, block=10)
    recorder = pipeline.recorder
    report = LatencyReport(
        settings={
            "model": str(model_path),
            "imgsz": imgsz,
            "backend": backend_name,
            "precision": precision,
            "threads": threads,
            "frames": frames,
            "frame_size": f"{frame_size[0]}x{frame_size[1]}",
            "conf": conf,
            "iou": iou,
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
        },
        edge=recorder.stats(),
        edge_fps=_fps(recorder, "end_to_end"),
        samples_ms={f"edge {k}": [s * 1e3 for s in v] for k, v in recorder.samples.items()},
    )
    if reference is not None:
        ul = reference.recorder
        report.ultralytics, report.ultralytics_fps = ul.stats(), _fps(ul, "predict")
        report.samples_ms["ultralytics predict"] = [s * 1e3 for s in ul.samples["predict"]]
        predict = report.ultralytics["predict"].p50_ms
        report.ratios = {
            "ultralytics_predict_over_edge_frame_to_verdict": predict
            / report.edge["frame_to_verdict"].p50_ms,
            "ultralytics_inference_over_edge_inference": report.ultralytics["ultralytics_inference"].p50_ms
            / report.edge["inference"].p50_ms,
        }
    return report


def _markdown(report: LatencyReport) -> str:
    s = report.settings
    lines = [
        f"# Edge latency: {Path(s['model']).name} at {s['imgsz']} px on {s['backend']} ({s['precision']}, "
        f"{s['threads']} threads)",
        "",
        f"{s['frames']} JPEG frames of {s['frame_size']}; conf {s['conf']}, NMS IoU {s['iou']}.",
        "",
        "| path | stage | p50 ms | p95 ms | p99 ms | mean ms |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for path, stats in (("edge", report.edge), ("ultralytics", report.ultralytics)):
        for stage, st in stats.items():
            cells = (st.p50_ms, st.p95_ms, st.p99_ms, st.mean_ms)
            lines.append(f"| {path} | {stage} | " + " | ".join(f"{v:.2f}" for v in cells) + " |")
    throughput = f"Throughput: edge {report.edge_fps:.1f} frames/s (1 / mean end to end, one thread)"
    if report.ultralytics_fps is not None:
        throughput += f"; ultralytics predict {report.ultralytics_fps:.1f} frames/s"
    lines += ["", throughput + ".", ""]
    for name, value in report.ratios.items():
        lines.append(f"- {name.replace('_', ' ')}: **{value:.2f}x**")
    return "\n".join(lines) + "\n"


def _histogram(report: LatencyReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    series = {
        "edge frame->verdict": report.samples_ms.get("edge frame_to_verdict", []),
        "edge inference": report.samples_ms.get("edge inference", []),
        "ultralytics predict": report.samples_ms.get("ultralytics predict", []),
    }
    everything = [v for values in series.values() for v in values]
    top = float(np.percentile(everything, 99.5)) * 1.05 if everything else 1.0
    bins = np.linspace(0.0, top, 60).tolist()
    for label, values in series.items():
        if values:
            ax.hist(values, bins=bins, alpha=0.55, label=f"{label} (p50 {np.median(values):.1f} ms)")
    s = report.settings
    ax.set_title(f"{s['imgsz']} px, {s['backend']} {s['precision']}, {s['frames']} frames")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("frames")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(report: LatencyReport, out_dir: Path) -> dict[str, Path]:
    """Write ``latency.json``, ``latency.md`` and ``latency.png`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / "latency.json",
        "markdown": out_dir / "latency.md",
        "png": out_dir / "latency.png",
    }
    paths["json"].write_text(report.to_json() + "\n")
    paths["markdown"].write_text(_markdown(report))
    _histogram(report, paths["png"])
    return paths
