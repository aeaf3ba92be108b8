"""A tiny YOLO detector as ONNX + model card, built from a model YAML with random weights.

Plumbing tests (engine, daemon, registry, hot swap) need a real ONNX file of the shape the
product ships, not a mock; training one would take minutes, so the weights are random. The
builder lives in ``lineguard.benchmarks.models`` so the latency benchmark makes the same model.
"""

from __future__ import annotations

from lineguard.benchmarks.models import build_random_yolo_onnx

__all__ = ["build_random_yolo_onnx"]
