"""Accuracy control for the INT8 variant: keep in float the few convolutions that cost the verdicts.

Quantizing every convolution of a detector moves each unit's top score a little; on most units
that changes nothing, but a unit scored near its threshold can cross it, and a certification is
lost over one or two units. So when the fully quantized file fails the certification rule on the
calibration split, its convolutions are ranked by the score movement each one causes per
multiply-add it computes (each put back in float on its own, the units' per-class top scores
compared with fp32's on a few calibration units): a float convolution at 640 px costs what it
computes, so a cheap one that restores a little comes before a costly one that restores a little
more. The first 1, 2, 4, … of them go back to float until the rule holds on the calibration split
or a quarter of the model's multiply-adds would run in float. The val split stays out of it:
certification is measured there afterwards, on images this search never saw.

Putting a convolution back in float is graph surgery on the QDQ file (its input takes the float
tensor its QuantizeLinear read, its weight and bias the fp32 file's), so no calibration pass is
repeated and the other convolutions keep the exact quantization they had.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from lineguard.inference import Preprocessor, read_image_file
from lineguard.messages import Measured, ModelCard, certify_variant
from lineguard.training.calibrate import certification_figures
from lineguard.training.evaluate import evaluate
from lineguard.training.graph_cost import multiply_adds

__all__ = [
    "MAX_FLOAT_SHARE",
    "RANKING_FRAMES",
    "ControlResult",
    "control_int8",
    "quantized_convs",
]

RANKING_FRAMES = 16  # units whose top scores rank the convolutions
MAX_FLOAT_SHARE = 0.25  # beyond a quarter of the multiply-adds in float, INT8 is not worth its name


@dataclass(frozen=True)
class ControlResult:
    """The INT8 file accuracy control settled on: the convolutions it kept float, and why."""

    float_convs: list[str]
    passed: bool  # the rule holds on the calibration split
    line: str


def quantized_convs(model: Any) -> list[str]:
    """The Conv nodes of ``model`` (an ``onnx.ModelProto``) whose input activation is dequantized."""
    graph = model.graph
    dq_outputs = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    return [n.name for n in graph.node if n.op_type == "Conv" and n.input[0] in dq_outputs]


class _Reverter:
    """Copies of a QDQ file with chosen convolutions back in float, each built from the two files
    read once: the input its quantizer read, and the fp32 file's weight and bias (by node name)."""

    def __init__(self, qdq: Path, fp32: Path) -> None:
        import onnx

        self.qdq = onnx.load(str(qdq))
        self.fp32 = onnx.load(str(fp32))
        self._inputs = {n.name: list(n.input) for n in self.fp32.graph.node if n.op_type == "Conv"}
        self._inits = {i.name: i for i in self.fp32.graph.initializer}

    def with_float(self, names: list[str]) -> Any:
        import onnx

        model = onnx.ModelProto()
        model.CopyFrom(self.qdq)
        graph = model.graph
        have = {i.name for i in graph.initializer}
        producer = {o: n for n in graph.node for o in n.output}
        shadowing: list[Any] = []
        for node in graph.node:
            if node.name not in names:
                continue
            for i, tensor in enumerate(node.input):
                dq = producer.get(tensor)
                if dq is None or dq.op_type != "DequantizeLinear":
                    continue
                was = self._inputs[node.name][i]
                if was in self._inits:  # a weight or bias: the fp32 file's own values
                    if dq.output[0] == was:  # the bias's dequantize writes the fp32 name
                        shadowing.append(dq)
                    if was not in have:
                        graph.initializer.append(self._inits[was])
                        have.add(was)
                    node.input[i] = was
                elif (q := producer.get(dq.input[0])) is not None and q.op_type == "QuantizeLinear":
                    node.input[i] = q.input[0]  # the activation the quantizer read
        for dq in shadowing:
            graph.node.remove(dq)
        _drop_unused(graph)
        return model


def _drop_unused(graph: Any) -> None:
    """Remove nodes and initializers nothing reads any more (the reverted convolutions' Q/DQ)."""
    outputs = {o.name for o in graph.output}
    while True:
        read = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if not any(o in read for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    read = {i for n in graph.node for i in n.input}
    for init in [i for i in graph.initializer if i.name not in read]:
        graph.initializer.remove(init)


def _top_scores(model: Any, tensors: list[npt.NDArray[np.float32]]) -> npt.NDArray[np.float32]:
    """Each unit's top score per class (the output's ``(1, 4 + nc, N)`` score rows, max over
    anchors; what NMS keeps first). ONNX Runtime runs the QDQ graph as float arithmetic on the
    quantized values, so this measures quantization itself, quickly, without compiling for a CPU."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.stack([session.run(None, {name: t})[0][0, 4:, :].max(axis=1) for t in tensors])


def _rank(
    reverter: _Reverter, convs: list[str], tensors: list[npt.NDArray[np.float32]]
) -> tuple[list[str], dict[str, float]]:
    """The convolutions whose float copy brings the top scores closer to fp32's, most score
    restored per multiply-add first (a float convolution at 640 px costs what it computes), and
    each one's share of the model's multiply-adds."""
    reference = _top_scores(reverter.fp32, tensors)
    moved = float(np.abs(_top_scores(reverter.qdq, tensors) - reference).mean())
    macs = multiply_adds(reverter.fp32)
    total = sum(macs.values())
    share = {c: macs.get(c, total) / total for c in convs}
    gain = {
        c: moved - float(np.abs(_top_scores(reverter.with_float([c]), tensors) - reference).mean())
        for c in convs
    }
    helpful = [c for c in convs if gain[c] > 0]
    return sorted(helpful, key=lambda c: -gain[c] / share[c]), share


def control_int8(
    fp32_onnx: Path,
    qdq: Path,
    card: ModelCard,
    fp32_cal: Measured,
    data: Path,
    cal_split: tuple[str, list[Path]],
    say: Callable[[str], None],
) -> ControlResult:
    """Rewrite ``qdq`` (fully quantized) with the fewest float convolutions that pass the rule on
    the calibration split against ``fp32_cal``; when no budget passes it stays fully quantized and
    certification on val says what that costs."""
    import onnx

    split, images = cal_split

    def measure(path: Path) -> tuple[bool, str]:
        ev = evaluate(
            path, data, split=split, thresholds=card.thresholds, backend="openvino", precision="int8"
        )
        return certify_variant(fp32_cal, certification_figures(ev, card.thresholds), ev.computed_in)

    reverter = _Reverter(qdq, fp32_onnx)
    convs = quantized_convs(reverter.qdq)
    passed, why = measure(qdq)
    if passed:
        return ControlResult([], True, f"all {len(convs)} convolutions int8 pass on '{split}'")
    say(f"INT8 accuracy control: all {len(convs)} convolutions int8 fail on '{split}' ({why})")
    pre = Preprocessor(card.input_size)
    tensors = [pre(read_image_file(p))[0].copy() for p in images[:RANKING_FRAMES]]
    say(f"  ranking them on {len(tensors)} '{split}' units, each put back in float on its own")
    ranked, share = _rank(reverter, convs, tensors)
    steps = [k for k in range(1, len(ranked) + 1) if sum(share[c] for c in ranked[:k]) <= MAX_FLOAT_SHARE]
    tries = sorted({k for k in steps if k & (k - 1) == 0} | set(steps[-1:]))  # 1, 2, 4, …, the most
    trial = qdq.with_name(f"{qdq.stem}.trial.onnx")
    try:
        for k in tries:
            onnx.save(reverter.with_float(ranked[:k]), str(trial))
            passed, why = measure(trial)
            cost = f"{100 * sum(share[c] for c in ranked[:k]):.1f}% of the multiply-adds"
            say(f"  {k} float ({cost}): {'passes' if passed else 'fails'} ({why})")
            if passed:
                trial.replace(qdq)
                line = f"{k} of {len(convs)} convolutions float ({cost}) pass on '{split}'"
                return ControlResult(ranked[:k], True, line)
    finally:
        trial.unlink(missing_ok=True)
    most = f"{100 * MAX_FLOAT_SHARE:.0f}% of the multiply-adds"
    return ControlResult([], False, f"no float set within {most} passes on '{split}'")
