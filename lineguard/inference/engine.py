"""The inference engine: a checked ONNX detector behind one interface, on onnxruntime or OpenVINO.

``Detector.load`` refuses any model it cannot vouch for before the line depends on it: the file
must hash to its card's sha256, be ONNX, take one static ``(1, 3, S, S)`` input with ``S`` equal to
the card's input size, and emit ``4 + len(card.classes)`` channels. It then picks a backend
(onnxruntime with TensorRT/CUDA when present, else CPU; or OpenVINO when installed), logs and
exposes the one actually running (onnxruntime-gpu silently falls back to the CPU), and warms up.
``detect`` runs preprocess -> inference -> postprocess on buffers allocated at load and times each
stage with a monotonic clock. Never imports torch.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from lineguard.config import LineguardConfig, ModelConfig
from lineguard.errors import ConfigError, MissingDependencyError, ModelError
from lineguard.inference.detections import Detections
from lineguard.inference.postprocess import MAX_DET, postprocess
from lineguard.inference.preprocess import PAD_VALUE, Preprocessor
from lineguard.logs import Events
from lineguard.messages import ModelCard

__all__ = ["CARD_NAME", "Detector", "StageTimes", "available_backends"]

CARD_NAME = "model_card.json"
_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
# An int8 model is a QDQ-quantized file: its int8 layers stay int8, the rest runs at f32.
_OV_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}

event = Events(__name__)

Tensor = npt.NDArray[np.float32]


@dataclass(frozen=True)
class StageTimes:
    """Seconds spent in each stage of one ``detect`` call."""

    preprocess_s: float
    inference_s: float
    postprocess_s: float

    @property
    def total_s(self) -> float:
        return self.preprocess_s + self.inference_s + self.postprocess_s


class _Runner(Protocol):
    name: str
    inference_precision: str  # what the runtime computes in, which may differ from what was asked
    input_shape: tuple[Any, ...]
    output_shape: tuple[Any, ...] | None

    def run(self, tensor: Tensor) -> npt.NDArray[np.float32]: ...

    def close(self) -> None: ...


def available_backends() -> list[str]:
    """Backends importable here, in ``auto``'s order of preference on a CPU host."""
    return [name for name in ("openvino", "onnxruntime") if importlib.util.find_spec(name) is not None]


class _OrtRunner:
    def __init__(self, model: bytes, cfg: ModelConfig) -> None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        if cfg.providers:
            missing = [p for p in cfg.providers if p not in available]
            if missing:
                raise ConfigError(
                    f"model.providers names {missing}, not available in this onnxruntime; "
                    f"available: {available} (install lineguard[gpu] for CUDA/TensorRT)"
                )
            providers = list(cfg.providers)
        else:
            providers = [p for p in _GPU_PROVIDERS if p in available] + ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = cfg.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(model, sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors for a bad file
            raise ModelError(f"onnxruntime cannot load the model as ONNX: {_first_line(exc)}") from exc
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise ModelError(f"model must have one image input and an output; got {len(inputs)} inputs")
        self._input_name = inputs[0].name
        self.input_shape = tuple(inputs[0].shape)
        self.output_shape: tuple[Any, ...] | None = tuple(outputs[0].shape)
        self.name = f"onnxruntime:{self._session.get_providers()[0]}"
        self.inference_precision = "int8 QDQ" if cfg.precision == "int8" else "f32"

    def run(self, tensor: Tensor) -> npt.NDArray[np.float32]:
        out = self._session.run(None, {self._input_name: tensor})[0]
        return np.asarray(out, dtype=np.float32)

    def close(self) -> None:
        del self._session


class _OpenVinoRunner:
    def __init__(self, model: bytes, cfg: ModelConfig) -> None:
        try:
            import openvino as ov
        except ModuleNotFoundError as exc:
            raise MissingDependencyError("openvino", "openvino") from exc
        core = ov.Core()
        try:
            ov_model = core.read_model(io.BytesIO(model))
            compiled = core.compile_model(
                ov_model,
                "CPU",
                {
                    "INFERENCE_PRECISION_HINT": _OV_PRECISION[cfg.precision],
                    "INFERENCE_NUM_THREADS": cfg.threads,
                    "PERFORMANCE_HINT": "LATENCY",
                    "NUM_STREAMS": 1,
                },
            )
        except RuntimeError as exc:
            raise ModelError(f"OpenVINO cannot load the model as ONNX: {_first_line(exc)}") from exc
        if len(compiled.inputs) != 1:
            raise ModelError(f"model must have one image input; got {len(compiled.inputs)}")
        in_shape = compiled.input(0).get_partial_shape()
        out_shape = compiled.output(0).get_partial_shape()
        self.input_shape = (
            tuple(in_shape.to_shape()) if in_shape.is_static else tuple(str(d) for d in in_shape)
        )
        self.output_shape = tuple(out_shape.to_shape()) if out_shape.is_static else None
        self._request = compiled.create_infer_request()
        self._compiled = compiled
        self.name = "openvino:CPU"
        # A CPU without bf16 instructions (AVX2-only hosts) quietly runs f32 when bf16 is asked for.
        ran = str(compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name())
        self.inference_precision = "int8 QDQ" if cfg.precision == "int8" else ran
        if cfg.precision == "bf16" and ran != "bf16":
            event(logging.WARNING, "bf16_unsupported", why="this CPU has no bf16 support", runs=ran)

    def run(self, tensor: Tensor) -> npt.NDArray[np.float32]:
        self._request.infer({0: tensor}, share_inputs=True)
        return self._request.get_output_tensor(0).data  # type: ignore[no-any-return]

    def close(self) -> None:
        del self._request
        del self._compiled


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith("Exception from")]
    return (useful or lines or [type(exc).__name__])[0][:300]


def _pick_backend(cfg: ModelConfig) -> str:
    if cfg.backend != "auto":
        return cfg.backend
    if cfg.providers:  # explicit onnxruntime providers imply onnxruntime
        return "onnxruntime"
    has_gpu = False
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime as ort

        has_gpu = any(p in ort.get_available_providers() for p in _GPU_PROVIDERS)
    # On a CPU host OpenVINO is as fast as onnxruntime's CPU provider in fp32 and alone runs bf16
    # (1.6x faster at 160 px on an AVX-512 bf16 CPU; benchmarks/results/latency_160_avx512.md).
    if not has_gpu and "openvino" in available_backends():
        return "openvino"
    return "onnxruntime"


def _check_shapes(runner: _Runner, card: ModelCard, path: Path) -> None:
    size, nc = card.input_size, len(card.classes)
    want_in = (1, 3, size, size)
    if runner.input_shape != want_in:
        raise ModelError(
            f"{path.name} takes input {list(runner.input_shape)}, its card needs a static {list(want_in)}; "
            "export with a fixed imgsz (dynamic=False) matching card.input_size"
        )
    out = runner.output_shape
    if out is not None and len(out) == 3 and isinstance(out[1], int) and out[1] != 4 + nc:
        raise ModelError(
            f"{path.name} outputs {out[1]} channels, its card names {nc} classes (expects {4 + nc}); "
            "the card belongs to another model"
        )


class Detector:
    """A loaded, checked detector; one instance serves one thread (its buffers are reused)."""

    def __init__(
        self,
        *,
        card: ModelCard,
        runner: _Runner,
        model_path: Path,
        precision: str,
        min_confidence: float,
        nms_iou: float,
        max_det: int = MAX_DET,
    ) -> None:
        self.card = card
        self.model_path = model_path
        self.backend = runner.name
        self.precision = precision
        self.inference_precision = runner.inference_precision
        self.min_confidence = min_confidence
        self.nms_iou = nms_iou
        self.max_det = max_det
        self._runner = runner
        self._pre = Preprocessor(card.input_size)
        self._closed = False

    @property
    def input_size(self) -> int:
        return self.card.input_size

    @classmethod
    def for_station(
        cls, model_path: Path, cfg: LineguardConfig, *, card: ModelCard | None = None
    ) -> Detector:
        """``load`` with a station's model section and its policy's confidence floor and NMS IoU.

        ``model_path`` may be a registry reference (``demo@production``) in ``registry.root``.
        """
        from lineguard.model_refs import resolve_model_path

        return cls.load(
            resolve_model_path(model_path, cfg.registry.root),
            cfg.model,
            min_confidence=cfg.policy.min_confidence,
            nms_iou=cfg.policy.nms_iou,
            card=card,
        )

    @classmethod
    def load(
        cls,
        model_path: Path,
        cfg: ModelConfig,
        *,
        min_confidence: float = 0.05,
        nms_iou: float = 0.45,
        card: ModelCard | None = None,
    ) -> Detector:
        """Check ``model_path`` against its card, open it on the configured backend and warm it up."""
        model_path = Path(model_path)
        if not model_path.is_file():
            raise ModelError(f"model file not found: {model_path}")
        if card is None:
            card_path = model_path.parent / CARD_NAME
            if not card_path.is_file():
                raise ModelError(
                    f"model card not found: {card_path}; every ONNX model needs its {CARD_NAME} beside it "
                    "(lineguard export writes both; for a YOLO .onnx or .pt of your own run "
                    f"'lineguard model import {model_path.name} --out DIR' and use DIR)"
                )
            card = ModelCard.load(card_path)
        data = model_path.read_bytes()  # hash and load the same bytes
        digest = hashlib.sha256(data).hexdigest()
        if digest != card.sha256:
            raise ModelError(
                f"{model_path.name} has sha256 {digest[:12]}…, its card {card.ref} says {card.sha256[:12]}…; "
                "the file was changed or belongs to another card: fetch or export both again"
            )
        backend = _pick_backend(cfg)
        if backend == "onnxruntime" and cfg.precision == "bf16":
            raise ConfigError(
                "model.precision bf16 needs model.backend openvino (or auto with openvino installed)"
            )
        runner: _Runner
        if backend == "openvino":
            runner = _OpenVinoRunner(data, cfg)
        else:
            if importlib.util.find_spec("onnxruntime") is None:
                raise MissingDependencyError("onnxruntime", "edge")
            runner = _OrtRunner(data, cfg)
        try:
            _check_shapes(runner, card, model_path)
            detector = cls(
                card=card,
                runner=runner,
                model_path=model_path,
                precision=cfg.precision,
                min_confidence=min_confidence,
                nms_iou=nms_iou,
            )
            detector._warm_up(max(1, cfg.warmup_runs))
        except BaseException:
            runner.close()
            raise
        event(
            logging.INFO,
            "model_loaded",
            model=card.ref,
            backend=detector.backend,
            precision=cfg.precision,
            computed_in=detector.inference_precision,
            threads=cfg.threads,
            input_px=card.input_size,
        )
        return detector

    def _warm_up(self, runs: int) -> None:
        size = self.input_size
        tensor, _ = self._pre(np.full((size, size, 3), PAD_VALUE, np.uint8))
        for _ in range(runs):
            out = self._runner.run(tensor)
        want = 4 + len(self.card.classes)
        if out.ndim != 3 or out.shape[0] != 1 or out.shape[1] != want:
            raise ModelError(
                f"{self.model_path.name} produced output {list(out.shape)}, expected [1, {want}, anchors] "
                f"for the card's {len(self.card.classes)} classes (a YOLOv8/YOLO11 detect export)"
            )

    def infer(self, tensor: Tensor) -> npt.NDArray[np.float32]:
        """Run the raw model on a prepared ``(1, 3, S, S)`` tensor (the output may be a reused buffer)."""
        if self._closed:
            raise ModelError(f"detector for {self.card.ref} is closed")
        return self._runner.run(tensor)

    def detect(self, frame_bgr: npt.NDArray[np.uint8]) -> tuple[Detections, StageTimes]:
        """Boxes in one BGR frame, normalised to the frame, and the time each stage took."""
        t0 = time.perf_counter()
        tensor, geometry = self._pre(frame_bgr)
        t1 = time.perf_counter()
        output = self.infer(tensor)
        t2 = time.perf_counter()
        detections = postprocess(
            output,
            geometry,
            min_confidence=self.min_confidence,
            nms_iou=self.nms_iou,
            num_classes=len(self.card.classes),
            max_det=self.max_det,
        )
        t3 = time.perf_counter()
        return detections, StageTimes(t1 - t0, t2 - t1, t3 - t2)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._runner.close()

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
