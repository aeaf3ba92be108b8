"""The synthetic line: deterministic units, labeled defects, and conditions that shift the image."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from lineguard.errors import InputError
from lineguard.synthetic import CLASSES, CONDITIONS, condition_named, render_unit


def test_same_seed_and_index_give_the_same_unit() -> None:
    a = render_unit(3, 17, imgsz=96)
    b = render_unit(3, 17, imgsz=96)
    assert np.array_equal(a.image, b.image)
    assert a.labels == b.labels
    assert not np.array_equal(a.image, render_unit(4, 17, imgsz=96).image)


def test_units_carry_boxes_of_every_class_inside_the_frame() -> None:
    seen: set[int] = set()
    for index in range(60):
        unit = render_unit(1, index, imgsz=128, defect_rate=1.0)
        assert unit.image.shape == (128, 128, 3) and unit.image.dtype == np.uint8
        for cls, cx, cy, w, h in unit.labels:
            seen.add(cls)
            assert 0 < w <= 1 and 0 < h <= 1
            assert cx - w / 2 >= 0 and cx + w / 2 <= 1
            assert cy - h / 2 >= 0 and cy + h / 2 <= 1
    assert seen == set(range(len(CLASSES)))


def test_defect_rate_zero_gives_good_units() -> None:
    assert all(not render_unit(2, i, imgsz=96, defect_rate=0.0).defective for i in range(10))


def test_conditions_shift_brightness_and_sharpness() -> None:
    nominal = render_unit(5, 1, imgsz=128).image.astype(float)
    dark = render_unit(5, 1, imgsz=128, condition=CONDITIONS["dark"]).image.astype(float)
    blurred = render_unit(5, 1, imgsz=128, condition=CONDITIONS["blur"]).image.astype(float)
    assert dark.mean() < nominal.mean() * 0.7

    def high_freq(img: npt.NDArray[np.float64]) -> float:
        return float(np.abs(np.diff(img[:, :, 0], axis=0)).mean())

    assert high_freq(blurred) < high_freq(nominal) * 0.6


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [({"imgsz": 32}, "at least 64"), ({"defect_rate": 1.5}, "between 0 and 1")],
)
def test_bad_arguments_are_refused(kwargs: dict[str, float], needle: str) -> None:
    with pytest.raises(InputError, match=needle):
        render_unit(0, 0, **kwargs)  # type: ignore[arg-type]


def test_unknown_condition_lists_the_choices() -> None:
    with pytest.raises(InputError, match="nominal"):
        condition_named("foggy")
