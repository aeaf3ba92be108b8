"""The inference engine: a checked ONNX detector behind one interface, on onnxruntime or OpenVINO.

``Detector.load`` refuses any model it cannot vouch for before the line depends on it: the file
must hash to its card's sha256, be ONNX, take one static ``(1, 3, S, S)`` input with ``S`` equal to
the card's input size, and emit ``4 + len(card.classes)`` channels. It then picks a backend
(onnxruntime with TensorRT/CUDA when present, else CPU; or OpenVINO when installed), logs and
exposes the one actually running (onnxruntime-gpu silently falls back to the CPU), and warms up.
``detect`` runs preprocess -> inference -> postprocess on buffers allocated at load and times each
stage with a monotonic clock. With ``precision: auto`` (the default) it then runs the fastest
variant the card certifies that this CPU supports, once its file hashes to the card's sha256 and a
short timing at load shows it beats fp32; a variant that cannot load leaves fp32 running and says
so (``variant_failure``, which the station alerts). Never imports torch.
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

from lineguard import provenance
from lineguard.config import LineguardConfig, ModelConfig
from lineguard.errors import ConfigError, MissingDependencyError, ModelError
from lineguard.inference.detections import Detections
from lineguard.inference.kernels import KERNELS, cpu_kernels
from lineguard.inference.postprocess import MAX_DET, postprocess
from lineguard.inference.preprocess import PAD_VALUE, Preprocessor
from lineguard.logs import Events
from lineguard.messages import ModelCard, ModelVariant

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
    # On a CPU host OpenVINO is as fast as onnxruntime's CPU provider in fp32 or faster (1.5x at
    # 640 px on AVX-512; within noise at 160 px on AVX2) and alone runs bf16 (2x faster than fp32
    # at 640 px on an AVX-512 bf16 CPU): benchmarks/results/latency_truth.md, latency_160_avx2.md.
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
        # How the precision was chosen (one line), and a variant that should have run but could not.
        self.precision_choice = precision
        self.variant_failure: str | None = None
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
        cpu_flags: frozenset[str] | None = None,
    ) -> Detector:
        """Check ``model_path`` against its card, open it on the configured backend and warm it up.

        ``precision: auto`` then tries the card's certified variants this CPU runs fast
        (``cpu_flags``, by default read from /proc/cpuinfo) and keeps the fastest, or fp32.
        """
        model_path = Path(model_path)
        card = _card_for(model_path, card)
        data = _verified_bytes(model_path, card.sha256, f"its card {card.ref}")
        opener = _Opener(card, model_path, min_confidence, nms_iou)
        flags = provenance.cpu_flags() if cpu_flags is None else cpu_flags
        if cfg.precision == "auto":
            detector = _choose(opener, data, cfg, flags)
        else:
            detector = _explicit(opener, data, cfg, flags)
        level = logging.WARNING if detector.variant_failure else logging.INFO
        event(
            level,
            "model_loaded",
            model=card.ref,
            backend=detector.backend,
            precision=detector.precision,
            computed_in=detector.inference_precision,
            choice=detector.precision_choice,
            variant_failure=detector.variant_failure,
            threads=cfg.threads,
            input_px=card.input_size,
        )
        return detector

    def median_inference_s(self, runs: int) -> float:
        """Median seconds of ``runs`` inferences on a blank frame (the load-time speed check)."""
        size = self.input_size
        tensor, _ = self._pre(np.full((size, size, 3), PAD_VALUE, np.uint8))
        times = []
        for _ in range(max(1, runs)):
            t0 = time.perf_counter()
            self._runner.run(tensor)
            times.append(time.perf_counter() - t0)
        return float(np.median(times))

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


# Order tried when load-time timing is off (model.confirm_runs 0): int8's compute floor is about
# twice bf16's on a CPU with both (NOTES.md, issue #20).
_FAST_FIRST = ("int8", "bf16")


def _not_for_this_cpu(variant: ModelVariant, flags: frozenset[str]) -> str | None:
    """Why the variant's certification does not hold on this CPU (one line), or None when it does."""
    here = cpu_kernels(variant.precision, flags)
    if here is None:
        return f"this CPU has none of {'/'.join(KERNELS[variant.precision])}"
    if variant.kernels != here:
        return (
            f"certified on {variant.kernels or 'unrecorded'} kernels, this CPU runs {here} "
            "(export it on such a CPU to certify it here)"
        )
    return None


def _card_for(model_path: Path, card: ModelCard | None) -> ModelCard:
    if not model_path.is_file():
        raise ModelError(f"model file not found: {model_path}")
    if card is not None:
        return card
    card_path = model_path.parent / CARD_NAME
    if not card_path.is_file():
        raise ModelError(
            f"model card not found: {card_path}; every ONNX model needs its {CARD_NAME} beside it "
            "(lineguard export writes both; for a YOLO .onnx or .pt of your own run "
            f"'lineguard model import {model_path.name} --out DIR' and use DIR)"
        )
    return ModelCard.load(card_path)


def _verified_bytes(path: Path, sha256: str, whose: str) -> bytes:
    """The file's bytes once they hash to ``sha256`` (hash and load the same bytes)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"{path.name} cannot be read ({exc.strerror or type(exc).__name__})") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise ModelError(
            f"{path.name} has sha256 {digest[:12]}…, {whose} says {sha256[:12]}…; "
            "the file was changed or belongs to another card: fetch or export both again"
        )
    return data


@dataclass(frozen=True)
class _Opener:
    """Opens one model file of one card as a checked, warm ``Detector`` in a given precision."""

    card: ModelCard
    model_path: Path
    min_confidence: float
    nms_iou: float

    def open(self, data: bytes, cfg: ModelConfig) -> Detector:
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
            _check_shapes(runner, self.card, self.model_path)
            detector = Detector(
                card=self.card,
                runner=runner,
                model_path=self.model_path,
                precision=cfg.precision,
                min_confidence=self.min_confidence,
                nms_iou=self.nms_iou,
            )
            detector._warm_up(max(1, cfg.warmup_runs))
        except BaseException:
            runner.close()
            raise
        return detector

    def open_variant(self, variant: ModelVariant, fp32_data: bytes, cfg: ModelConfig) -> Detector:
        """The variant as the card describes it, once its file hashes to the card's sha256."""
        if cfg.backend not in ("auto", variant.runtime):
            raise ConfigError(
                f"the {variant.name} variant runs on {variant.runtime}, model.backend is {cfg.backend}"
            )
        if variant.file is None:
            if variant.sha256 != self.card.sha256:
                raise ModelError(f"the card's {variant.name} variant names another file than model.onnx")
            data = fp32_data
        else:
            path = self.model_path.parent / variant.file
            if not path.is_file():
                raise ModelError(f"{variant.file} is missing beside {self.model_path.name}")
            data = _verified_bytes(path, variant.sha256, f"the {self.card.ref} card's {variant.name} variant")
        detector = self.open(
            data, cfg.model_copy(update={"backend": variant.runtime, "precision": variant.precision})
        )
        detector.precision = variant.name
        return detector


def _explicit(opener: _Opener, data: bytes, cfg: ModelConfig, flags: frozenset[str]) -> Detector:
    """``precision`` fp32, bf16 or int8 as configured.

    A card that lists variants (written by a current export) runs only a certified one; anything
    else runs fp32 and says why (``variant_failure``, alerted by the station). A card without a
    variants list is a file run as is at that precision (an older export, an evaluation). A
    certified variant asked for on a CPU whose kernels did not certify it runs (the registry's gate
    measures variants this way on its own CPU), and its choice says so.
    """
    card, asked = opener.card, cfg.precision
    if asked == "fp32" or not card.variants:
        detector = opener.open(data, cfg)
        detector.precision_choice = f"{asked} (configured)"
        return detector
    variant = card.variant(asked)
    if variant is None or not variant.certified:
        why = "lists no such variant" if variant is None else f"lists it uncertified: {variant.reason}"
        refused = f"model.precision {asked} refused: {card.ref} {why}; running fp32"
    else:
        try:
            detector = opener.open_variant(variant, data, cfg)
        except (ModelError, ConfigError) as exc:
            refused = f"the {asked} variant failed to load ({exc}); running fp32"
        else:
            elsewhere = _not_for_this_cpu(variant, flags)
            detector.precision_choice = f"{asked} (configured, certified" + (
                f"; {elsewhere})" if elsewhere else ")"
            )
            return detector
    detector = opener.open(data, cfg.model_copy(update={"precision": "fp32"}))
    detector.precision_choice = f"fp32 ({refused})"
    detector.variant_failure = refused
    return detector


def _choose(opener: _Opener, data: bytes, cfg: ModelConfig, flags: frozenset[str]) -> Detector:
    """``precision: auto``: the fastest certified variant this CPU runs, confirmed by timing, or fp32."""
    card = opener.card
    best = opener.open(data, cfg.model_copy(update={"precision": "fp32"}))
    best_s: float | None = None  # measured once a variant is there to compare with
    notes: list[str] = []
    failures: list[str] = []
    ranked = sorted(card.variants, key=lambda v: _FAST_FIRST.index(v.precision))
    if (
        ranked
        and best.backend.startswith("onnxruntime:")
        and best.backend != "onnxruntime:CPUExecutionProvider"
    ):
        best.precision_choice = f"auto: fp32 (on {best.backend}; the certified variants are CPU variants)"
        return best
    for variant in ranked:
        skip = _skip_reason(variant, flags)
        if skip is not None:
            notes.append(f"{variant.name}: {skip}")
            continue
        try:
            candidate = opener.open_variant(variant, data, cfg)
        except (ModelError, ConfigError, MissingDependencyError) as exc:
            failures.append(f"the {variant.name} variant failed to load ({exc})")
            continue
        if not cfg.confirm_runs:  # timing off: trust the order
            best.close()
            best = candidate
            break
        if best_s is None:
            best_s = best.median_inference_s(cfg.confirm_runs)
        took = candidate.median_inference_s(cfg.confirm_runs)
        timing = f"{1000 * took:.2f} ms vs {best.precision} {1000 * best_s:.2f} ms at load"
        if took < best_s:
            notes.append(f"{variant.name}: {timing}")
            best.close()
            best, best_s = candidate, took
        else:
            notes.append(f"{variant.name}: not faster ({timing})")
            candidate.close()
    best.precision_choice = f"auto: {best.precision}" + (f" ({'; '.join(notes)})" if notes else "")
    if failures:
        best.variant_failure = f"{'; '.join(failures)}; running {best.precision}"
    return best


def _skip_reason(variant: ModelVariant, flags: frozenset[str]) -> str | None:
    if not variant.certified:
        return f"not certified ({variant.reason})"
    if variant.runtime not in available_backends():
        return f"{variant.runtime} is not installed"
    return _not_for_this_cpu(variant, flags)
