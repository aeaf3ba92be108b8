"""The image quality gate on synthetic units: dark, bright, blurred and frozen frames are caught,
with bounds that cover the frames the model was trained on."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from lineguard.config import QualityConfig
from lineguard.errors import ConfigError, InputError
from lineguard.inference import BUILT_IN_BOUNDS, QualityGate, quality_bounds, screen_frames
from lineguard.messages import ImageRange, ReferenceStats
from lineguard.synthetic import CONDITIONS, render_unit


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
    with pytest.raises(ConfigError, match="min_brightness"):  # above the built-in 235: set both
        QualityGate(QualityConfig(min_brightness=240), frozen_frames=5)


def test_non_images_are_input_errors() -> None:
    with pytest.raises(InputError):
        QualityGate(QualityConfig(), frozen_frames=5).check(np.zeros((10, 10, 3), np.float32))


# -- bounds from the model card ------------------------------------------------------------------


def glossy(seed: int, count: int) -> list[npt.NDArray[np.uint8]]:
    """Units of a line whose good parts range from mid gray to a mean near 246."""
    return [render_unit(seed, i, imgsz=96, condition=CONDITIONS["glossy"]).image for i in range(count)]


@pytest.fixture(scope="module")
def glossy_reference() -> ReferenceStats:
    gate = QualityGate(QualityConfig(), frozen_frames=1 << 30)
    reports = [gate.check(image) for image in glossy(1, 300)]
    return ReferenceStats(
        brightness=[r.brightness for r in reports],
        contrast=[r.contrast for r in reports],
        sharpness=[r.sharpness for r in reports],
    )


def test_default_bounds_pass_the_training_lines_own_frames(glossy_reference: ReferenceStats) -> None:
    frames = glossy(2, 400)  # other units of the same line
    built_in = screen_frames(frames, quality_bounds(QualityConfig()), QualityConfig())
    assert built_in.rejected["bright"] > 20  # what a fixed 235 did to this line
    fitted = screen_frames(frames, quality_bounds(QualityConfig(), glossy_reference), QualityConfig())
    assert sum(fitted.rejected.values()) <= 0.005 * len(frames), fitted.line()
    assert fitted.line().startswith(f"{sum(fitted.rejected.values())} of 400 sample frames")


def test_configured_bounds_still_reject_as_before(glossy_reference: ReferenceStats) -> None:
    cfg = QualityConfig(max_brightness=235)
    bounds = quality_bounds(cfg, glossy_reference)
    assert bounds.max_brightness == 235 and "configured" in bounds.source
    white = np.full((60, 60, 3), 250, np.uint8)
    assert QualityGate(cfg, frozen_frames=5).check(white, bounds).issue == "bright"


def test_a_white_or_black_frame_is_rejected_whatever_the_card_says() -> None:
    extreme = ReferenceStats(brightness=[0.0, 255.0] * 20, sharpness=[0.0] * 40)
    bounds = quality_bounds(QualityConfig(), extreme)
    gate = QualityGate(QualityConfig(), frozen_frames=5)
    assert gate.check(np.full((40, 40, 3), 255, np.uint8), bounds).issue == "bright"
    assert gate.check(np.zeros((40, 40, 3), np.uint8), bounds).issue == "dark"


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        pytest.param(None, (20.0, 235.0, 5.0), id="no-card"),
        pytest.param(ReferenceStats(), (20.0, 235.0, 5.0), id="card-without-reference"),
        # a narrow line keeps the built-in limits: a usable frame unlike it is drift's to report
        pytest.param(
            ReferenceStats(brightness=[100.0, 120.0] * 20, sharpness=[600.0] * 40),
            (20.0, 235.0, 5.0),
            id="narrow-line-never-narrows",
        ),
        pytest.param(
            ReferenceStats(brightness=[8.0, 244.0] * 20, sharpness=[4.0, 900.0] * 20),
            (1.0, 254.0, 2.0),
            id="wide-line-widens",
        ),
        pytest.param(
            ReferenceStats(
                brightness=[100.0] * 40,
                image_range=ImageRange(
                    frames=900, brightness=(15.0, 240.0), contrast=(5.0, 70.0), sharpness=(6.0, 800.0)
                ),
            ),
            (5.0, 250.0, 3.0),
            id="training-range-first",
        ),
    ],
)
def test_bounds_widen_the_built_in_limits_to_the_cards_frames(
    reference: ReferenceStats | None, expected: tuple[float, float, float]
) -> None:
    bounds = quality_bounds(QualityConfig(), reference)
    assert (bounds.min_brightness, bounds.max_brightness, bounds.min_sharpness) == pytest.approx(
        expected, abs=0.06
    )
    if reference is None or not reference.brightness:
        assert bounds == BUILT_IN_BOUNDS
