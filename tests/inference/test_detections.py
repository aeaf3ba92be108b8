"""``Detections``: shape checks on construction and chainable boolean filters."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from lineguard.errors import InputError
from lineguard.inference import Detections


def test_empty_has_zero_boxes_of_the_right_shape() -> None:
    empty = Detections.empty()
    assert len(empty) == 0
    assert empty.xyxy.shape == (0, 4)
    assert empty.top_confidence() == 0.0
    assert len(empty[empty.confidence > 0.5]) == 0


def test_mask_returns_new_detections_and_filters_chain() -> None:
    dets = Detections.from_arrays(
        [[0.1, 0.1, 0.2, 0.2], [0.0, 0.0, 1.0, 1.0], [0.5, 0.5, 0.6, 0.9]], [0.9, 0.3, 0.6], [0, 1, 2]
    )
    strong = dets[dets.confidence >= 0.5]
    small = strong[strong.area < 0.02]
    assert strong.class_id.tolist() == [0, 2]
    assert small.class_id.tolist() == [0]
    assert dets.top_confidence() == pytest.approx(0.9)
    np.testing.assert_allclose(dets.area, [0.01, 1.0, 0.04], rtol=1e-5)


@pytest.mark.parametrize(
    ("xyxy", "confidence", "class_id", "needle"),
    [
        (np.zeros((2, 3), np.float32), np.zeros(2, np.float32), np.zeros(2, np.int64), "shape (n, 4)"),
        (np.zeros((2, 4), np.float32), np.zeros(3, np.float32), np.zeros(2, np.int64), "share length"),
        (np.zeros((1, 4), np.float32), np.zeros(2, np.float32), np.zeros(2, np.int64), "rows"),
    ],
)
def test_wrong_shapes_are_named_in_the_error(
    xyxy: npt.NDArray[np.float32],
    confidence: npt.NDArray[np.float32],
    class_id: npt.NDArray[np.int64],
    needle: str,
) -> None:
    with pytest.raises(InputError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        Detections(xyxy=xyxy, confidence=confidence, class_id=class_id)
