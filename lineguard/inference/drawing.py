"""Pictures of what a model saw and decided: one tile per unit, tiles laid out in a PNG grid.

People check a model by looking at its boxes on real frames, so the station (``edge run
--samples``), the demo and the dataset tools draw the same way from here: normalised xyxy boxes
with class and confidence, the verdict and reason underneath, the tile framed in the verdict's
colour so a FAIL stands out in a grid of PASSes. OpenCV only (no fonts or matplotlib to fetch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from lineguard.messages import Verdict, VerdictKind

__all__ = ["VERDICT_COLORS", "annotated_frame", "verdict_tile", "write_tile_grid"]

# BGR: FAIL red, NO_DECISION amber, PASS green.
VERDICT_COLORS: dict[VerdictKind, tuple[int, int, int]] = {
    VerdictKind.FAIL: (0, 0, 230),
    VerdictKind.NO_DECISION: (0, 170, 255),
    VerdictKind.PASS: (0, 190, 0),
}
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_CAPTION_H = 34


def _text(tile: npt.NDArray[np.uint8], text: str, at: tuple[int, int], scale: float) -> None:
    """Text with a dark outline, readable on bright metal and on black alike."""
    cv2.putText(tile, text, at, _FONT, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(tile, text, at, _FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)


def verdict_tile(
    image: npt.NDArray[np.uint8], verdict: Verdict, *, size: int = 240, note: str = ""
) -> npt.NDArray[np.uint8]:
    """A ``size`` x ``size + 34`` BGR tile: the frame, the verdict's boxes, and a caption below.

    The caption holds the unit id (cut to fit) and ``VERDICT/reason`` plus ``note``; a gray
    frame is turned to BGR first.
    """
    frame = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    color = VERDICT_COLORS[verdict.verdict]
    tile = np.zeros((size + _CAPTION_H, size, 3), np.uint8)
    tile[:size] = cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)
    for defect in verdict.defects:
        x1, y1, x2, y2 = (round(c * (size - 1)) for c in defect.box)
        cv2.rectangle(tile, (x1, y1), (x2, y2), color, 2)
        _text(tile, f"{defect.class_name} {defect.confidence:.2f}", (x1 + 2, max(12, y1 - 4)), 0.4)
    cv2.rectangle(tile, (0, 0), (size - 1, size + _CAPTION_H - 1), color, 3)
    chars = max(8, size // 8)
    unit = verdict.unit_id if len(verdict.unit_id) <= chars else ".." + verdict.unit_id[-(chars - 2) :]
    _text(tile, unit, (6, size + 14), 0.4)
    _text(tile, f"{verdict.verdict.value}/{verdict.reason.value} {note}".strip(), (6, size + 29), 0.4)
    return tile


def annotated_frame(
    image: npt.NDArray[np.uint8], verdict: Verdict, *, min_side: int = 480, max_side: int = 960
) -> npt.NDArray[np.uint8]:
    """The whole frame at its own aspect ratio with the verdict's boxes and a verdict banner.

    Unlike a tile it keeps the camera's proportions, so a person can judge a box against the
    part; the long side is scaled into ``[min_side, max_side]`` so labels stay legible on a
    160 px synthetic frame and a 5 MP camera alike. Always a new array: the caller's frame may
    be a reused capture buffer.
    """
    frame = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    h, w = frame.shape[:2]
    long_side = max(h, w, 1)
    scale = min(max(long_side, min_side), max_side) / long_side
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    out: npt.NDArray[np.uint8] = np.ascontiguousarray(
        cv2.resize(frame, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR), np.uint8
    )
    color = VERDICT_COLORS[verdict.verdict]
    ow, oh = size
    thick = max(2, round(max(ow, oh) / 320))
    font = 0.45 * thick
    for defect in verdict.defects:
        x1, y1, x2, y2 = (round(c * (n - 1)) for c, n in zip(defect.box, (ow, oh, ow, oh), strict=True))
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thick)
        _text(out, f"{defect.class_name} {defect.confidence:.2f}", (x1 + 2, max(16, y1 - 6)), font)
    banner = f"{verdict.verdict.value}/{verdict.reason.value}  seq {verdict.seq}"
    (tw, th), _ = cv2.getTextSize(banner, _FONT, font * 1.2, thick)
    cv2.rectangle(out, (0, 0), (min(ow, tw + 16), th + 16), color, -1)
    _text(out, banner, (8, th + 8), font * 1.2)
    cv2.rectangle(out, (0, 0), (ow - 1, oh - 1), color, thick)
    return out


def write_tile_grid(tiles: list[npt.NDArray[Any]], out_png: Path, *, cols: int = 4) -> Path:
    """Lay equal-sized BGR tiles out ``cols`` to a row (blank tiles fill the last row) as a PNG."""
    tiles = tiles + [np.zeros_like(tiles[0])] * (-len(tiles) % cols)
    grid = np.vstack([np.hstack(tiles[i : i + cols]) for i in range(0, len(tiles), cols)])
    out_png.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out_png), grid):
        raise OSError(f"cannot write {out_png}")
    return out_png
