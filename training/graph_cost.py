"""What one inference of an ONNX graph computes: multiply-adds per Conv, MatMul and Gemm node.

Two users need it: a benchmark's floor time (the model's FLOPs over the CPU's best throughput) and
INT8 accuracy control, which puts back in float the convolutions that restore the most score per
multiply-add, since a float convolution at 640 px costs what it computes. Shapes come from ONNX
shape inference, so the graph must have a static input size (every export has).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["multiply_adds"]


def multiply_adds(model: Any) -> dict[str, int]:
    """Each Conv/ConvInteger/MatMul/MatMulInteger/Gemm node's multiply-adds per inference, by node
    name (``#<index>`` for an unnamed node) of ``model``, an ``onnx.ModelProto``."""
    import onnx

    graph = onnx.shape_inference.infer_shapes(model).graph
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*graph.value_info, *graph.input, *graph.output]
    }
    shapes.update({t.name: list(t.dims) for t in graph.initializer})
    counted: dict[str, int] = {}
    for i, node in enumerate(graph.node):
        out = shapes.get(node.output[0], [])
        if node.op_type in ("Conv", "ConvInteger"):
            weight = shapes.get(node.input[1], [])
            # weight (Cout, Cin/groups, kH, kW): each output element takes Cin/groups * kH * kW MACs
            macs = int(np.prod(out)) * int(np.prod(weight[1:]))
        elif node.op_type in ("MatMul", "MatMulInteger", "Gemm"):
            a = shapes.get(node.input[0], [])
            transposed = node.op_type == "Gemm" and any(
                att.name == "transA" and att.i for att in node.attribute
            )
            k = a[-2] if transposed and len(a) >= 2 else (a[-1] if a else 0)
            macs = int(np.prod(out)) * int(k)
        else:
            continue
        counted[node.name or f"#{i}"] = macs
    return counted
