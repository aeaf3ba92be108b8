"""``Detections``: the one type for boxes that flows from model to verdict.

Parallel numpy arrays (normalised ``xyxy`` boxes in 0..1, ``confidence`` and ``class_id``) so
that postprocessing, evaluation and the verdict policy share one shape and filters chain with a
boolean mask. Shapes are checked on construction because a wrong shape found three stages later
is hard to trace back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lineguard.errors import InputError

__all__ = ["Detections"]

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, eq=False)
class Detections:
    """Boxes of one frame; ``xyxy`` is normalised to the frame's width and height."""

    xyxy: FloatArray
    confidence: FloatArray
    class_id: IntArray

    def __post_init__(self) -> None:
        n = len(self.confidence)
        if self.xyxy.ndim != 2 or self.xyxy.shape[1] != 4:
            raise InputError(f"Detections.xyxy must have shape (n, 4); got {self.xyxy.shape}")
        if self.confidence.shape != (n,) or self.class_id.shape != (n,):
            raise InputError(
                "Detections arrays must share length n: "
                f"xyxy {self.xyxy.shape}, confidence {self.confidence.shape}, "
                f"class_id {self.class_id.shape}"
            )
        if self.xyxy.shape[0] != n:
            raise InputError(f"Detections.xyxy has {self.xyxy.shape[0]} rows, expected {n}")

    @classmethod
    def empty(cls) -> Detections:
        return cls(
            xyxy=np.zeros((0, 4), dtype=np.float32),
            confidence=np.zeros((0,), dtype=np.float32),
            class_id=np.zeros((0,), dtype=np.int64),
        )

    @classmethod
    def from_arrays(
        cls,
        xyxy: npt.ArrayLike,
        confidence: npt.ArrayLike,
        class_id: npt.ArrayLike,
    ) -> Detections:
        """Build from any array-likes, coercing dtypes (lists from JSON, float64 from math)."""
        boxes = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4)
        return cls(
            xyxy=boxes,
            confidence=np.asarray(confidence, dtype=np.float32).reshape(-1),
            class_id=np.asarray(class_id, dtype=np.int64).reshape(-1),
        )

    def __len__(self) -> int:
        return len(self.confidence)

    def __getitem__(self, index: npt.NDArray[np.bool_] | npt.NDArray[np.intp] | slice) -> Detections:
        return Detections(
            xyxy=self.xyxy[index].reshape(-1, 4),
            confidence=self.confidence[index].reshape(-1),
            class_id=self.class_id[index].reshape(-1),
        )

    @property
    def area(self) -> FloatArray:
        """Box area as a share of the frame (0..1), for the minimum-area rule."""
        wh = np.clip(self.xyxy[:, 2:] - self.xyxy[:, :2], 0.0, None)
        return (wh[:, 0] * wh[:, 1]).astype(np.float32)

    def top_confidence(self) -> float:
        return float(self.confidence.max()) if len(self) else 0.0
