"""Choose per-class confidence thresholds that keep unit escapes under a target, with least overkill.

An escape (a defective unit shipped) costs far more than an overkill (a good unit scrapped or
re-inspected), so the quality engineer sets a ceiling on the escape rate and wants the fewest
false rejects under it. On the calibration split (``calib``: images neither trained on nor used to
pick the weights; ``val`` with a warning when a dataset has none) every unit has a top confidence
per class, and the station's verdict policy decides each unit as it will on the line: FAIL when
any class reaches its threshold, NO_DECISION (or FAIL, by ``uncertain_action``) when a class falls
in the review band just below it, else PASS. A NO_DECISION unit goes to a person: it is no escape,
but it is work, so the search counts good units FAILed and units left undecided alike as its cost.
Starting from the single threshold with the least cost that meets the ceiling (the lowest of equal
cost), thresholds are raised one grid step at a time, each time on the class whose step saves the
most of that cost while the escape rate stays under the ceiling, and only while a step saves some:
a higher threshold that saves nothing only lets more defects of that class through on the line.
The uniform-threshold sweep is kept as the trade-off curve (PNG + table), with escape, overkill
and NO_DECISION at each point.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from lineguard.config import PolicyConfig
from lineguard.datasets import CALIB_SPLIT, has_split
from lineguard.errors import DatasetError, InputError
from lineguard.inference import UnitRates, unit_rates_at
from lineguard.messages import Measured
from lineguard.training.evaluate import Evaluation, evaluate
from lineguard.training.train import load_run

__all__ = [
    "CALIBRATION_FILE",
    "Calibration",
    "calibrate",
    "calibrate_run",
    "calibration_split",
    "certification_figures",
    "lowest_threshold",
    "policy_rates",
    "station_rates",
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


def calibration_split(data: Path, split: str | None = None) -> tuple[str, str | None]:
    """The split to calibrate on (``split``, else calib, else val) and a warning when it is val.

    Val picked the weights during training, so thresholds tuned and measured there promise more
    than the line will see; saying so is the least a fallback owes the reader.
    """
    if split is not None:
        if not has_split(data, split):
            hint = "re-import the data with --calib-share" if split == CALIB_SPLIT else "pick another --split"
            raise DatasetError(f"{data} has no images in split {split!r}; {hint}")
        return split, None
    if has_split(data, CALIB_SPLIT):
        return CALIB_SPLIT, None
    if not has_split(data, "val"):
        raise DatasetError(f"{data} has neither a calib nor a val split; re-import it with --calib-share")
    return "val", (
        f"{data} has no calib split: thresholds tuned and measured on val, which training used to pick "
        "its weights, so the figures are optimistic; re-import the data with --calib-share"
    )


def policy_rates(
    scores: npt.NDArray[np.float64],
    defective: npt.NDArray[np.bool_],
    thresholds: npt.NDArray[np.float64],
    policy: PolicyConfig,
) -> UnitRates:
    """Escape, overkill and NO_DECISION as the station's ``VerdictPolicy`` would decide the units."""
    return unit_rates_at(
        scores,
        defective,
        thresholds,
        review_band=policy.review_band,
        uncertain_fails=policy.uncertain_action == "fail",
        min_confidence=policy.min_confidence,
    )


def station_rates(
    evaluation: Evaluation, thresholds: dict[str, float], policy: PolicyConfig | None = None
) -> UnitRates:
    """What ``thresholds`` do to the evaluation's units as a station's policy (by default the
    shipped one) decides them: review band included."""
    return policy_rates(
        evaluation.unit_scores,
        evaluation.unit_defective,
        evaluation.threshold_array(thresholds),
        policy or PolicyConfig(),
    )


def certification_figures(evaluation: Evaluation, thresholds: dict[str, float]) -> Measured:
    """What the certification rule compares (``certify_variant``): mAP50 and the units' escape
    and NO_DECISION rates as the shipped policy decides them."""
    units = station_rates(evaluation, thresholds)
    return Measured(evaluation.map50, units.escape_rate, units.no_decision_rate)


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
    no_decision_rate: float | None = None  # units the review band leaves to a person
    split: str = ""  # where the rates were measured
    review_band: float = 0.0

    def verdict(self) -> str:
        """One line: the target met or missed, with the escape, overkill and NO_DECISION achieved."""
        target = f"escape target {_pct(self.max_escape)}"
        if self.max_overkill is not None:
            target += f", overkill target {_pct(self.max_overkill)}"
        got = (
            f"escape {_pct(self.escape_rate)}, overkill {_pct(self.overkill_rate)}, "
            f"NO_DECISION {_pct(self.no_decision_rate)}"
        )
        if self.split:
            got += f" on {self.split}"
        if self.met:
            return f"{target}: met ({got})"
        return f"{target}: NOT met; best achievable {got}"

    def table(self, every: float = 0.05, extra: dict[str, UnitRates] | None = None) -> str:
        """Uniform thresholds at multiples of ``every``, the ``extra`` rows by name, the chosen ones."""

        def pct(v: float | None) -> str:
            return "n/a" if v is None else f"{100 * v:.2f}"

        rows = [
            "| threshold (all classes) | escape % | overkill % | NO_DECISION % |",
            "|---:|---:|---:|---:|",
        ]
        for point in self.curve:
            if round(float(point["threshold"] or 0) * 100) % round(every * 100) == 0:
                rows.append(
                    f"| {point['threshold']:.2f} | {pct(point['escape'])} | {pct(point['overkill'])} "
                    f"| {pct(point.get('no_decision'))} |"
                )
        for name, rates in (extra or {}).items():
            rows.append(
                f"| {name} | {pct(rates.escape_rate)} | {pct(rates.overkill_rate)} "
                f"| {pct(rates.no_decision_rate)} |"
            )
        chosen = ", ".join(f"{k} {v:.2f}" for k, v in self.thresholds.items())
        rows.append(
            f"| per class: {chosen} | {pct(self.escape_rate)} | {pct(self.overkill_rate)} "
            f"| {pct(self.no_decision_rate)} |"
        )
        return "\n".join(rows)


def _cost(rates: UnitRates) -> tuple[float, float]:
    """Good units FAILed plus units left undecided (both cost a person), per unit; then escape."""
    units = rates.defective + rates.good
    work = (rates.overkill_rate or 0.0) * rates.good + (rates.no_decision_rate or 0.0) * units
    return (work / units if units else 0.0, rates.escape_rate or 0.0)


def _raise_while_sparing(
    scores: npt.NDArray[np.float64],
    defective: npt.NDArray[np.bool_],
    grid: npt.NDArray[np.float64],
    index: npt.NDArray[np.int_],
    max_escape: float,
    policy: PolicyConfig,
) -> npt.NDArray[np.int_]:
    """Raise one class a grid step at a time while a step saves work under the ceiling."""
    while True:
        current = _cost(policy_rates(scores, defective, grid[index], policy))
        best: tuple[tuple[float, float], int] | None = None
        for c in range(len(index)):
            if index[c] + 1 >= len(grid):
                continue
            trial = index.copy()
            trial[c] += 1
            rates = policy_rates(scores, defective, grid[trial], policy)
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
    policy = policy or PolicyConfig()
    lowest = lowest_threshold(policy)
    grid = GRID[lowest - 1e-9 <= GRID]
    n_cls = len(evaluation.classes)
    curve: list[dict[str, float | None]] = []
    for g in GRID:
        rates = policy_rates(scores, defective, np.full(n_cls, g), policy)
        curve.append(
            {
                "threshold": float(g),
                "escape": rates.escape_rate,
                "overkill": rates.overkill_rate,
                "no_decision": rates.no_decision_rate,
            }
        )
    uniform = [policy_rates(scores, defective, np.full(n_cls, g), policy) for g in grid]
    feasible = [i for i, rates in enumerate(uniform) if (rates.escape_rate or 0.0) <= max_escape]
    # Without a feasible point: the lowest allowed thresholds, the fewest escapes we can get.
    index: npt.NDArray[np.int_] = np.zeros(n_cls, dtype=np.int_)
    if feasible:
        # The least work; of equal work the lowest threshold, whose margin keeps escapes rare on
        # the line (a high one can look as good here only by sending every defect to the band).
        best = min(feasible, key=lambda i: (_cost(uniform[i])[0], i))
        start = np.full(n_cls, best)
        index = _raise_while_sparing(scores, defective, grid, start, max_escape, policy)
    final = policy_rates(scores, defective, grid[index], policy)
    escape_met = (final.escape_rate or 0.0) <= max_escape
    overkill_met = max_overkill is None or (final.overkill_rate or 0.0) <= max_overkill
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
        no_decision_rate=final.no_decision_rate,
        split=evaluation.split,
        review_band=policy.review_band,
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
    split: str | None = None,
    evaluation: Evaluation | None = None,
    max_overkill: float | None = None,
    policy: PolicyConfig | None = None,
    warn: Callable[[str], None] | None = None,
) -> Calibration:
    """Calibrate a run's best.pt on its dataset's calib split (else val, with a warning to ``warn``).

    Writes calibration.{json,md,png} in ``run``; the split it used is in each.
    """
    record = load_run(run)
    dataset = data or Path(record["data"])
    if evaluation is None:
        split, warning = calibration_split(dataset, split)
        if warning and warn is not None:
            warn(f"warning: {warning}")
        evaluation = evaluate(run / "weights" / "best.pt", dataset, split=split, imgsz=record.get("imgsz"))
    calibration = calibrate(evaluation, max_escape, max_overkill=max_overkill, policy=policy)
    body = asdict(calibration) | {"data": str(dataset), "model": evaluation.model}
    (run / CALIBRATION_FILE).write_text(json.dumps(body, indent=2) + "\n")
    (run / "calibration.md").write_text(
        f"# Threshold calibration (max escape {100 * max_escape:.2f}%, {calibration.split} split, "
        f"review band {calibration.review_band:g})\n\n{calibration.verdict()}.\n\n{calibration.table()}\n"
    )
    write_curve_png(calibration, run / "calibration.png")
    return calibration
