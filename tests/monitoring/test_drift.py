"""Drift detection: the statistics, the hysteresis, and alarms on the synthetic line.

The line tests stream real rendered frames (measured by the edge's QualityGate) through
``DriftMonitor``; the model-derived signals come from the documented ``SimulatedDetector`` noise
model in ``lineguard.benchmarks.drift_detection`` (no trained model exists offline).
"""

from __future__ import annotations

import json

import numpy as np
import numpy.typing as npt
import pytest

from lineguard.benchmarks.drift_detection import (
    SHIFTS,
    line_stream,
    nominal_run,
    reference_from_observations,
    run_shift,
)
from lineguard.config import MonitoringConfig, QualityConfig
from lineguard.errors import ConfigError, InputError
from lineguard.inference import QualityGate
from lineguard.messages import ReferenceSource, ReferenceStats
from lineguard.monitoring import (
    Alert,
    DriftEvent,
    DriftMonitor,
    Metrics,
    next_level,
    psi,
    quantile_edges,
    two_proportion_z,
)
from lineguard.synthetic import Condition, render_unit

# -- statistics -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "cur", "low", "high"),
    [
        ([0, 0], [0, 0], 0.0, 0.0),  # empty histograms: no evidence of a shift
        ([10, 10, 10], [20, 20, 20], 0.0, 1e-12),  # same shape, other size
        ([50, 50], [60, 40], 0.01, 0.05),
        ([100, 0], [0, 100], 5.0, 20.0),  # disjoint
    ],
)
def test_psi_grows_with_the_shift_between_histograms(
    ref: list[int], cur: list[int], low: float, high: float
) -> None:
    assert low <= psi(ref, cur) <= high


def test_psi_of_histograms_with_different_bins_is_refused() -> None:
    with pytest.raises(InputError, match="equal length"):
        psi([1, 2, 3], [1, 2])


def test_quantile_edges_merge_a_point_mass() -> None:
    samples = [0.0] * 60 + list(np.linspace(0.5, 1.0, 40))
    edges = quantile_edges(samples, 10)
    assert edges[0] == 0.0
    assert list(edges) == sorted(set(edges.tolist()))
    assert len(edges) < 9


@pytest.mark.parametrize(
    ("p_ref", "n_ref", "successes", "n", "low", "high"),
    [
        (0.2, 300, 0, 0, 0.0, 0.0),  # empty window
        (0.2, 300, 40, 200, 0.0, 1e-9),  # same rate
        (0.2, 0, 60, 200, 3.5, 3.6),  # exact reference: (0.3-0.2)/sqrt(.2*.8/200) = 3.54
        (0.2, 300, 100, 200, 6.0, 8.0),
        (0.0, 300, 30, 200, 3.0, 99.0),  # a rate never seen in the reference
    ],
)
def test_two_proportion_z(p_ref: float, n_ref: int, successes: int, n: int, low: float, high: float) -> None:
    assert low <= two_proportion_z(p_ref, n_ref, successes, n) <= high


@pytest.mark.parametrize(
    ("level", "score", "expected"),
    [
        ("ok", 0.0, "ok"),
        ("ok", 0.12, "warning"),
        ("ok", 0.3, "alarm"),
        ("warning", 0.09, "warning"),  # above 0.8 x warning: held
        ("warning", 0.07, "ok"),
        ("warning", 0.26, "alarm"),
        ("alarm", 0.2, "alarm"),  # below alarm but above warning: held
        ("alarm", 0.099, "ok"),
    ],
)
def test_levels_have_hysteresis(level: str, score: float, expected: str) -> None:
    assert next_level(level, score, warning=0.1, alarm=0.25, clear_ratio=0.8) == expected


# -- the monitor on controlled numbers ----------------------------------------------------------


def _reference(rng: np.random.Generator, n: int = 500) -> ReferenceStats:
    return ReferenceStats(
        brightness=rng.normal(130, 5, n).tolist(),
        contrast=rng.normal(40, 3, n).tolist(),
        sharpness=rng.lognormal(5, 0.2, n).tolist(),
        top_confidence=rng.beta(2, 5, n).tolist(),
        class_rates={"scratch": 0.2, "pit": 0.1},
        fail_rate=0.25,
        no_decision_rate=0.05,
    )


def _feed(monitor: DriftMonitor, rng: np.random.Generator, units: int, brightness: float) -> list[str]:
    seen: list[str] = []
    for _ in range(units):
        events = monitor.observe(
            brightness=float(rng.normal(brightness, 5)),
            contrast=float(rng.normal(40, 3)),
            sharpness=float(rng.lognormal(5, 0.2)),
            top_confidence=float(rng.beta(2, 5)),
            classes=tuple(c for c, rate in (("scratch", 0.2), ("pit", 0.1)) if rng.uniform() < rate),
            verdict=str(rng.choice(["FAIL", "NO_DECISION", "PASS"], p=[0.25, 0.05, 0.7])),
        )
        seen.extend(f"{e.signal}:{e.level}" for e in events)
    return seen


def test_alarm_is_raised_once_held_and_cleared_with_gauges_following() -> None:
    rng = np.random.default_rng(3)
    metrics = Metrics()
    cfg = MonitoringConfig()  # window 200, scored every 20 units
    monitor = DriftMonitor(_reference(rng), cfg, metrics)

    def gauge(name: str) -> float | None:
        return metrics.registry.get_sample_value(name, {"signal": "brightness"})

    assert gauge("lineguard_drift_alarm") == 0
    assert _feed(monitor, rng, 400, 130.0) == []
    shifted = _feed(monitor, rng, 400, 150.0)
    assert shifted.count("brightness:alarm") == 1  # one event on entering, none while held
    assert gauge("lineguard_drift_alarm") == 2
    assert (gauge("lineguard_drift_score") or 0) > cfg.psi_alarm
    assert monitor.alarmed == ["brightness"]
    back = _feed(monitor, rng, 400, 130.0)
    assert back.count("brightness:ok") == 1
    assert "brightness:alarm" not in back
    assert gauge("lineguard_drift_alarm") == 0


def test_drift_event_becomes_an_alert_naming_signal_window_and_shift() -> None:
    rng = np.random.default_rng(4)
    monitor = DriftMonitor(_reference(rng), MonitoringConfig(), Metrics())
    _feed(monitor, rng, 200, 130.0)
    events = []
    for _ in range(200):
        events += monitor.observe(
            brightness=160.0, contrast=40.0, sharpness=150.0, top_confidence=0.3, classes=(), verdict="PASS"
        )
    alarm = next(e for e in events if e.signal == "brightness" and e.level == "alarm")
    payload = alarm.to_alert(line="l1", station="s1")
    parsed = Alert.model_validate_json(json.dumps(payload))
    assert parsed.kind == "drift" and parsed.level == "alarm" and parsed.signal == "brightness"
    assert payload["schema"] == "lineguard.alert/1"
    assert payload["details"]["window"] == 200
    assert payload["details"]["reference_value"] == pytest.approx(130, abs=1)
    assert payload["details"]["current_value"] > payload["details"]["reference_value"] + 3  # window mean
    assert "brightness" in alarm.message and "200 units" in alarm.message


def test_signals_without_reference_data_are_not_monitored() -> None:
    ref = ReferenceStats(brightness=[float(v) for v in range(100)], contrast=[1.0, 2.0], fail_rate=0.1)
    metrics = Metrics()
    monitor = DriftMonitor(ref, MonitoringConfig(), metrics)
    assert monitor.signals == ["brightness", "fail_rate"]
    assert metrics.registry.get_sample_value("lineguard_drift_score", {"signal": "contrast"}) is None


def test_units_without_model_output_leave_model_signals_alone() -> None:
    rng = np.random.default_rng(5)
    monitor = DriftMonitor(_reference(rng), MonitoringConfig(drift_window=50, drift_every=10), Metrics())
    for _ in range(200):
        monitor.observe(
            brightness=130.0,
            contrast=40.0,
            sharpness=150.0,
            top_confidence=None,
            classes=(),
            verdict="NO_DECISION",
        )
    assert monitor.scores["top_confidence"] == 0.0
    assert monitor.scores["class:scratch"] == 0.0
    assert monitor.levels["no_decision_rate"] == "alarm"


def test_alarm_levels_below_warning_levels_are_refused() -> None:
    with pytest.raises(ConfigError, match="alarm levels must exceed"):
        DriftMonitor(ReferenceStats(), MonitoringConfig(psi_warning=0.3, psi_alarm=0.2), Metrics())


def test_unknown_verdict_is_refused() -> None:
    monitor = DriftMonitor(ReferenceStats(), MonitoringConfig(), Metrics())
    with pytest.raises(InputError, match="unknown verdict 'OK'"):
        monitor.observe(brightness=1, contrast=1, sharpness=1, top_confidence=0.5, classes=(), verdict="OK")


# -- the synthetic line -------------------------------------------------------------------------

# Units after the shift began within which the named signal must reach alarm (window 200, scored
# every 20 units; measured delays: dark 40, bright 60, blur 60, new_defect 120).
MAX_DELAY = {"dark": 100, "bright": 100, "blur": 100, "new_defect": 200}


@pytest.fixture(scope="module")
def reference() -> ReferenceStats:
    """300 nominal units of seed 1 at 96 px, as training would export them."""
    return reference_from_observations(list(line_stream(1, 0, 300)))


@pytest.mark.parametrize("condition", list(SHIFTS))
def test_shift_on_the_synthetic_line_raises_the_named_alarm(
    reference: ReferenceStats, condition: str
) -> None:
    result = run_shift(reference, condition, warmup=200, shifted=MAX_DELAY[condition])
    assert result.alarms_before_shift == 0
    assert result.delay is not None, f"{condition}: no alarm on {result.signal}; got {result.first_alarms}"
    assert result.delay <= MAX_DELAY[condition]
    if condition == "blur":
        assert "brightness" not in result.first_alarms  # a dirty lens does not change the lamp
    if condition == "new_defect":  # a new defect look is not an image change
        assert not {"brightness", "contrast", "sharpness"} & set(result.first_alarms)


@pytest.mark.slow
def test_five_thousand_nominal_units_raise_no_alarm(reference: ReferenceStats) -> None:
    events = nominal_run(reference, 5000)
    assert [e.message for e in events if e.level == "alarm"] == []


# -- replaying the reference itself -------------------------------------------------------------

Rows = npt.NDArray[np.float64]  # one row per unit: brightness, contrast, sharpness


def _measure(units: list[tuple[int, Condition]], imgsz: int = 96) -> Rows:
    """(brightness, contrast, sharpness) rows of rendered units, as the edge's gate measures them."""
    gate = QualityGate(QualityConfig(), frozen_frames=1 << 30)
    rows = []
    for index, condition in units:
        report = gate.check(render_unit(4, index, imgsz=imgsz, condition=condition).image)
        rows.append((report.brightness, report.contrast, report.sharpness))
    return np.asarray(rows)


@pytest.fixture(scope="module")
def sorted_split() -> Rows:
    """A validation split in file order: three batches under three lamps, 120 units each (as a folder
    sorted by class or by capture time is), measured on real rendered frames."""
    lamps = (0.8, 1.0, 1.2)
    return _measure([(b * 120 + i, Condition(brightness=g)) for b, g in enumerate(lamps) for i in range(120)])


def _replay(reference: ReferenceStats, rows: Rows) -> list[DriftEvent]:
    monitor = DriftMonitor(reference, MonitoringConfig(), Metrics())  # window 200, every 20 units
    events: list[DriftEvent] = []
    for brightness, contrast, sharpness in rows:
        events += monitor.observe(
            brightness=float(brightness),
            contrast=float(contrast),
            sharpness=float(sharpness),
            top_confidence=None,
            classes=(),
            verdict="PASS",
        )
    return events


def _reference_of(rows: Rows) -> ReferenceStats:
    return ReferenceStats(
        brightness=rows[:, 0].tolist(),
        contrast=rows[:, 1].tolist(),
        sharpness=rows[:, 2].tolist(),
        source=ReferenceSource(split="val", frames=len(rows), of=len(rows)),
    )


def test_replaying_the_reference_in_file_order_raises_no_alarm(sorted_split: Rows) -> None:
    reference = _reference_of(sorted_split)
    looped = np.vstack([sorted_split, sorted_split])  # and round again, as a folder camera on loop
    assert [e.message for e in _replay(reference, looped)] == []
    # the batches differ: a window of one of them is far from the whole, so the levels rose
    raised = DriftMonitor(reference, MonitoringConfig(), Metrics()).raised_levels
    assert "brightness" in raised and raised["brightness"][0] > MonitoringConfig().psi_warning


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_replaying_the_reference_shuffled_raises_no_alarm(sorted_split: Rows, seed: int) -> None:
    shuffled = sorted_split[np.random.default_rng(seed).permutation(len(sorted_split))]
    assert [e.message for e in _replay(_reference_of(sorted_split), shuffled)] == []


@pytest.mark.parametrize(
    ("condition", "signal"),
    [
        pytest.param(Condition(offset=40.0), "brightness", id="brightness+40"),
        pytest.param(Condition(blur_sigma=2.5), "sharpness", id="blurred-lens"),
    ],
)
def test_a_real_shift_after_the_reference_still_alarms(
    sorted_split: Rows, condition: Condition, signal: str
) -> None:
    shifted = _measure([(1000 + i, condition) for i in range(200)])
    events = _replay(_reference_of(sorted_split), np.vstack([sorted_split, shifted]))
    alarms = [e for e in events if e.level == "alarm" and e.signal == signal]
    assert alarms, [e.message for e in events]
    assert alarms[0].unit - len(sorted_split) <= 200  # within one window of the shift


def test_drift_alerts_say_what_the_reference_was_built_from() -> None:
    rng = np.random.default_rng(6)
    sourced = _reference(rng).model_copy(
        update={"source": ReferenceSource(dataset_hash="ab" * 32, split="val", frames=500, of=1800)}
    )
    for reference, expected in (
        (sourced, "500 of 1800 'val' frames of abababababab"),
        (_reference(rng), "not recorded"),
    ):
        monitor = DriftMonitor(reference, MonitoringConfig(), Metrics())
        _feed(monitor, rng, 200, 130.0)
        events = [
            e
            for _ in range(200)
            for e in monitor.observe(
                brightness=170.0,
                contrast=40.0,
                sharpness=150.0,
                top_confidence=0.3,
                classes=(),
                verdict="PASS",
            )
        ]
        alarm = next(e for e in events if e.signal == "brightness" and e.level == "alarm")
        assert expected in alarm.to_alert()["details"]["reference"]
