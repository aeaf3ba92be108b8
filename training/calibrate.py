"""Choose per-class confidence thresholds that keep unit escapes under a target, with least overkill.

An escape (a defective unit shipped) costs far more than an overkill (a good unit scrapped or
re-inspected), so the quality engineer sets a ceiling on the escape rate and wants the fewest
false rejects under it. On the validation split every unit has a top confidence per class; a unit
FAILs when any class reaches its threshold. Starting from the best single threshold that meets
the ceiling, thresholds are raised one grid step at a time, each time on the class whose step
removes the most overkill while the escape rate stays under the ceiling, and only while a step
spares good units: a higher threshold that scraps no fewer good units only lets more defects of
that class through on the line. The uniform-threshold sweep is kept as the trade-off curve (PNG +
table).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from lineguard.config import PolicyConfig
from lineguard.errors import InputError
from lineguard.inference import unit_rates_at
from lineguard.training.evaluate import Evaluation, evaluate
from lineguard.training.train import load_run

__all__ = [
    "CALIBRATION_FILE",
    "Calibration",
    "calibrate",
    "calibrate_run",
    "lowest_threshold",
    "write_curve_png",
]

CALIBRATION_FILE = "calibration.json"
# Starts at the edge's confidence floor: boxes below policy.min_confidence never reach the verdict
# policy, so a lower threshold would look safe here and let defects escape on the line. The curve
# covers the whole grid; the search starts at floor + review band (see ``lowest_threshold``).
GRID: npt.NDArray[np.float64] = np.round(np.arange(PolicyConfig().min_confidence, 1.0, 0.01), 2)


def lowest_threshold(policy: PolicyConfig) -> float:
    """The lowest threshold whose review band the edge can still see (floor + band).

    A threshold closer to the floor than the band hides the band's lower part (those boxes are
    dropped before the policy), so a doubtful unit would PASS instead of NO_DECISION/uncertain.
    """
    lowest = policy.lowest_threshold
    if lowest >= 1.0:
        raise InputError(
            f"policy.min_confidence {policy.min_confidence} + policy.review_band {policy.review_band} "
            "leaves no threshold below 1; lower one of them"
        )
    return lowest


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


@dataclass
class Calibration:
    max_escape: float
    thresholds: dict[str, float]
    escape_rate: float | None
    overkill_rate: float | None
    met: bool
    defective_units: int
    good_units: int
    curve: list[dict[str, float | None]]  # uniform threshold sweep: threshold, escape, overkill
    max_overkill: float | None = None
    lowest: float = 0.0  # floor + review band: no threshold below it
    clipped: bool = False  # the target needed thresholds below ``lowest``
    below_clip_escape: float | None = None  # escape at the floor, had the band not been kept

    def verdict(self) -> str:
        """One line: the target met or missed, with the escape and overkill actually achieved."""
        target = f"escape target {_pct(self.max_escape)}"
        if self.max_overkill is not None:
            target += f", overkill target {_pct(self.max_overkill)}"
        got = f"escape {_pct(self.escape_rate)}, overkill {_pct(self.overkill_rate)}"
        if self.met:
            return f"{target}: met ({got})"
        line = f"{target}: NOT met; best achievable {got}"
        if self.clipped:
            line += (
                f" (thresholds clipped at {self.lowest:.2f} = confidence floor + review band; "
                f"at the floor escape would be {_pct(self.below_clip_escape)})"
            )
        return line

    def table(self) -> str:
        def pct(v: float | None) -> str:
            return "n/a" if v is None else f"{100 * v:.2f}"

        rows = ["| threshold (all classes) | escape % | overkill % |", "|---:|---:|---:|"]
        for point in self.curve:
            if round(float(point["threshold"] or 0) * 100) % 5 == 0:
                rows.append(
                    f"| {point['threshold']:.2f} | {pct(point['escape'])} | {pct(point['overkill'])} |"
                )
        chosen = ", ".join(f"{k} {v:.2f}" for k, v in self.thresholds.items())
        rows.append(f"| per class: {chosen} | {pct(self.escape_rate)} | {pct(self.overkill_rate)} |")
        return "\n".join(rows)


def _cost(rates: Any) -> tuple[float, float]:
    return (rates.overkill_rate or 0.0, rates.escape_rate or 0.0)


def _raise_while_sparing(
    scores: npt.NDArray[np.float64],
    defective: npt.NDArray[np.bool_],
    grid: npt.NDArray[np.float64],
    index: npt.NDArray[np.int_],
    max_escape: float,
) -> npt.NDArray[np.int_]:
    """Raise one class a grid step at a time while a step spares good units under the ceiling."""
    while True:
        current = _cost(unit_rates_at(scores, defective, grid[index]))
        best: tuple[tuple[float, float], int] | None = None
        for c in range(len(index)):
            if index[c] + 1 >= len(grid):
                continue
            trial = index.copy()
            trial[c] += 1
            rates = unit_rates_at(scores, defective, grid[trial])
            if (rates.escape_rate or 0.0) > max_escape:
                continue
            if best is None or _cost(rates) < best[0]:
                best = (_cost(rates), c)
        if best is None or best[0][0] >= current[0]:
            return index
        index[best[1]] += 1


def calibrate(
    evaluation: Evaluation,
    max_escape: float,
    *,
    max_overkill: float | None = None,
    policy: PolicyConfig | None = None,
) -> Calibration:
    """Per-class thresholds on ``GRID`` (from floor + review band) meeting ``max_escape``, least overkill."""
    if not 0.0 <= max_escape < 1.0:
        raise InputError(f"--max-escape must be in [0, 1); got {max_escape}")
    if max_overkill is not None and not 0.0 <= max_overkill <= 1.0:
        raise InputError(f"--max-overkill must be in [0, 1]; got {max_overkill}")
    scores, defective = evaluation.unit_scores, evaluation.unit_defective
    if not defective.any():
        raise InputError(
            f"{evaluation.data} ({evaluation.split}) has no defective units; escapes cannot be measured"
        )
    lowest = lowest_threshold(policy or PolicyConfig())
    grid = GRID[lowest - 1e-9 <= GRID]
    n_cls = len(evaluation.classes)
    curve = []
    for g in GRID:
        rates = unit_rates_at(scores, defective, np.full(n_cls, g))
        curve.append({"threshold": float(g), "escape": rates.escape_rate, "overkill": rates.overkill_rate})
    feasible = [
        i
        for i, g in enumerate(grid)
        if (unit_rates_at(scores, defective, np.full(n_cls, g)).escape_rate or 0.0) <= max_escape
    ]
    # Without a feasible point: the lowest allowed thresholds, the fewest escapes we can get.
    index: npt.NDArray[np.int_] = np.zeros(n_cls, dtype=np.int_)
    if feasible:
        index = _raise_while_sparing(scores, defective, grid, np.full(n_cls, max(feasible)), max_escape)
    final = unit_rates_at(scores, defective, grid[index])
    escape_met = (final.escape_rate or 0.0) <= max_escape
    overkill_met = max_overkill is None or (final.overkill_rate or 0.0) <= max_overkill
    at_floor = unit_rates_at(scores, defective, np.full(n_cls, GRID[0])).escape_rate
    return Calibration(
        max_escape=max_escape,
        thresholds={name: float(grid[i]) for name, i in zip(evaluation.classes, index, strict=True)},
        escape_rate=final.escape_rate,
        overkill_rate=final.overkill_rate,
        met=escape_met and overkill_met,
        defective_units=final.defective,
        good_units=final.good,
        curve=curve,
        max_overkill=max_overkill,
        lowest=lowest,
        clipped=not escape_met and (at_floor or 0.0) < (final.escape_rate or 0.0),
        below_clip_escape=at_floor,
    )


def write_curve_png(calibration: Calibration, path: Path) -> Path:
    """Escape and overkill against a uniform threshold, with the target and the chosen point."""
    from lineguard.training.offline import set_offline_environment

    set_offline_environment()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [float(p["threshold"] or 0) for p in calibration.curve]
    esc = [100 * float(p["escape"] or 0) for p in calibration.curve]
    over = [None if p["overkill"] is None else 100 * float(p["overkill"]) for p in calibration.curve]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(t, esc, label="escape %")
    if calibration.good_units:
        left.plot(t, over, label="overkill %")
        right.plot(esc, over, marker=".")
        right.scatter(
            [100 * (calibration.escape_rate or 0)],
            [100 * (calibration.overkill_rate or 0)],
            color="red",
            zorder=3,
            label="per-class thresholds",
        )
    else:
        right.text(0.5, 0.5, "no good units: overkill not measurable", ha="center", transform=right.transAxes)
    left.axhline(100 * calibration.max_escape, color="red", linestyle="--", label="max escape")
    left.set_xlabel("confidence threshold (all classes)")
    left.set_ylabel("% of units")
    left.legend()
    right.axvline(100 * calibration.max_escape, color="red", linestyle="--")
    right.set_xlabel("escape %")
    right.set_ylabel("overkill %")
    right.set_title("trade-off")
    if calibration.good_units:
        right.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def calibrate_run(
    run: Path,
    *,
    max_escape: float = 0.005,
    data: Path | None = None,
    split: str = "val",
    evaluation: Evaluation | None = None,
    max_overkill: float | None = None,
    policy: PolicyConfig | None = None,
) -> Calibration:
    """Calibrate a run's best.pt on its dataset's ``split``; write calibration.{json,md,png} in ``run``."""
    record = load_run(run)
    dataset = data or Path(record["data"])
    if evaluation is None:
        evaluation = evaluate(run / "weights" / "best.pt", dataset, split=split, imgsz=record.get("imgsz"))
    calibration = calibrate(evaluation, max_escape, max_overkill=max_overkill, policy=policy)
    body = asdict(calibration) | {"split": split, "data": str(dataset), "model": evaluation.model}
    (run / CALIBRATION_FILE).write_text(json.dumps(body, indent=2) + "\n")
    (run / "calibration.md").write_text(
        f"# Threshold calibration (max escape {100 * max_escape:.2f}%, {split} split)\n\n"
        f"{calibration.verdict()}.\n\n{calibration.table()}\n"
    )
    write_curve_png(calibration, run / "calibration.png")
    return calibration
