"""Latency benchmark of the edge path, per stage and end to end, against ultralytics' own predict.

One run decodes the same JPEG frames through the edge path (capture/decode -> quality gate ->
preprocess -> inference -> postprocess -> verdict policy) on every backend/precision asked for,
optionally commits each verdict through the real outbox and MQTT delivery until a subscriber
receives it, and runs ``YOLO(model.onnx).predict`` on the same frames (and, when OpenVINO is
measured and the model's PyTorch weights are at hand, ``predict`` on ultralytics' own OpenVINO
export of those weights, so OpenVINO is compared with OpenVINO too); the paths alternate in
blocks of frames so all see the same load on a shared machine, and ratios of medians compare
them. With a dataset it also scores every variant's mAP50 on the validation split, so a speed-up
never hides an accuracy loss. ``frame_store`` adds each variant once more with the station's frame
store on (every frame kept: the worst case), in the same alternating blocks, so frame→verdict with
and without it compare like with like. ``Variant.default`` is the station as the README
configures it (``precision: auto`` choosing among the card's certified variants), and
``add_floors`` holds each variant's inference against this CPU's compute floor (``floors``).
The report files are written by ``latency_report``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from lineguard.benchmarks.floors import Floor, floor_precision
from lineguard.benchmarks.frame_store import StoreLeg
from lineguard.benchmarks.latency_accuracy import Accuracy, ValidationSet, score
from lineguard.benchmarks.latency_mqtt import MqttProbe
from lineguard.config import FrameStoreConfig, ModelConfig, PolicyConfig, QualityConfig
from lineguard.inference import (
    CARD_NAME,
    Decision,
    Detections,
    Detector,
    QualityGate,
    VerdictPolicy,
    quality_bounds,
)
from lineguard.messages import ModelCard, utc_now
from lineguard.provenance import cpu_summary
from lineguard.synthetic import render_unit
from lineguard.training.evaluate import EVAL_CONF, EVAL_IOU

__all__ = [
    "EDGE_STAGES",
    "EdgePipeline",
    "LatencyRecorder",
    "LatencyReport",
    "StageStats",
    "UltralyticsPredict",
    "Variant",
    "VariantResult",
    "add_floors",
    "card_variants",
    "encode_frames",
    "run_latency_benchmark",
]

Frame = npt.NDArray[np.uint8]
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


def dataset_frames(val: ValidationSet, count: int) -> tuple[list[bytes], str]:
    """``count`` frames from ``val``'s own image files (cycled), and what they are, for the report.

    The files are timed as they are (JPEG, PNG, ...): their decode is the ``capture`` stage.
    """
    pool = [item.path.read_bytes() for _, item in val.items]
    sizes = sorted({f"{image.shape[1]}x{image.shape[0]}" for image, _ in val.items})
    shown = ", ".join(sizes[:3]) + (f" and {len(sizes) - 3} more sizes" if len(sizes) > 3 else "")
    what = f"{len(pool)} images of {val.data.name} ({val.split} split, {shown})"
    return [pool[i % len(pool)] for i in range(count)], what


def _decode(jpeg: bytes) -> Frame:
    frame = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if frame is None:
        raise RuntimeError("a benchmark frame did not decode")
    return frame.astype(np.uint8, copy=False)


@dataclass(frozen=True)
class Variant:
    """One way of running the model: backend, precision and the ONNX file (int8 has its own).

    ``station_default`` is the station as the README configures it: ``ModelConfig()``'s backend
    and precision (auto), the card as it is, so ``precision: auto`` picks among its certified
    variants exactly as at a station. ``certified``/``sha256`` mark a variant listed in the card.
    """

    backend: str
    precision: str
    model_path: Path
    frame_store: bool = False  # the frame store keeps every frame of this variant's units
    station_default: bool = False
    certified: bool | None = None  # None: not from the card's variant list
    sha256: str | None = None  # the card variant's file hash (the card's own names model.onnx)

    @classmethod
    def default(cls, model_path: Path) -> Variant:
        return cls("auto", "auto", model_path, station_default=True)

    @property
    def label(self) -> str:
        if self.station_default:
            name = "default (precision auto)"
        else:
            name = f"{self.backend} {self.precision}"
            if self.certified is not None:
                name += " (certified)" if self.certified else " (NOT certified)"
        return name + (" + frame store" if self.frame_store else "")

    def card(self) -> ModelCard:
        """The card beside the file. A benchmark times the file and precision a variant names, as
        evaluation does, whether or not the card certifies it (its variant list dropped); the
        station default keeps the list, to choose from it."""
        card = ModelCard.load(self.model_path.parent / CARD_NAME)
        if self.station_default:
            return card
        return card.model_copy(update={"variants": [], "sha256": self.sha256 or card.sha256})

    def config(self, threads: int, warmup_runs: int = 3) -> ModelConfig:
        if self.station_default:  # ModelConfig() as shipped; only the thread count is the benchmark's
            return ModelConfig().model_copy(update={"threads": threads})
        return ModelConfig(
            backend=self.backend,  # type: ignore[arg-type]
            precision=self.precision,  # type: ignore[arg-type]
            threads=threads,
            warmup_runs=warmup_runs,
        )


def card_variants(model_path: Path) -> list[Variant]:
    """Every variant the model's card lists, certified or not (each marked), on its own runtime."""
    card = ModelCard.load(model_path.parent / CARD_NAME)
    return [
        Variant(
            v.runtime,
            v.precision,
            model_path.parent / v.file if v.file else model_path,
            certified=v.certified,
            sha256=v.sha256,
        )
        for v in card.variants
    ]


@dataclass
class EdgePipeline:
    """The edge path for one frame, timed per stage; ``probes`` add the MQTT end-to-end leg.

    Stages: ``capture`` (JPEG decode: stands in for the camera), ``quality``, ``preprocess``,
    ``inference``, ``postprocess``, ``verdict``; ``frame_to_verdict`` spans decoded frame ->
    decision and ``overhead`` is that minus inference. With probes (used in turn, one per unit),
    per probe label L: ``commit_L`` (outbox add + wake), ``deliver_L`` (commit -> subscriber),
    ``e2e_L`` (capture start -> subscriber) and ``overhead_e2e_L`` (e2e minus capture and
    inference: what our code adds around the model, publishing included).
    """

    detector: Detector
    policy: VerdictPolicy
    gate: QualityGate
    probes: Sequence[MqttProbe] = ()
    store: StoreLeg | None = None  # ``frame_store``: plan + copy + hand-off after each decision
    recorder: LatencyRecorder = field(default_factory=LatencyRecorder)
    _units: int = 0

    def step(self, jpeg: bytes, *, record: bool = True) -> Decision:
        captured_at = utc_now()
        t0 = time.perf_counter()
        frame = _decode(jpeg)
        t1 = time.perf_counter()
        report = self.gate.check(frame)
        t2 = time.perf_counter()
        detections, times = self.detector.detect(frame)
        t3 = time.perf_counter()
        decision = self.policy.decide(detections, quality=report, elapsed_ms=(t3 - t0) * 1e3)
        t4 = time.perf_counter()
        samples = {
            "capture": t1 - t0,
            "quality": t2 - t1,
            "preprocess": times.preprocess_s,
            "inference": times.inference_s,
            "postprocess": times.postprocess_s,
            "verdict": t4 - t3,
            "frame_to_verdict": t4 - t1,
            "overhead": t4 - t1 - times.inference_s,
        }
        if self.store is not None:
            samples["frame_store"] = self.store.offer(frame, decision, detections, self.policy)
        if self.probes:
            probe = self.probes[self._units % len(self.probes)]
            self._units += 1
            committed, received = probe.send(decision, captured_at, t4 - t0)
            samples[f"commit_{probe.label}"] = committed - t4
            if received is not None:
                samples[f"deliver_{probe.label}"] = received - committed
                samples[f"e2e_{probe.label}"] = received - t0
                samples[f"overhead_e2e_{probe.label}"] = received - t1 - times.inference_s
        if record:
            for name, seconds in samples.items():
                self.recorder.add(name, seconds)
        return decision


def _fps(recorder: LatencyRecorder, stage: str) -> float:
    samples = recorder.samples.get(stage, [])
    return len(samples) / sum(samples) if samples else float("nan")


class UltralyticsPredict:
    """``YOLO(model).predict`` per decoded frame: wall clock plus ultralytics' own stage timings."""

    def __init__(self, model_path: Path, *, imgsz: int, conf: float, iou: float) -> None:
        from lineguard.training.offline import load_ultralytics

        yolo_class: Any = load_ultralytics().YOLO  # through the module: its own annotations are loose
        self._model = yolo_class(str(model_path), task="detect")
        self._imgsz = imgsz
        self._kwargs = {"imgsz": imgsz, "conf": conf, "iou": iou, "verbose": False}
        self.recorder = LatencyRecorder()

    def step(self, jpeg: bytes, *, record: bool = True) -> None:
        t0 = time.perf_counter()
        frame = _decode(jpeg)  # the same decode the edge's ``capture`` stage times
        t1 = time.perf_counter()
        result = self._model.predict(frame, **self._kwargs)[0]
        t2 = time.perf_counter()
        if record:
            self.recorder.add("decode", t1 - t0)
            self.recorder.add("predict", t2 - t1)
            self.recorder.add("decode_predict", t2 - t0)
            for stage, ms in result.speed.items():
                self.recorder.add(f"ultralytics_{stage}", (ms or 0.0) / 1e3)

    def detect_for_eval(self, frame: Frame) -> Detections:
        """Boxes at the evaluation settings (conf 0.001, IoU 0.7, 300 boxes), for mAP."""
        result = self._model.predict(
            frame, imgsz=self._imgsz, conf=EVAL_CONF, iou=EVAL_IOU, max_det=300, verbose=False
        )[0]
        boxes = result.boxes
        return Detections.from_arrays(boxes.xyxyn.numpy(), boxes.conf.numpy(), boxes.cls.numpy())


def export_ultralytics_openvino(weights: Path, imgsz: int, out_dir: Path) -> Path:
    """Ultralytics' own OpenVINO export (fp32, static ``imgsz``) of ``weights``; returns its folder."""
    import shutil
    import warnings

    from lineguard.training.offline import load_ultralytics

    yolo_class: Any = load_ultralytics().YOLO
    out_dir.mkdir(parents=True, exist_ok=True)
    copy = out_dir / weights.name  # ultralytics writes the export beside the weights it loaded
    shutil.copyfile(weights, copy)
    with warnings.catch_warnings():  # torch's tracer warnings are expected here
        warnings.simplefilter("ignore")
        exported = yolo_class(str(copy)).export(
            format="openvino", imgsz=imgsz, half=False, int8=False, dynamic=False, batch=1, verbose=False
        )
    return Path(exported)


def _interleaved(
    pipelines: Sequence[EdgePipeline],
    references: Sequence[UltralyticsPredict],
    jpegs: Sequence[bytes],
    *,
    warmup: int,
    block: int,
) -> None:
    """Alternate blocks of frames between all paths, so all see the same load on a shared machine."""
    for i in range(min(warmup, len(jpegs))):
        for pipeline in pipelines:
            pipeline.step(jpegs[i], record=False)
        for reference in references:
            reference.step(jpegs[i], record=False)
    for first in range(0, len(jpegs), block):
        for pipeline in pipelines:
            for jpeg in jpegs[first : first + block]:
                pipeline.step(jpeg)
        for reference in references:
            for jpeg in jpegs[first : first + block]:
                reference.step(jpeg)


@dataclass
class VariantResult:
    """One backend/precision: its stages, throughput, MQTT losses, accuracy and ratios."""

    backend: str
    precision: str
    model: str
    runtime: str  # what actually ran, e.g. onnxruntime:CPUExecutionProvider
    stages: dict[str, StageStats]
    fps: float
    lost: dict[str, int] = field(default_factory=dict)
    frame_store: dict[str, float] = field(default_factory=dict)  # share, kept, bytes, dropped_busy; {} = off
    map50: float | None = None
    map50_95: float | None = None
    ratios: dict[str, float] = field(default_factory=dict)
    label: str = ""  # the Variant's label; the station default's names what auto chose
    certified: bool | None = None  # a variant from the card's list: whether the card certifies it
    precision_choice: str = ""  # the detector's own line on how its precision was chosen
    computes_in: str = "fp32"  # fp32, bf16 or int8: which compute floor holds this variant
    floor_ms: float | None = None  # the model's FLOPs / that floor's throughput
    floor_ratio: float | None = None  # inference p50 / floor_ms


@dataclass
class LatencyReport:
    """Everything one run measured; ``ratios`` compare medians from this same run."""

    settings: dict[str, Any]
    variants: list[VariantResult]
    ultralytics: dict[str, StageStats] = field(default_factory=dict)
    ultralytics_fps: float | None = None
    ultralytics_map50: float | None = None
    ultralytics_map50_95: float | None = None
    ultralytics_openvino: dict[str, StageStats] = field(default_factory=dict)  # its own OpenVINO export
    ultralytics_openvino_map50: float | None = None
    gflops: float | None = None  # of one inference at this input size (floors.model_gflops)
    floors: list[Floor] = field(default_factory=list)  # this machine's, measured once per run
    mqtt: dict[str, Any] = field(default_factory=dict)
    samples_ms: dict[str, list[float]] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)  # lineguard.provenance; the command sets it

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("samples_ms")
        return json.dumps(data, indent=2)


def _ratios(
    result: VariantResult, ultralytics: dict[str, StageStats], openvino: dict[str, StageStats]
) -> dict[str, float]:
    if "predict" not in ultralytics:
        return {}
    predict = ultralytics["predict"].p50_ms
    ratios = {
        "predict_over_frame_to_verdict": predict / result.stages["frame_to_verdict"].p50_ms,
        "ultralytics_inference_over_inference": ultralytics["ultralytics_inference"].p50_ms
        / result.stages["inference"].p50_ms,
    }
    decode_predict = ultralytics["decode_predict"].p50_ms  # from the same JPEG bytes as e2e
    for label in ("fsync", "no_fsync"):
        if f"e2e_{label}" in result.stages:
            ratios[f"decode_predict_over_e2e_{label}"] = decode_predict / result.stages[f"e2e_{label}"].p50_ms
    if "predict" in openvino:
        ratios["openvino_predict_over_frame_to_verdict"] = (
            openvino["predict"].p50_ms / result.stages["frame_to_verdict"].p50_ms
        )
    return ratios


def _accuracy(variant: Variant, val: ValidationSet, threads: int, say: Callable[[str], None]) -> Accuracy:
    say(f"scoring {variant.label} on {val.split} ({len(val.items)} images) ...")
    cfg = variant.config(threads, warmup_runs=1)
    with Detector.load(
        variant.model_path, cfg, min_confidence=EVAL_CONF, nms_iou=EVAL_IOU, card=variant.card()
    ) as detector:
        val.check_classes(list(detector.card.classes), variant.model_path.name)
        return score(lambda image: detector.detect(image)[0], val)


def default_omp_wait_policy(value: str = "PASSIVE") -> str:
    """Set ``OMP_WAIT_POLICY`` for this process unless it is set; the value as the report states it.

    libgomp reads the variable once, when torch loads: a value set here after torch loaded may not
    apply, and only then does the report say so. A value already set came with the process's
    environment, so it applied whenever torch loaded.
    """
    if "OMP_WAIT_POLICY" in os.environ:
        return os.environ["OMP_WAIT_POLICY"]
    late = "torch" in sys.modules
    os.environ["OMP_WAIT_POLICY"] = value
    return value + (" (set after torch loaded: may not apply)" if late else "")


def run_latency_benchmark(
    model_path: Path,
    *,
    variants: Sequence[Variant] | None = None,
    threads: int = 2,
    frames: int = 200,
    frame_size: tuple[int, int] = (1280, 1024),
    warmup: int = 10,
    conf: float = 0.05,
    iou: float = 0.45,
    compare_ultralytics: bool = True,
    ultralytics_weights: Path | None = None,
    data: Path | None = None,
    split: str = "val",
    mqtt: tuple[str, int] | None = None,
    outbox_modes: Sequence[bool] = (True, False),
    frame_store: float | None = None,
    omp_wait_policy: str | None = None,
    say: Callable[[str], None] = lambda line: None,
) -> LatencyReport:
    """Measure every variant (default: onnxruntime fp32 on ``model_path``) and ultralytics' predict.

    ``mqtt`` (host, port) adds the end-to-end leg, once per outbox mode in ``outbox_modes``
    (True = fsync), used in turn unit by unit; ``data`` times its ``split``'s own images (instead
    of synthetic frames of ``frame_size``) and adds mAP50 on them;
    ``ultralytics_weights`` (the ``.pt`` the ONNX came from) adds ultralytics' predict on its own
    OpenVINO export when an OpenVINO variant is measured; ``frame_store`` (the share of units
    whose frame is kept: 1.0 every frame, about 0.05 a line's FAILs, NO_DECISIONs and 2 % of its
    PASSes) times each variant again with the frame store on (in blocks alternating with it off).
    ``omp_wait_policy`` is what the report says of ``OMP_WAIT_POLICY`` (``default_omp_wait_policy``
    knows whether torch had loaded before it was set); None: the environment's value, as is.
    """
    chosen = list(variants or [Variant("onnxruntime", "fp32", model_path)])
    if frame_store is not None:
        chosen += [dataclasses.replace(v, frame_store=True) for v in chosen if not v.frame_store]
    val = ValidationSet.load(data, split) if data is not None else None  # fail early on a bad --data
    load_start = os.getloadavg()
    # as the caller set it (``default_omp_wait_policy``), else as the environment has it
    omp = omp_wait_policy if omp_wait_policy is not None else os.environ.get("OMP_WAIT_POLICY")
    if val is not None:  # the dataset's own frames: their size, content and file format
        jpegs, frames_of = dataset_frames(val, frames)
    else:
        jpegs = encode_frames(frames, width=frame_size[0], height=frame_size[1])
        frames_of = f"JPEG frames of {frame_size[0]}x{frame_size[1]} (synthetic units)"
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lineguard-bench-mqtt-")))
        detectors = _open_detectors(stack, chosen, threads, conf, iou, say)
        card = detectors[0].card
        probes = _open_probes(stack, mqtt, outbox_modes, tmp, card)
        pipelines = _pipelines(detectors, probes, conf, iou)
        for i, (variant, pipeline) in enumerate(zip(chosen, pipelines, strict=True)):
            if variant.frame_store:
                folder = tmp / f"frames-{i}"
                pipeline.store = StoreLeg(
                    folder, FrameStoreConfig(pass_share=frame_store or 1.0, folder=folder)
                )
                stack.callback(pipeline.store.close)
        imgsz = card.input_size
        references: list[UltralyticsPredict] = []
        if compare_ultralytics:
            references = _references(model_path, chosen, ultralytics_weights, imgsz, conf, iou, tmp, say)
        say(f"timing {len(chosen)} variant(s) on {frames} frames ...")
        _interleaved(pipelines, references, jpegs, warmup=warmup, block=10)
        lost = {p.label: p.lost for p in probes}
        stored = [p.store.counts() if p.store is not None else {} for p in pipelines]
        report = _variant_report(chosen, pipelines, detectors, lost)
    for result, counts in zip(report.variants, stored, strict=True):
        result.frame_store = counts
    _add_ultralytics(report, references)
    if val is not None:
        _add_accuracy(report, chosen, references, val, threads, say)
    report.mqtt = {
        "broker": f"{mqtt[0]}:{mqtt[1]}" if mqtt else None,
        "outbox_modes": [p.label for p in probes] if mqtt else [],
    }
    report.settings = {
        "model": str(model_path),
        "imgsz": imgsz,
        "threads": threads,
        "frames": frames,
        "frame_size": f"{frame_size[0]}x{frame_size[1]}" if val is None else None,
        "frames_of": frames_of,
        "conf": conf,
        "iou": iou,
        "ultralytics_weights": str(ultralytics_weights) if ultralytics_weights is not None else None,
        "data": str(data) if data is not None else None,
        "split": split if data is not None else None,
        "cpu": cpu_summary(),
        "omp_wait_policy": omp,
        "cpu_count": os.cpu_count(),
        "load_avg_start": [round(x, 2) for x in load_start],
        "load_avg_end": [round(x, 2) for x in os.getloadavg()],
    }
    return report


def _open_detectors(
    stack: contextlib.ExitStack,
    chosen: Sequence[Variant],
    threads: int,
    conf: float,
    iou: float,
    say: Callable[[str], None],
) -> list[Detector]:
    detectors = []
    for v in chosen:
        say(f"loading {v.label} ({v.model_path.name}) ...")
        cfg = v.config(threads)
        detectors.append(
            stack.enter_context(
                Detector.load(v.model_path, cfg, min_confidence=conf, nms_iou=iou, card=v.card())
            )
        )
    return detectors


def _open_probes(
    stack: contextlib.ExitStack,
    mqtt: tuple[str, int] | None,
    outbox_modes: Sequence[bool],
    tmp: Path,
    card: ModelCard,
) -> list[MqttProbe]:
    """One end-to-end probe per outbox mode, closed with ``stack``; none without a broker."""
    probes: list[MqttProbe] = []
    if mqtt is not None:
        for durable in outbox_modes:
            probe = MqttProbe(mqtt[0], mqtt[1], tmp, durable=durable, card=card).start()
            stack.callback(probe.close)
            probes.append(probe)
    return probes


def _pipelines(
    detectors: Sequence[Detector], probes: list[MqttProbe], conf: float, iou: float
) -> list[EdgePipeline]:
    gate_cfg = QualityConfig()
    return [
        EdgePipeline(
            d,
            VerdictPolicy(d.card, PolicyConfig(min_confidence=conf, nms_iou=iou)),
            # frames cycle (not a frozen camera); the bounds the station would use for this model
            QualityGate(gate_cfg, frozen_frames=1_000_000, bounds=quality_bounds(gate_cfg, d.card.reference)),
            probes,
        )
        for d in detectors
    ]


def _references(
    model_path: Path,
    chosen: Sequence[Variant],
    ultralytics_weights: Path | None,
    imgsz: int,
    conf: float,
    iou: float,
    tmp: Path,
    say: Callable[[str], None],
) -> list[UltralyticsPredict]:
    """ultralytics' predict on the ONNX, plus on its own OpenVINO export when OpenVINO is measured."""
    references = [UltralyticsPredict(model_path, imgsz=imgsz, conf=conf, iou=iou)]
    if ultralytics_weights is not None and any(v.backend == "openvino" for v in chosen):
        say(f"exporting {ultralytics_weights.name} with ultralytics' own OpenVINO exporter ...")
        ov_dir = export_ultralytics_openvino(ultralytics_weights, imgsz, tmp / "ultralytics-openvino")
        references.append(UltralyticsPredict(ov_dir, imgsz=imgsz, conf=conf, iou=iou))
    return references


def _variant_report(
    chosen: Sequence[Variant],
    pipelines: Sequence[EdgePipeline],
    detectors: Sequence[Detector],
    lost: dict[str, int],
) -> LatencyReport:
    results = []
    samples_ms: dict[str, list[float]] = {}
    for v, pipeline, d in zip(chosen, pipelines, detectors, strict=True):
        rec = pipeline.recorder
        label = v.label
        if v.station_default:  # what auto chose, in the label the tables and the plot show
            label = label.replace("precision auto", f"auto → {d.backend.split(':')[0]} {d.precision}")
        results.append(
            VariantResult(
                d.backend.split(":")[0] if v.station_default else v.backend,
                d.precision if v.station_default else v.precision,
                str(v.model_path),
                f"{d.backend} in {d.inference_precision}",
                rec.stats(),
                _fps(rec, "frame_to_verdict"),
                dict(lost),
                label=label,
                certified=v.certified,
                precision_choice=d.precision_choice,
                computes_in=floor_precision(d.inference_precision),
            )
        )
        main_stage = "e2e_fsync" if "e2e_fsync" in rec.samples else "frame_to_verdict"
        samples_ms[f"{label} {main_stage}"] = [s * 1e3 for s in rec.samples[main_stage]]
    return LatencyReport(settings={}, variants=results, samples_ms=samples_ms)


def add_floors(report: LatencyReport, floors: Sequence[Floor], gflops: float) -> None:
    """Each variant's floor time (``gflops`` / its precision's best floor) and inference p50 ÷ it."""
    report.gflops, report.floors = gflops, list(floors)
    best: dict[str, float] = {}
    for f in floors:
        best[f.precision] = max(best.get(f.precision, 0.0), f.gflops)
    for r in report.variants:
        throughput = best.get(r.computes_in)
        if throughput and gflops > 0 and "inference" in r.stages:  # 0: no Conv/MatMul of static shape
            r.floor_ms = 1e3 * gflops / throughput
            r.floor_ratio = r.stages["inference"].p50_ms / r.floor_ms


def _add_ultralytics(report: LatencyReport, references: Sequence[UltralyticsPredict]) -> None:
    """ultralytics' timings and each variant's ratios to them (none without references)."""
    if references:
        ul = references[0].recorder
        report.ultralytics, report.ultralytics_fps = ul.stats(), _fps(ul, "predict")
        report.samples_ms["ultralytics predict"] = [s * 1e3 for s in ul.samples["predict"]]
    if len(references) > 1:
        report.ultralytics_openvino = references[1].recorder.stats()
        report.samples_ms["ultralytics predict (OpenVINO export)"] = [
            s * 1e3 for s in references[1].recorder.samples["predict"]
        ]
    for r in report.variants:
        r.ratios = _ratios(r, report.ultralytics, report.ultralytics_openvino)


def _add_accuracy(
    report: LatencyReport,
    chosen: Sequence[Variant],
    references: Sequence[UltralyticsPredict],
    val: ValidationSet,
    threads: int,
    say: Callable[[str], None],
) -> None:
    for v, r in zip(chosen, report.variants, strict=True):
        acc = _accuracy(v, val, threads, say)
        r.map50, r.map50_95 = acc.map50, acc.map50_95
    for i, reference in enumerate(references):
        say(f"scoring ultralytics predict{' (OpenVINO export)' if i else ''} ...")
        acc = score(reference.detect_for_eval, val)
        if i == 0:
            report.ultralytics_map50, report.ultralytics_map50_95 = acc.map50, acc.map50_95
        else:
            report.ultralytics_openvino_map50 = acc.map50
