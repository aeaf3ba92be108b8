"""Pre-processing: a camera frame becomes the model's square NCHW float input, the ultralytics way.

Boxes only match what the model was trained and validated on when the frame is prepared exactly
as ultralytics prepares it: letterbox to the square input (aspect kept, centred, gray 114 padding,
bilinear resize, the same rounding), BGR to RGB, scaled to 0..1. ``letterbox`` is the pure
function (training's evaluation uses it too); ``Preprocessor`` does the same into buffers it
allocates once, so the per-frame path allocates nothing but OpenCV's resize output.
``LetterboxGeometry`` maps boxes back from model-input pixels to the frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from lineguard.errors import InputError

__all__ = ["PAD_VALUE", "LetterboxGeometry", "Preprocessor", "as_image", "letterbox", "letterbox_geometry"]

PAD_VALUE = 114  # ultralytics' padding gray
_DIVISOR = np.float32(255)  # uint8 / 255 in float32: ultralytics' own arithmetic, to the bit

Image = npt.NDArray[np.uint8]
Tensor = npt.NDArray[np.float32]


@dataclass(frozen=True)
class LetterboxGeometry:
    """Where the frame sits inside the square model input: scale per axis and the left/top pad."""

    frame_h: int
    frame_w: int
    size: int  # square model input side
    new_w: int  # resized frame width inside the input
    new_h: int
    pad_x: int  # left padding in input pixels
    pad_y: int  # top padding in input pixels

    @property
    def gain_x(self) -> float:
        return self.new_w / self.frame_w

    @property
    def gain_y(self) -> float:
        return self.new_h / self.frame_h

    def to_frame(self, xyxy: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
        """Input-pixel ``xyxy`` boxes -> frame-pixel boxes, clipped to the frame."""
        out = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4).copy()
        out[:, [0, 2]] = (out[:, [0, 2]] - self.pad_x) / self.gain_x
        out[:, [1, 3]] = (out[:, [1, 3]] - self.pad_y) / self.gain_y
        out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0.0, self.frame_w)
        out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0.0, self.frame_h)
        return out

    def to_normalised(self, xyxy: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
        """Input-pixel ``xyxy`` boxes -> boxes normalised to the frame (0..1), clipped."""
        out = self.to_frame(xyxy)
        out[:, [0, 2]] /= self.frame_w
        out[:, [1, 3]] /= self.frame_h
        return np.clip(out, 0.0, 1.0, out=out)

    def to_input(self, xyxy_frame: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
        """Frame-pixel ``xyxy`` boxes -> input pixels (the inverse of ``to_frame`` inside the frame)."""
        out = np.asarray(xyxy_frame, dtype=np.float32).reshape(-1, 4).copy()
        out[:, [0, 2]] = out[:, [0, 2]] * self.gain_x + self.pad_x
        out[:, [1, 3]] = out[:, [1, 3]] * self.gain_y + self.pad_y
        return out


def letterbox_geometry(frame_h: int, frame_w: int, size: int) -> LetterboxGeometry:
    """Ultralytics' ``LetterBox(auto=False, center=True, scaleup=True)`` arithmetic, rounding included."""
    if frame_h <= 0 or frame_w <= 0 or size <= 0:
        raise InputError(f"letterbox needs positive sizes; got frame {frame_w}x{frame_h}, input {size}")
    r = min(size / frame_h, size / frame_w)
    new_w, new_h = max(round(frame_w * r), 1), max(round(frame_h * r), 1)
    dw, dh = (size - new_w) / 2, (size - new_h) / 2
    return LetterboxGeometry(
        frame_h=frame_h,
        frame_w=frame_w,
        size=size,
        new_w=new_w,
        new_h=new_h,
        pad_x=round(dw - 0.1),
        pad_y=round(dh - 0.1),
    )


def as_image(array: object) -> Image:
    """View an OpenCV result (typed loosely by its stubs) as the uint8 image it is; no copy."""
    return np.asarray(array, dtype=np.uint8)


def _check_frame(frame_bgr: npt.NDArray[np.generic]) -> Image:
    if not isinstance(frame_bgr, np.ndarray) or frame_bgr.dtype != np.uint8:
        kind = getattr(frame_bgr, "dtype", type(frame_bgr).__name__)
        raise InputError(f"a frame must be a uint8 numpy image; got {kind}")
    frame = as_image(frame_bgr)
    if frame.ndim == 2 and 0 not in frame.shape:
        return as_image(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    if frame.ndim != 3 or frame.shape[2] != 3 or 0 in frame.shape:
        raise InputError(f"a frame must be HxWx3 BGR (or HxW gray); got shape {frame.shape}")
    return frame


def letterbox(frame_bgr: Image, size: int, out: Image | None = None) -> tuple[Image, LetterboxGeometry]:
    """Resize + pad ``frame_bgr`` into a ``size`` x ``size`` BGR image (into ``out`` when given)."""
    frame = _check_frame(frame_bgr)
    geo = letterbox_geometry(frame.shape[0], frame.shape[1], size)
    canvas = np.empty((size, size, 3), np.uint8) if out is None else out
    if canvas.shape != (size, size, 3) or canvas.dtype != np.uint8:
        raise InputError(f"letterbox output buffer must be ({size}, {size}, 3) uint8; got {canvas.shape}")
    resized = frame
    if (frame.shape[1], frame.shape[0]) != (geo.new_w, geo.new_h):
        resized = as_image(cv2.resize(frame, (geo.new_w, geo.new_h), interpolation=cv2.INTER_LINEAR))
    # Pad only the borders: the inside is overwritten by the resized frame.
    x0, y0, x1, y1 = geo.pad_x, geo.pad_y, geo.pad_x + geo.new_w, geo.pad_y + geo.new_h
    canvas[:y0] = PAD_VALUE
    canvas[y1:] = PAD_VALUE
    canvas[y0:y1, :x0] = PAD_VALUE
    canvas[y0:y1, x1:] = PAD_VALUE
    canvas[y0:y1, x0:x1] = resized
    return canvas, geo


class Preprocessor:
    """Frame -> ``(1, 3, size, size)`` float32 RGB 0..1, written into one buffer reused every frame.

    The returned tensor is that buffer: it is overwritten by the next call, so a caller that keeps
    it must copy. One instance serves one thread.
    """

    def __init__(self, size: int) -> None:
        if size <= 0:
            raise InputError(f"model input size must be positive; got {size}")
        self.size = size
        self._canvas: Image = np.full((size, size, 3), PAD_VALUE, np.uint8)
        self._plane: Image = np.empty((size, size), np.uint8)  # one colour channel at a time
        self.tensor: Tensor = np.empty((1, 3, size, size), np.float32)
        self._geo: LetterboxGeometry | None = None  # the geometry whose padding rows the tensor holds

    def __call__(self, frame_bgr: Image) -> tuple[Tensor, LetterboxGeometry]:
        canvas, geo = letterbox(frame_bgr, self.size, out=self._canvas)
        # Rows above and below the frame hold only padding: they are converted again only when the
        # frame's geometry changes (a fifth of the work for a 5:4 camera).
        rows = slice(geo.pad_y, geo.pad_y + geo.new_h) if geo == self._geo else slice(None)
        # Each channel copied into one contiguous plane, then scaled: under half the time of numpy's
        # strided HWC -> CHW transpose at 640 px, and nothing allocated; BGR lands in RGB order.
        plane = self._plane[rows]
        for channel, bgr_index in enumerate((2, 1, 0)):
            cv2.extractChannel(canvas[rows], bgr_index, plane)
            np.divide(plane, _DIVISOR, out=self.tensor[0, channel, rows])
        self._geo = geo
        return self.tensor, geo
