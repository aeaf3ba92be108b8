"""Per-class threshold calibration: meet the escape ceiling, with less overkill than one threshold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from lineguard.config import PolicyConfig
from lineguard.errors import InputError
from lineguard.training.calibrate import calibrate, write_curve_png
from lineguard.training.evaluate import Evaluation

NO_BAND = PolicyConfig(review_band=0.0)  # every unit PASS or FAIL: the search's mechanics alone


def _evaluation(scores: npt.NDArray[np.float64], defective: npt.NDArray[np.bool_]) -> Evaluation:
    return Evaluation(
        model="m.onnx",
        data="d",
        split="val",
        classes=["scratch", "pit"],
        map50=0.0,
        map50_95=0.0,
        per_class={},
        confusion=[],
        thresholds={},
        units=len(scores),
        escape_rate=None,
        overkill_rate=None,
        unit_scores=scores,
        unit_defective=defective,
    )


def _line(seed: int = 0) -> Evaluation:
    """Defective units score high on their class; good units have spurious 'pit' scores up to 0.6."""
    rng = np.random.default_rng(seed)
    bad = np.zeros((100, 2))
    bad[:50, 0] = rng.uniform(0.5, 0.95, 50)  # scratches: confident
    bad[50:, 1] = rng.uniform(0.7, 0.95, 50)  # pits: confident
    good = np.zeros((200, 2))
    good[:, 0] = rng.uniform(0.0, 0.3, 200)
    good[:, 1] = rng.uniform(0.0, 0.6, 200)
    return _evaluation(np.vstack([bad, good]), np.r_[np.ones(100, bool), np.zeros(200, bool)])


def test_thresholds_meet_the_escape_ceiling_with_less_overkill_than_one_threshold() -> None:
    result = calibrate(_line(), max_escape=0.0, policy=NO_BAND)

    assert result.met
    assert result.escape_rate == 0.0
    uniform = [p for p in result.curve if p["escape"] == 0.0]
    best_uniform = min(float(p["overkill"] or 0) for p in uniform)
    assert best_uniform > 0.1  # one threshold must stay under 0.5 and so flags many good units
    assert result.overkill_rate is not None and result.overkill_rate < best_uniform / 2
    assert result.thresholds["pit"] > result.thresholds["scratch"]


def test_a_threshold_is_not_raised_when_that_spares_no_good_unit() -> None:
    """Raising 'scratch' to 0.8 would pass the check here and let a 0.7 scratch through on the line."""
    rng = np.random.default_rng(1)
    bad = np.zeros((40, 2))
    bad[:20, 0] = rng.uniform(0.8, 0.95, 20)  # scratches: very confident
    bad[20:, 1] = rng.uniform(0.5, 0.6, 20)  # pits: the weakest defects set the starting threshold
    good = np.zeros((60, 2))
    good[:, 1] = rng.uniform(0.0, 0.3, 60)  # no good unit ever looks scratched
    result = calibrate(
        _evaluation(np.vstack([bad, good]), np.r_[np.ones(40, bool), np.zeros(60, bool)]), 0.0, policy=NO_BAND
    )

    assert result.met and result.overkill_rate == 0.0
    assert result.thresholds["scratch"] == result.thresholds["pit"] <= 0.5


def test_unreachable_target_is_reported_not_hidden() -> None:
    scores = np.zeros((10, 2))  # the model sees nothing on defective units
    result = calibrate(_evaluation(scores, np.ones(10, bool)), max_escape=0.01)

    assert not result.met
    assert result.escape_rate == 1.0
    # the lowest thresholds whose review band the edge still sees: floor + band
    policy = PolicyConfig()
    assert set(result.thresholds.values()) == {round(policy.min_confidence + policy.review_band, 2)}
    assert result.verdict() == (
        "escape target 1.0%: NOT met; best achievable escape 100.0%, overkill n/a, NO_DECISION 0.0% on val"
    )


def test_defects_seen_only_in_the_review_band_are_no_decision_not_escapes() -> None:
    """Defects the model sees only at 0.08: under the lowest threshold, inside its band, as on the line."""
    scores = np.zeros((40, 2))
    scores[:20, 0] = 0.08  # defective units, weakly seen
    scores[20:, 1] = 0.02  # good units, under the edge's confidence floor
    defective = np.r_[np.ones(20, bool), np.zeros(20, bool)]
    result = calibrate(_evaluation(scores, defective), max_escape=0.05)

    assert min(result.thresholds.values()) >= 0.15  # floor + band: the band stays visible
    assert result.met and result.escape_rate == 0.0 and result.overkill_rate == 0.0
    assert result.no_decision_rate == 0.5  # every defective unit goes to a person
    assert "NO_DECISION 50.0% on val" in result.verdict()
    failing = calibrate(_evaluation(scores, defective), 0.05, policy=PolicyConfig(uncertain_action="fail"))
    assert failing.no_decision_rate == 0.0 and failing.escape_rate == 0.0


def test_the_search_counts_no_decision_as_work() -> None:
    """Good units just under a threshold would sit in its band: one step up frees them."""
    scores = np.zeros((40, 2))
    scores[:20, 0] = 0.9  # defective units, clearly seen
    scores[20:, 0] = 0.35  # good units with a faint spurious scratch
    defective = np.r_[np.ones(20, bool), np.zeros(20, bool)]

    banded = calibrate(_evaluation(scores, defective), max_escape=0.0)

    assert banded.met and banded.overkill_rate == 0.0 and banded.no_decision_rate == 0.0
    assert banded.thresholds["scratch"] > 0.45  # the band [t - 0.1, t) clears the 0.35 units


def test_a_met_target_says_what_it_costs_in_overkill() -> None:
    result = calibrate(_line(), max_escape=0.02, policy=NO_BAND)

    assert result.met
    assert result.verdict().startswith("escape target 2.0%: met (escape ")
    assert "overkill" in result.verdict()


def test_an_overkill_target_counts_in_the_verdict() -> None:
    scores = np.zeros((20, 2))
    scores[:10, 1] = 0.5  # defective units: pits at 0.5
    scores[10:, 1] = 0.6  # good units look more pitted than the defective ones
    result = calibrate(
        _evaluation(scores, np.r_[np.ones(10, bool), np.zeros(10, bool)]), 0.0, max_overkill=0.0
    )

    assert not result.met and result.escape_rate == 0.0 and result.overkill_rate == 1.0
    assert result.verdict().startswith("escape target 0.0%, overkill target 0.0%: NOT met")


def test_without_defective_units_escape_cannot_be_measured() -> None:
    with pytest.raises(InputError, match="no defective units"):
        calibrate(_evaluation(np.zeros((5, 2)), np.zeros(5, bool)), max_escape=0.01)


def test_trade_off_curve_and_table(tmp_path: Path) -> None:
    result = calibrate(_line(), max_escape=0.02, policy=NO_BAND)

    png = write_curve_png(result, tmp_path / "curve.png")
    assert png.stat().st_size > 5_000
    table = result.table()
    assert table.splitlines()[0] == "| threshold (all classes) | escape % | overkill % | NO_DECISION % |"
    assert "| per class: scratch" in table
