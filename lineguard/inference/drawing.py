"""Pictures of what a model saw and decided: one tile per unit, tiles laid out in a PNG grid.

People check a model by looking at its boxes on real frames, so the station (``edge run
--samples``), the demo and the dataset tools draw the same way from here: normalised xyxy boxes
with class and confidence, the verdict and reason underneath, the tile framed in the verdict's
colour so a FAIL stands out in a grid of PASSes. OpenCV only (no fonts or matplotlib to fetch).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from lineguard.messages import Defect, Verdict, VerdictKind

__all__ = ["VERDICT_COLORS", "annotate_frame", "verdict_tile", "write_tile_grid"]

# BGR: FAIL red, NO_DECISION amber, PASS green.
VERDICT_COLORS: dict[VerdictKind, tuple[int, int, int]] = {
    VerdictKind.FAIL: (0, 0, 230),
    VerdictKind.NO_DECISION: (0, 170, 255),
    VerdictKind.PASS: (0, 190, 0),
}
_DOUBTFUL_COLOR = (0, 220, 255)  # BGR yellow: a box the policy weighed but did not count
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
    for defect in verdict.shown_defects:
        x1, y1, x2, y2 = (round(c * (size - 1)) for c in defect.box)
        cv2.rectangle(tile, (x1, y1), (x2, y2), color, 2)
        _text(tile, f"{defect.class_name} {defect.confidence:.2f}", (x1 + 2, max(12, y1 - 4)), 0.4)
    cv2.rectangle(tile, (0, 0), (size - 1, size + _CAPTION_H - 1), color, 3)
    chars = max(8, size // 8)
    unit = verdict.unit_id if len(verdict.unit_id) <= chars else ".." + verdict.unit_id[-(chars - 2) :]
    _text(tile, unit, (6, size + 14), 0.4)
    _text(tile, f"{verdict.verdict.value}/{verdict.reason.value} {note}".strip(), (6, size + 29), 0.4)
    return tile


def annotate_frame(
    image: npt.NDArray[np.uint8], verdict: Verdict, *, doubtful: Sequence[Defect] = ()
) -> npt.NDArray[np.uint8]:
    """A BGR copy of the frame at its own size with the verdict drawn on it, for people to judge.

    The verdict's defects are framed in its colour with class and confidence; ``doubtful`` boxes
    (what the model saw near a threshold, which made an ``uncertain`` unit or that an escape may
    hide) are framed thinly in yellow; a band on top names the verdict, reason and unit
    (and the view, for a unit seen by several cameras).
    """
    frame = np.asarray(image.copy() if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), np.uint8)
    height, width = frame.shape[:2]
    scale = max(0.4, min(width, height) / 640)
    thick = max(2, round(2 * scale))
    color = VERDICT_COLORS[verdict.verdict]
    drawn = {(d.class_id, d.box) for d in verdict.shown_defects}
    shown = [(d, _DOUBTFUL_COLOR, 1) for d in doubtful if (d.class_id, d.box) not in drawn]
    shown += [(d, color, thick) for d in verdict.shown_defects]
    for defect, box_color, line in shown:
        x1, y1 = round(defect.box[0] * (width - 1)), round(defect.box[1] * (height - 1))
        x2, y2 = round(defect.box[2] * (width - 1)), round(defect.box[3] * (height - 1))
        cv2.rectangle(frame, (x1, y1), (x2, y2), box_color, line)
        label = f"{defect.class_name} {defect.confidence:.2f}"
        _text(frame, label, (x1 + 2, max(round(14 * scale), y1 - 4)), 0.45 * scale)
    band = round(22 * scale)
    cv2.rectangle(frame, (0, 0), (width - 1, band), color, -1)
    _text(
        frame,
        f"{verdict.verdict.value}/{verdict.reason.value}  {verdict.unit_id}"
        + (f"  view {verdict.shown_view}" if verdict.views else ""),
        (4, band - 6),
        0.5 * scale,
    )
    cv2.rectangle(frame, (0, 0), (width - 1, height - 1), color, thick)
    return frame


def write_tile_grid(tiles: list[npt.NDArray[Any]], out_png: Path, *, cols: int = 4) -> Path:
    """Lay equal-sized BGR tiles out ``cols`` to a row (blank tiles fill the last row) as a PNG."""
    tiles = tiles + [np.zeros_like(tiles[0])] * (-len(tiles) % cols)
    grid = np.vstack([np.hstack(tiles[i : i + cols]) for i in range(0, len(tiles), cols)])
    out_png.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out_png), grid):
        raise OSError(f"cannot write {out_png}")
    return out_png
