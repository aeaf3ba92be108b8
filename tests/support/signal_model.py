"""The hand-built ONNX "detector" that finds the synthetic line's dark defects, for tests.

The builder lives in ``lineguard.benchmarks.signal_model`` so the fleet benchmark makes the same
models as the tests.
"""

from __future__ import annotations

from lineguard.benchmarks.signal_model import build_signal_onnx, write_eval_set

__all__ = ["build_signal_onnx", "write_eval_set"]
