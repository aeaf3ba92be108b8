"""Letterbox geometry and the model input tensor, checked against ultralytics' arithmetic."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from lineguard.errors import InputError
from lineguard.inference import PAD_VALUE, Preprocessor, letterbox, letterbox_geometry


@pytest.mark.parametrize(
    ("frame_hw", "size", "new_wh", "pad_xy"),
    [
        ((160, 160), 160, (160, 160), (0, 0)),  # already square and sized: untouched
        ((480, 640), 320, (320, 240), (0, 40)),  # landscape: bars top and bottom
        ((1024, 1280), 640, (640, 512), (0, 64)),
        ((640, 480), 320, (240, 320), (40, 0)),  # portrait: bars left and right
        ((100, 333), 160, (160, 48), (0, 56)),  # odd padding: ultralytics rounds dh - 0.1
        ((10, 3000), 160, (160, 1), (0, 79)),  # a thin frame keeps at least one pixel
        ((80, 80), 160, (160, 160), (0, 0)),  # small frames are scaled up
        ((160, 159), 160, (159, 160), (0, 0)),  # half a pixel of padding goes right, not left
    ],
)
def test_letterbox_geometry_matches_ultralytics_rounding(
    frame_hw: tuple[int, int], size: int, new_wh: tuple[int, int], pad_xy: tuple[int, int]
) -> None:
    geo = letterbox_geometry(*frame_hw, size)
    assert (geo.new_w, geo.new_h) == new_wh
    assert (geo.pad_x, geo.pad_y) == pad_xy


@pytest.mark.parametrize("frame_hw", [(160, 160), (480, 640), (640, 480), (1024, 1280), (97, 211)])
def test_boxes_round_trip_through_the_letterbox(frame_hw: tuple[int, int]) -> None:
    h, w = frame_hw
    geo = letterbox_geometry(h, w, 320)
    boxes = np.array([[0, 0, w, h], [w * 0.25, h * 0.1, w * 0.5, h * 0.9]], np.float32)
    back = geo.to_frame(geo.to_input(boxes))
    np.testing.assert_allclose(back, boxes, atol=1e-3 * max(h, w))
    norm = geo.to_normalised(geo.to_input(boxes))
    np.testing.assert_allclose(norm[0], [0, 0, 1, 1], atol=1e-5)


def test_boxes_in_the_padding_are_clipped_to_the_frame() -> None:
    geo = letterbox_geometry(480, 640, 320)  # 40 px bars above and below
    inside_bar = np.array([[-10, 0, 330, 30]], np.float32)  # input pixels, partly in the top bar
    assert geo.to_normalised(inside_bar).tolist() == [[0.0, 0.0, 1.0, 0.0]]


def test_letterbox_pads_gray_and_centres_the_frame() -> None:
    frame = np.full((100, 200, 3), 7, np.uint8)
    canvas, geo = letterbox(frame, 160)
    assert canvas.shape == (160, 160, 3)
    assert (canvas[: geo.pad_y] == PAD_VALUE).all()
    assert (canvas[geo.pad_y + geo.new_h :] == PAD_VALUE).all()
    assert (canvas[geo.pad_y : geo.pad_y + geo.new_h] == 7).all()


def test_input_tensor_is_rgb_nchw_scaled_to_one() -> None:
    frame = np.zeros((64, 64, 3), np.uint8)
    frame[..., 0] = 255  # pure blue in BGR
    tensor, _ = Preprocessor(64)(frame)
    assert tensor.shape == (1, 3, 64, 64)
    assert tensor.dtype == np.float32
    assert tensor[0, 2].min() == 1.0  # blue lands in the last (RGB) channel
    assert tensor[0, 0].max() == 0.0


def test_preprocessor_reuses_one_buffer_across_frames() -> None:
    pre = Preprocessor(64)
    first, _ = pre(np.zeros((30, 90, 3), np.uint8))
    second, geo = pre(np.full((90, 30, 3), 255, np.uint8))
    assert first is second
    # The previous frame's pixels do not leak into the new padding.
    assert np.allclose(second[0, :, :, : geo.pad_x], PAD_VALUE / 255)


def test_tensor_is_ultralytics_arithmetic_to_the_bit_frame_after_frame() -> None:
    rng = np.random.default_rng(3)
    pre = Preprocessor(96)
    # Two frames of one geometry (the second converts only the rows inside the frame), then another.
    for shape in ((40, 50, 3), (40, 50, 3), (70, 30, 3), (40, 50, 3)):
        frame = rng.integers(0, 256, shape, np.uint8)
        tensor, _ = pre(frame)
        canvas, _ = letterbox(frame, 96)
        expected = canvas[..., ::-1].transpose(2, 0, 1).astype(np.float32) / np.float32(255)
        assert np.array_equal(tensor[0], expected)


def test_gray_frames_are_accepted_as_three_channels() -> None:
    tensor, _ = Preprocessor(32)(np.full((32, 32), 51, np.uint8))
    assert np.allclose(tensor, 0.2)


@pytest.mark.parametrize(
    "frame",
    [
        np.zeros((0, 10, 3), np.uint8),
        np.zeros((10, 10, 4), np.uint8),
        np.zeros((10, 10, 3), np.float32),
    ],
    ids=["empty", "four-channels", "float"],
)
def test_unusable_frames_are_refused_with_their_shape(frame: npt.NDArray[np.generic]) -> None:
    with pytest.raises(InputError, match="frame"):
        letterbox(frame, 32)  # type: ignore[arg-type]
