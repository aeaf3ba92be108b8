"""Drift detection on the synthetic line: detection delay per shift and false alarms on a long nominal run.

Run ``python -m lineguard.benchmarks.drift_detection`` to print, for each shift (a darker and a
brighter lamp, a blurred lens, a new defect appearance), how many units after the shift began
the named signal reached ``alarm``, and how many warnings and alarms 5,000 nominal units raised.
The same harness backs ``tests/monitoring/test_drift.py``.

Image signals come from real rendered frames measured by the edge's own ``QualityGate``. The
model signals (top confidence, per-class detections, FAIL / NO_DECISION) come from a simulated
detector driven by the ground truth, because no trained model exists offline in a test and a
random-weight one reacts to nothing. The noise model (``SimulatedDetector``) stands in for a
model trained on nominal parts: it finds a nominal-looking defect with confidence
~ Beta(9, 2) (mean 0.82), a defect with the new supplier's look with ~ Beta(2, 4) (mean 0.33, the
model has never seen it), and on every unit its best background box has ~ Beta(1.2, 14) (mean 0.08).
A class counts as detected at confidence >= 0.5; the verdict is FAIL at >= 0.5, NO_DECISION when
the top confidence lies in the 0.1 review band below it, else PASS — as the edge policy does.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from lineguard.config import MonitoringConfig, QualityConfig
from lineguard.inference import QualityGate
from lineguard.messages import ReferenceStats
from lineguard.monitoring import DriftEvent, DriftMonitor, Metrics
from lineguard.provenance import ALLOW_DIRTY_HELP, provenance, provenance_markdown
from lineguard.synthetic import CLASSES, CONDITIONS, SyntheticUnit, render_unit

__all__ = [
    "SHIFTS",
    "Observation",
    "ShiftResult",
    "SimulatedDetector",
    "line_stream",
    "nominal_run",
    "reference_from_observations",
    "run_shift",
]

THRESHOLD = 0.5
REVIEW_BAND = 0.1
# shift condition -> the signal that must reach alarm
SHIFTS: dict[str, str] = {
    "dark": "brightness",
    "bright": "brightness",
    "blur": "sharpness",
    "new_defect": "top_confidence",
}


@dataclass(frozen=True)
class Observation:
    """What the edge would hand ``DriftMonitor.observe`` for one unit."""

    brightness: float
    contrast: float
    sharpness: float
    top_confidence: float
    classes: tuple[str, ...]
    verdict: str

    def feed(self, monitor: DriftMonitor) -> list[DriftEvent]:
        return monitor.observe(
            brightness=self.brightness,
            contrast=self.contrast,
            sharpness=self.sharpness,
            top_confidence=self.top_confidence,
            classes=self.classes,
            verdict=self.verdict,
        )


class SimulatedDetector:
    """The documented noise model of a detector trained on nominal parts (see the module docstring)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __call__(self, unit: SyntheticUnit, new_look: bool) -> tuple[float, tuple[str, ...], str]:
        rng = np.random.default_rng([self.seed, unit.index, 99])
        top = float(rng.beta(1.2, 14.0))
        found: set[str] = set()
        for cls, *_ in unit.labels:
            conf = float(rng.beta(2.0, 4.0) if new_look else rng.beta(9.0, 2.0))
            top = max(top, conf)
            if conf >= THRESHOLD:
                found.add(CLASSES[cls])
        if found:
            verdict = "FAIL"
        elif top >= THRESHOLD - REVIEW_BAND:
            verdict = "NO_DECISION"
        else:
            verdict = "PASS"
        return top, tuple(sorted(found)), verdict


def line_stream(
    seed: int, start: int, count: int, *, condition: str = "nominal", imgsz: int = 96
) -> Iterator[Observation]:
    """Render ``count`` units of the line and measure each as the edge would."""
    cond = CONDITIONS[condition]
    gate = QualityGate(QualityConfig(), frozen_frames=1000)
    model = SimulatedDetector(seed)
    for index in range(start, start + count):
        unit = render_unit(seed, index, imgsz=imgsz, condition=cond)
        report = gate.check(unit.image)
        top, classes, verdict = model(unit, cond.new_defect_look)
        yield Observation(report.brightness, report.contrast, report.sharpness, top, classes, verdict)


def reference_from_observations(observations: list[Observation]) -> ReferenceStats:
    """Reference statistics as training must compute them on nominal validation units."""
    n = len(observations)
    return ReferenceStats(
        brightness=[o.brightness for o in observations],
        contrast=[o.contrast for o in observations],
        sharpness=[o.sharpness for o in observations],
        top_confidence=[o.top_confidence for o in observations],
        class_rates={c: sum(c in o.classes for o in observations) / n for c in CLASSES},
        fail_rate=sum(o.verdict == "FAIL" for o in observations) / n,
        no_decision_rate=sum(o.verdict == "NO_DECISION" for o in observations) / n,
    )


@dataclass
class ShiftResult:
    condition: str
    signal: str
    delay: int | None  # units after the shift began until ``signal`` reached alarm; None = never
    first_alarms: dict[str, int] = field(default_factory=dict)  # signal -> delay of its first alarm
    alarms_before_shift: int = 0


def _feed(monitor: DriftMonitor, observations: Iterator[Observation]) -> Iterator[list[DriftEvent]]:
    for obs in observations:
        yield obs.feed(monitor)


def run_shift(
    reference: ReferenceStats,
    condition: str,
    *,
    cfg: MonitoringConfig | None = None,
    seed: int = 11,
    warmup: int = 200,
    shifted: int = 300,
    imgsz: int = 96,
) -> ShiftResult:
    """``warmup`` nominal units, then ``shifted`` units under ``condition``; when did alarms come?"""
    cfg = cfg or MonitoringConfig()
    monitor = DriftMonitor(reference, cfg, Metrics())
    result = ShiftResult(condition=condition, signal=SHIFTS[condition], delay=None)
    for events in _feed(monitor, line_stream(seed, 0, warmup, imgsz=imgsz)):
        result.alarms_before_shift += sum(e.level == "alarm" for e in events)
    stream = line_stream(seed, warmup, shifted, condition=condition, imgsz=imgsz)
    for after, events in enumerate(_feed(monitor, stream), start=1):
        for e in events:
            if e.level == "alarm":
                result.first_alarms.setdefault(e.signal, after)
    result.delay = result.first_alarms.get(result.signal)
    return result


def nominal_run(
    reference: ReferenceStats,
    units: int,
    *,
    cfg: MonitoringConfig | None = None,
    seed: int = 23,
    imgsz: int = 96,
) -> list[DriftEvent]:
    """Every level change ``units`` nominal units raise (the false alarms and warnings)."""
    monitor = DriftMonitor(reference, cfg or MonitoringConfig(), Metrics())
    return [e for events in _feed(monitor, line_stream(seed, 0, units, imgsz=imgsz)) for e in events]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-units", type=int, default=300)
    parser.add_argument("--nominal-units", type=int, default=5000)
    parser.add_argument("--imgsz", type=int, default=96)
    parser.add_argument("--allow-dirty", action="store_true", help=ALLOW_DIRTY_HELP)
    args = parser.parse_args()
    print("\n".join(provenance_markdown(provenance(allow_dirty=args.allow_dirty))))
    cfg = MonitoringConfig()
    print(
        f"window {cfg.drift_window} units, scored every {cfg.drift_every}; PSI {cfg.psi_warning}/"
        f"{cfg.psi_alarm}, rate |z| {cfg.rate_z_warning}/{cfg.rate_z_alarm}; frames {args.imgsz} px"
    )
    reference = reference_from_observations(list(line_stream(1, 0, args.reference_units, imgsz=args.imgsz)))
    print(f"reference: {args.reference_units} nominal units (seed 1)")
    for condition, signal in SHIFTS.items():
        r = run_shift(reference, condition, imgsz=args.imgsz)
        others = ", ".join(f"{s}@{d}" for s, d in sorted(r.first_alarms.items(), key=lambda kv: kv[1]))
        print(
            f"shift {condition:<11} expect {signal:<15} delay {r.delay} units; "
            f"alarms before shift {r.alarms_before_shift}; all alarms (signal@units): {others}"
        )
    t0 = time.perf_counter()
    events = nominal_run(reference, args.nominal_units, imgsz=args.imgsz)
    wall = time.perf_counter() - t0
    alarms = [e for e in events if e.level == "alarm"]
    warnings = [e for e in events if e.level == "warning"]
    print(
        f"nominal {args.nominal_units} units: {len(alarms)} alarms, {len(warnings)} warnings "
        f"({', '.join(sorted({e.signal for e in warnings})) or 'none'}); {wall:.1f} s with rendering"
    )
    monitor = DriftMonitor(reference, cfg, Metrics())
    obs = list(line_stream(5, 0, 1000, imgsz=args.imgsz))
    t0 = time.perf_counter()
    for o in obs * 10:
        o.feed(monitor)
    per_unit = (time.perf_counter() - t0) / len(obs * 10) * 1e6
    print(f"DriftMonitor.observe: {per_unit:.1f} us per unit (amortised, scoring included)")


if __name__ == "__main__":
    main()
