"""A synthetic production line: textured metal parts with labeled defects, made from a seed.

Tests, the demo and the synthetic camera need images with known ground truth on a machine that
has no real dataset. Unit ``i`` of seed ``s`` is always the same picture (its random stream is
seeded by ``(s, i)``), so a test can name a unit. Conditions shift brightness, blur, noise or the
look of defects to simulate a changed lamp, a dirty lens or a new supplier. Numpy only, so the
edge's synthetic camera needs nothing beyond core.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lineguard.errors import InputError

__all__ = [
    "CLASSES",
    "CONDITIONS",
    "Condition",
    "SyntheticUnit",
    "condition_named",
    "render_unit",
]

CLASSES: tuple[str, ...] = ("scratch", "pit", "crack", "inclusion")

Image = npt.NDArray[np.uint8]
Field2D = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Condition:
    """How the line looks: ``nominal`` is what models are trained on."""

    name: str = "nominal"
    brightness: float = 1.0  # gain on the whole image
    offset: float = 0.0  # added gray level
    blur_sigma: float = 0.0  # lens blur in pixels
    noise_sigma: float = 3.0  # sensor noise in gray levels
    new_defect_look: bool = False  # defects appear bright and wider (new supplier)
    offset_spread: float = 0.0  # each unit's offset varies by up to this either way (glossy parts)


CONDITIONS: dict[str, Condition] = {
    "nominal": Condition(),
    "dark": Condition(name="dark", brightness=0.55, offset=-10.0),
    "bright": Condition(name="bright", brightness=1.35, offset=25.0),
    "blur": Condition(name="blur", blur_sigma=2.5),
    "noisy": Condition(name="noisy", noise_sigma=14.0),
    "new_defect": Condition(name="new_defect", new_defect_look=True),
    # Condition B of the flywheel: another lamp, a new defect appearance and a dirty lens together.
    # Without the blur, a model trained on 600 nominal units still FAILed 99 % of the defective
    # units (mAP50 0.55 -> 0.15, but a box of any class fails a unit): no loss for retraining to win back.
    "shifted": Condition(name="shifted", brightness=0.8, offset=30.0, new_defect_look=True, blur_sigma=2.5),
    # Another line, not a shift: glossy parts whose brightness varies from unit to unit, up to a
    # mean gray of about 250 (a bound chosen for the nominal line rejects its good units).
    "glossy": Condition(name="glossy", brightness=0.6, offset=125.0, offset_spread=70.0),
}


def condition_named(name: str) -> Condition:
    try:
        return CONDITIONS[name]
    except KeyError:
        raise InputError(
            f"unknown synthetic condition '{name}'; choose one of: {', '.join(CONDITIONS)}"
        ) from None


@dataclass(frozen=True)
class SyntheticUnit:
    """One unit: BGR image plus ground truth as YOLO rows ``(class_id, cx, cy, w, h)``."""

    index: int
    image: Image
    labels: tuple[tuple[int, float, float, float, float], ...]

    @property
    def defective(self) -> bool:
        return bool(self.labels)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: int) -> Field2D:
    """Low-frequency noise: a coarse grid upsampled bilinearly, in [-1, 1]."""
    h, w = shape
    gh, gw = max(2, h // scale + 2), max(2, w // scale + 2)
    grid = rng.uniform(-1, 1, (gh, gw)).astype(np.float32)
    ys = np.linspace(0, gh - 1.001, h, dtype=np.float32)
    xs = np.linspace(0, gw - 1.001, w, dtype=np.float32)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bot = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    field: Field2D = (top * (1 - fy) + bot * fy).astype(np.float32)
    return field


def _brushed_metal(rng: np.random.Generator, size: int) -> Field2D:
    base = rng.uniform(125, 155)
    streaks = rng.normal(0, 1, (size, 1)).astype(np.float32) * 6.0  # rolling direction
    fine = rng.normal(0, 1, (size, size)).astype(np.float32)
    kernel = np.ones(9, dtype=np.float32) / 9.0
    fine = np.apply_along_axis(np.convolve, 1, fine, kernel, mode="same").astype(np.float32) * 5.0
    light = _smooth_noise(rng, (size, size), max(8, size // 3)) * 12.0
    return (base + streaks + fine + light).astype(np.float32)


def _segment_distance(xx: Field2D, yy: Field2D, p: tuple[float, float], q: tuple[float, float]) -> Field2D:
    px, py = p
    dx, dy = q[0] - px, q[1] - py
    length2 = max(dx * dx + dy * dy, 1e-6)
    t = np.clip(((xx - px) * dx + (yy - py) * dy) / length2, 0.0, 1.0)
    dist: Field2D = np.hypot(xx - (px + t * dx), yy - (py + t * dy)).astype(np.float32)
    return dist


def _defect_alpha(
    rng: np.random.Generator, cls: int, size: int, inner: tuple[int, int], new_look: bool
) -> Field2D:
    """Opacity field (0..1) of one defect placed inside the part's area."""
    lo, hi = inner
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    widen = 1.8 if new_look else 1.0
    if cls == 0:  # scratch: long thin straight line
        length = rng.uniform(0.2, 0.45) * size
        angle = rng.uniform(0, np.pi)
        cx, cy = rng.uniform(lo + length / 2, hi - length / 2, 2)
        dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
        d = _segment_distance(xx, yy, (cx - dx, cy - dy), (cx + dx, cy + dy))
        line: Field2D = np.exp(-((d / (1.1 * widen)) ** 2)).astype(np.float32)
        return line
    if cls == 1:  # pit: small round spots in a cluster
        alpha = np.zeros((size, size), np.float32)
        cx, cy = rng.uniform(lo + 12, hi - 12, 2)
        for _ in range(int(rng.integers(1, 4))):
            r = rng.uniform(2.0, 4.5) * widen
            ox, oy = rng.normal(0, 4, 2)
            d = np.hypot(xx - cx - ox, yy - cy - oy)
            alpha = np.maximum(alpha, np.clip((r + 1 - d) / 1.5, 0, 1))
        return alpha
    if cls == 2:  # crack: jagged random walk
        alpha = np.zeros((size, size), np.float32)
        steps = int(rng.integers(5, 9))
        seg = rng.uniform(0.03, 0.06) * size
        x, y = rng.uniform(lo + steps * seg / 2, hi - steps * seg / 2, 2)
        heading = rng.uniform(0, 2 * np.pi)
        for _ in range(steps):
            heading += rng.normal(0, 0.6)
            nx, ny = x + np.cos(heading) * seg, y + np.sin(heading) * seg
            nx, ny = float(np.clip(nx, lo, hi)), float(np.clip(ny, lo, hi))
            d = _segment_distance(xx, yy, (x, y), (nx, ny))
            alpha = np.maximum(alpha, np.exp(-((d / (0.9 * widen)) ** 2)))
            x, y = nx, ny
        return alpha
    # inclusion: elongated irregular blob along the rolling direction
    w, h = rng.uniform(0.08, 0.2) * size, rng.uniform(0.025, 0.06) * size * widen
    cx, cy = rng.uniform(lo + w, hi - w), rng.uniform(lo + h * 2, hi - h * 2)
    wobble = _smooth_noise(rng, (size, size), 6) * 0.35
    r = ((xx - cx) / w) ** 2 + ((yy - cy) / h) ** 2 + wobble
    blob: Field2D = np.clip((1.0 - r) * 3.0, 0, 1).astype(np.float32)
    return blob


def _gaussian_blur(img: Field2D, sigma: float) -> Field2D:
    radius = max(1, int(3 * sigma))
    xs = np.arange(-radius, radius + 1, dtype=np.float32)
    k = np.exp(-(xs**2) / (2 * sigma * sigma))
    k /= k.sum()
    padded = np.pad(img, radius, mode="edge")
    rows = np.apply_along_axis(np.convolve, 1, padded, k, mode="valid")
    blurred: Field2D = np.apply_along_axis(np.convolve, 0, rows, k, mode="valid").astype(np.float32)
    return blurred


def render_unit(
    seed: int,
    index: int,
    *,
    imgsz: int = 320,
    defect_rate: float = 0.5,
    condition: Condition = CONDITIONS["nominal"],
) -> SyntheticUnit:
    """Draw unit ``index`` of the line with ``seed``: the same arguments give the same bytes."""
    if imgsz < 64:
        raise InputError(f"synthetic image size must be at least 64 px; got {imgsz}")
    if not 0.0 <= defect_rate <= 1.0:
        raise InputError(f"defect rate must be between 0 and 1; got {defect_rate}")
    rng = np.random.default_rng([seed, index])
    size = imgsz
    belt = np.full((size, size), rng.uniform(30, 45), np.float32)
    margin = int(size * rng.uniform(0.06, 0.1))
    part = np.zeros((size, size), bool)
    part[margin : size - margin, margin : size - margin] = True
    gray: Field2D = np.where(part, _brushed_metal(rng, size), belt).astype(np.float32)

    labels: list[tuple[int, float, float, float, float]] = []
    if rng.uniform() < defect_rate:
        for _ in range(int(rng.choice([1, 1, 1, 2, 2, 3]))):
            cls = int(rng.integers(0, len(CLASSES)))
            alpha = _defect_alpha(rng, cls, size, (margin + 6, size - margin - 6), False)
            alpha = np.where(part, alpha, 0.0).astype(np.float32)
            if condition.new_defect_look:
                alpha = np.where(
                    part,
                    _defect_alpha(
                        np.random.default_rng([seed, index, cls]),
                        cls,
                        size,
                        (margin + 6, size - margin - 6),
                        True,
                    ),
                    0.0,
                ).astype(np.float32)
            ys, xs = np.nonzero(alpha > 0.25)
            if len(xs) < 3:
                continue
            contrast = rng.uniform(45, 85)
            bright_scratch = cls == 0 and rng.uniform() < 0.3
            sign = 1.0 if (condition.new_defect_look or bright_scratch) else -1.0
            gray = (gray + sign * contrast * alpha).astype(np.float32)
            x1, x2 = xs.min(), xs.max() + 1
            y1, y2 = ys.min(), ys.max() + 1
            labels.append(
                (
                    cls,
                    round(float(x1 + x2) / 2 / size, 6),
                    round(float(y1 + y2) / 2 / size, 6),
                    round(float(x2 - x1) / size, 6),
                    round(float(y2 - y1) / size, 6),
                )
            )

    offset = condition.offset
    if condition.offset_spread > 0:  # its own stream: the nominal units stay byte for byte the same
        offset += float(np.random.default_rng([seed, index, 2]).uniform(-1.0, 1.0)) * condition.offset_spread
    gray = (gray * condition.brightness + offset).astype(np.float32)
    if condition.blur_sigma > 0:
        gray = _gaussian_blur(gray, condition.blur_sigma)
    gray = (gray + rng.normal(0, condition.noise_sigma, gray.shape)).astype(np.float32)
    tint = np.array([1.0, 0.99, 0.96], np.float32)  # B, G, R: slightly cool steel
    image = np.clip(gray[:, :, None] * tint, 0, 255).astype(np.uint8)
    return SyntheticUnit(index=index, image=image, labels=tuple(labels))
