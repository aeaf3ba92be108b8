"""The image quality gate on synthetic units: dark, bright, blurred and frozen frames are caught."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from lineguard.config import QualityConfig
from lineguard.errors import ConfigError, InputError
from lineguard.inference import QualityGate
from lineguard.synthetic import render_unit


def unit(index: int = 0, imgsz: int = 320) -> npt.NDArray[np.uint8]:
    return render_unit(3, index, imgsz=imgsz).image


@pytest.mark.parametrize(
    ("frame", "problem"),
    [
        pytest.param(lambda: unit(0), None, id="normal-unit-ok"),
        pytest.param(lambda: unit(1, imgsz=1024), None, id="large-normal-unit-ok"),
        pytest.param(lambda: np.zeros((240, 320, 3), np.uint8), "too dark", id="black"),
        pytest.param(lambda: np.full((240, 320, 3), 255, np.uint8), "too bright", id="white"),
        pytest.param(lambda: cv2.GaussianBlur(unit(2), (0, 0), 8), "blurred", id="blurred-unit"),
        pytest.param(lambda: np.full((240, 320), 120, np.uint8), "blurred", id="flat-gray"),
    ],
)
def test_gate_names_the_problem_of_a_frame(frame: object, problem: str | None) -> None:
    report = QualityGate(QualityConfig(), frozen_frames=5).check(frame())  # type: ignore[operator]
    if problem is None:
        assert report.problem is None, report
    else:
        assert report.problem is not None and report.problem.startswith(problem), report


def test_dark_problem_text_gives_the_value_and_the_limit() -> None:
    report = QualityGate(QualityConfig(min_brightness=20), frozen_frames=5).check(
        np.full((50, 50, 3), 8, np.uint8)
    )
    assert report.problem == "too dark (mean 8.0 < 20)"
    assert report.brightness == pytest.approx(8.0)
    assert report.contrast == pytest.approx(0.0)


@pytest.mark.parametrize(("repeats", "frozen"), [(1, False), (4, False), (5, True), (9, True)])
def test_identical_frames_in_a_row_are_frozen(repeats: int, frozen: bool) -> None:
    gate = QualityGate(QualityConfig(), frozen_frames=5)
    frame = unit(4)
    reports = [gate.check(frame.copy()) for _ in range(repeats)]
    assert reports[-1].frozen is frozen
    assert (reports[-1].problem or "").startswith("frozen") is frozen


def test_a_changing_frame_ends_a_frozen_run() -> None:
    gate = QualityGate(QualityConfig(), frozen_frames=3)
    stuck = unit(5)
    for _ in range(3):
        gate.check(stuck)
    assert gate.check(unit(6)).problem is None
    assert not gate.check(stuck).frozen


def test_live_frames_of_one_scene_are_not_frozen() -> None:
    gate = QualityGate(QualityConfig(), frozen_frames=3)
    rng = np.random.default_rng(0)
    scene = unit(7).astype(np.int16)
    for _ in range(6):  # the same part under sensor noise: never byte-identical
        noisy = np.clip(scene + rng.integers(-2, 3, scene.shape), 0, 255).astype(np.uint8)
        assert not gate.check(noisy).frozen


def test_bad_gate_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="frozen_frames"):
        QualityGate(QualityConfig(), frozen_frames=1)
    with pytest.raises(ConfigError, match="min_brightness"):
        QualityGate(QualityConfig(min_brightness=200, max_brightness=100), frozen_frames=5)


def test_non_images_are_input_errors() -> None:
    with pytest.raises(InputError):
        QualityGate(QualityConfig(), frozen_frames=5).check(np.zeros((10, 10, 3), np.float32))
