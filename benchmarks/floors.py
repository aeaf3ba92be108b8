"""Compute floors of this machine, and the FLOPs a model needs, so each latency has a yardstick.

A speed-up over another tool says nothing about how much is left: the floor is what this CPU does
at best in a precision (square matmuls on the benchmark's thread count: fp32 and bf16 through
OpenVINO, int8 through onnxruntime's ``MatMulInteger``, numpy's fp32 as a cross-check), and a
model's floor time is its FLOPs at that input size (counted over the ONNX graph's Conv, MatMul
and Gemm nodes, two per multiply-add) divided by that throughput. bf16 and int8 are measured only
where the CPU has native kernels for them (``lineguard.inference.kernels``, as ``precision: auto``): an
emulated figure would be no floor.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from lineguard import provenance
from lineguard.inference import cpu_kernels

__all__ = ["Floor", "best_floors", "floor_precision", "measure_floors", "model_gflops"]


@dataclass(frozen=True)
class Floor:
    """Best throughput of ``size``² matmuls in one precision, in GFLOP/s (GOP/s for int8)."""

    precision: str  # fp32, bf16, int8
    runtime: str  # what computed it, e.g. "openvino (INFERENCE_PRECISION_HINT bf16)"
    size: int
    threads: int
    gflops: float  # best of the timed runs: a floor is what the CPU reaches, not its average


def model_gflops(onnx_path: Path) -> float:
    """GFLOPs of one inference: 2 x multiply-adds of every Conv, MatMul and Gemm (static shapes)."""
    import onnx

    from lineguard.training import multiply_adds

    return 2 * sum(multiply_adds(onnx.load(str(onnx_path))).values()) / 1e9


def floor_precision(computed_in: str) -> str:
    """The floor a run is held against, from what its runtime computed in (``int8 QDQ``, ``bf16``,
    ``f32``): a bf16 request that ran f32 on a CPU without bf16 is held to the fp32 floor."""
    if computed_in.startswith("int8"):
        return "int8"
    return "bf16" if computed_in == "bf16" else "fp32"


def measure_floors(
    *, threads: int, size: int = 2048, runs: int = 5, flags: frozenset[str] | None = None
) -> list[Floor]:
    """fp32 (OpenVINO and numpy), bf16 and int8 floors, each where this CPU and install have it."""
    flags = provenance.cpu_flags() if flags is None else flags
    a = np.random.default_rng(0).standard_normal((size, size)).astype(np.float32)
    flop = 2.0 * size**3
    floors = [Floor("fp32", "numpy", size, threads, flop / _best(lambda: a @ a, runs) / 1e9)]
    ov = _openvino_matmul(a, threads)
    if ov is not None:
        floors.insert(0, Floor("fp32", "openvino", size, threads, flop / _best(ov("f32"), runs) / 1e9))
        if cpu_kernels("bf16", flags):
            run = ov("bf16")
            floors.append(Floor("bf16", "openvino", size, threads, flop / _best(run, runs) / 1e9))
    if cpu_kernels("int8", flags):
        run_int8 = _ort_int8_matmul(size, threads)
        if run_int8 is not None:
            floors.append(
                Floor("int8", "onnxruntime MatMulInteger", size, threads, flop / _best(run_int8, runs) / 1e9)
            )
    return floors


def best_floors(*measured: list[Floor]) -> list[Floor]:
    """Per precision and runtime, the best of several measurements (a run's start and end: on a
    shared machine a floor taken at one moment of heavy load would flatter every ratio to it)."""
    best: dict[tuple[str, str], Floor] = {}
    for floors in measured:
        for f in floors:
            key = (f.precision, f.runtime)
            if key not in best or f.gflops > best[key].gflops:
                best[key] = f
    return list(best.values())


def _best(step: Callable[[], object], runs: int) -> float:
    step()  # warm: first call allocates and, for OpenVINO, picks kernels
    times = []
    for _ in range(max(1, runs)):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return min(times)


def _openvino_matmul(
    a: npt.NDArray[np.float32], threads: int
) -> Callable[[str], Callable[[], object]] | None:
    """A factory of ``a @ B`` on OpenVINO's CPU plugin at a given inference precision."""
    try:
        import openvino as ov
        import openvino.opset13 as ops
    except ModuleNotFoundError:
        return None
    x = ops.parameter(list(a.shape), np.float32, name="x")
    model = ov.Model([ops.matmul(x, ops.constant(a), False, False)], [x], "floor")

    def make(hint: str) -> Callable[[], object]:
        compiled = ov.Core().compile_model(
            model,
            "CPU",
            {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1},
        )
        request = compiled.create_infer_request()
        return lambda: request.infer({0: a}, share_inputs=True)

    return make


def _ort_int8_matmul(size: int, threads: int) -> Callable[[], object] | None:
    """``MatMulInteger`` (uint8 x int8 -> int32) on onnxruntime's CPU provider."""
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ModuleNotFoundError:
        return None
    rng = np.random.default_rng(1)
    weight = rng.integers(-64, 64, (size, size), dtype=np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["x", "w"], ["y"])],
        "floor_int8",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [size, size])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [size, size])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
    )
    x = rng.integers(0, 128, (size, size), dtype=np.uint8)
    return lambda: session.run(None, {"x": x})
