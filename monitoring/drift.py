"""Drift detection at the edge: compare a sliding window of recent units with the model card's reference.

A changed lamp, a dirty lens or a new supplier's parts change what the camera sees long before
anyone counts escapes. ``DriftMonitor`` keeps the last ``drift_window`` units of each signal in a
ring buffer (one store per unit) and, every ``drift_every`` units, scores the window against the
reference statistics exported in the model card:

* image signals (``brightness``, ``contrast``, ``sharpness``) and ``top_confidence``: the
  Population Stability Index over bins cut at the reference's quantiles (so each bin holds about
  the same share of reference units, and any monotone change of scale gives the same score),
  less its expectation under no drift, ``(bins - 1) × (1/window + 1/reference units)`` (a
  200-unit window of an unchanged line against 300 reference units scores about 0.05–0.07 raw PSI
  from sampling noise alone; without this, warnings at 0.1 flap);
* rate signals (``class:<name>`` = share of units in which the model reported that class,
  ``fail_rate``, ``no_decision_rate``): a two-proportion |z| against the reference rate, whose
  sample size is the number of reference units (the longest reference sample list).

A reference is a sample in the order its frames were stored (a validation split in file order,
which on a real line is often capture order or sorted by defect class), and a window of it need
not look like the whole: 200 frames of one class or one shift do not. Drift is a departure from
the reference, so the reference replayed in its own order must not alarm. For each distribution
signal the monitor slides the window over the reference in that order (looping from its end to
its start, as a replay on repeat does) and takes the highest score any stretch reaches
(``self_score``); when ``SELF_MARGIN`` × that exceeds the
warning level, the warning level is raised to it and the alarm level by the same amount, so the
gap a real shift must cross stays as configured. A reference no longer than the window has no
such stretch and keeps the configured levels. Rate signals keep them too: the card holds their
rates, not a per-unit order.

Each signal has a warning and an alarm level with hysteresis: it enters ``alarm`` at the alarm
level and leaves it only when the score falls below the warning level; a ``warning`` clears only
below ``drift_clear_ratio`` × the warning level. A ``DriftEvent`` is returned on level changes
only, and ``lineguard_drift_score{signal}`` / ``lineguard_drift_alarm{signal}`` follow every
score. Numpy only: this runs inside the edge daemon.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from lineguard.config import MonitoringConfig
from lineguard.errors import ConfigError, InputError
from lineguard.messages import Alert, ReferenceStats
from lineguard.monitoring.metrics import Metrics

__all__ = [
    "IMAGE_SIGNALS",
    "LEVEL_VALUES",
    "MIN_REFERENCE_SAMPLES",
    "SELF_MARGIN",
    "DriftEvent",
    "DriftLevel",
    "DriftMonitor",
    "next_level",
    "psi",
    "quantile_edges",
    "two_proportion_z",
]

DriftLevel = Literal["ok", "warning", "alarm"]
LEVEL_VALUES: dict[str, int] = {"ok": 0, "warning": 1, "alarm": 2}
IMAGE_SIGNALS = ("brightness", "contrast", "sharpness")
# A reference sample list shorter than this cannot place decile bins; the signal is left out.
MIN_REFERENCE_SAMPLES = 30
# Levels sit at least this many times above the highest score a stretch of the reference reaches.
SELF_MARGIN = 1.5
_VERDICTS = frozenset({"PASS", "FAIL", "NO_DECISION"})
_Z_CAP = 99.0

FloatArray = npt.NDArray[np.float64]


def quantile_edges(samples: Sequence[float], bins: int) -> FloatArray:
    """Interior bin edges at the reference's quantiles, duplicates merged (point masses, e.g. 0.0)."""
    arr = np.asarray(samples, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    qs = np.quantile(arr, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    edges: FloatArray = np.unique(qs).astype(np.float64)
    return edges


def psi(reference_counts: npt.ArrayLike, current_counts: npt.ArrayLike) -> float:
    """Population Stability Index of two histograms over the same bins (0.5 added to every bin)."""
    ref = np.asarray(reference_counts, dtype=np.float64) + 0.5
    cur = np.asarray(current_counts, dtype=np.float64) + 0.5
    if ref.shape != cur.shape or ref.ndim != 1:
        raise InputError(f"psi needs two 1-d histograms of equal length; got {ref.shape} and {cur.shape}")
    p, q = ref / ref.sum(), cur / cur.sum()
    return float(np.sum((q - p) * np.log(q / p)))


def two_proportion_z(p_ref: float, n_ref: int, successes: int, n: int) -> float:
    """|z| of a window rate against a reference rate; ``n_ref == 0`` treats the reference as exact."""
    if n <= 0:
        return 0.0
    q = successes / n
    if n_ref > 0:
        pooled = (p_ref * n_ref + successes) / (n_ref + n)
        var_scale = 1.0 / n + 1.0 / n_ref
        floor = 0.5 / (n_ref + n)
    else:
        pooled, var_scale, floor = p_ref, 1.0 / n, 0.5 / n
    pooled = min(max(pooled, floor), 1.0 - floor)
    se = math.sqrt(pooled * (1.0 - pooled) * var_scale)
    return min(abs(q - p_ref) / se, _Z_CAP)


def next_level(level: str, score: float, warning: float, alarm: float, clear_ratio: float) -> DriftLevel:
    """The hysteresis rule: alarm at ``alarm``, held until below ``warning``; warnings clear lower."""
    if score >= alarm:
        return "alarm"
    if level == "alarm":
        return "alarm" if score >= warning else "ok"
    if level == "warning":
        return "warning" if score >= warning * clear_ratio else "ok"
    return "warning" if score >= warning else "ok"


@dataclass(frozen=True)
class DriftEvent:
    """A signal changed level; ``window`` units were compared with the reference."""

    signal: str
    level: DriftLevel
    previous: DriftLevel
    statistic: Literal["psi", "z"]
    score: float
    window: int
    reference_value: float
    current_value: float
    unit: int
    message: str
    reference: str = ""  # what the reference was built from, in words

    def to_alert(self, *, line: str = "", station: str = "") -> dict[str, Any]:
        """The ``lineguard.alert/1`` payload for ``…/alert`` (JSON-ready dict)."""
        alert = Alert(
            kind="drift",
            level=self.level,
            signal=self.signal,
            message=self.message,
            line=line,
            station=station,
            details={
                "previous": self.previous,
                "statistic": self.statistic,
                "score": round(self.score, 4),
                "window": self.window,
                "reference_value": self.reference_value,
                "current_value": self.current_value,
                "unit": self.unit,
                "reference": self.reference,
            },
        )
        data: dict[str, Any] = alert.model_dump(mode="json", by_alias=True)
        return data


class _Signal:
    """One monitored quantity: a ring buffer of the last ``window`` values and its level."""

    statistic: Literal["psi", "z"] = "psi"

    def __init__(self, name: str, window: int, warning: float, alarm: float) -> None:
        self.name = name
        self.window = window
        self.warning = warning
        self.alarm = alarm
        self.values = np.zeros(window, dtype=np.float64)
        self.n = 0
        self.pos = 0
        self.level: DriftLevel = "ok"
        self.score = 0.0

    def add(self, value: float) -> None:
        self.values[self.pos] = value
        self.pos = (self.pos + 1) % self.window
        if self.n < self.window:
            self.n += 1

    @property
    def full(self) -> bool:
        return self.n == self.window

    def compute(self) -> float:
        raise NotImplementedError

    def reference_value(self) -> float:
        raise NotImplementedError

    def current_value(self) -> float:
        return float(self.values[: self.n].mean()) if self.n else float("nan")


class _DistributionSignal(_Signal):
    """PSI of the window's histogram over reference-quantile bins."""

    def __init__(
        self, name: str, reference: Sequence[float], window: int, bins: int, warning: float, alarm: float
    ) -> None:
        super().__init__(name, window, warning, alarm)
        ref = np.asarray(reference, dtype=np.float64)
        ref = ref[np.isfinite(ref)]
        self.edges = quantile_edges(ref, bins)
        self.ref_counts = self._histogram(ref)
        self.ref_mean = float(ref.mean())
        self.n_ref = len(ref)
        self.self_score = self._self_score(ref)
        raised = SELF_MARGIN * self.self_score - warning
        if raised > 0:
            self.warning, self.alarm = warning + raised, alarm + raised

    def _histogram(self, values: FloatArray) -> npt.NDArray[np.int64]:
        idx = np.searchsorted(self.edges, values, side="right")
        return np.bincount(idx, minlength=len(self.edges) + 1).astype(np.int64)

    def _score(self, window_counts: npt.NDArray[np.int64], n: int) -> float:
        raw = psi(self.ref_counts, window_counts)
        return max(0.0, raw - (len(self.ref_counts) - 1) * (1.0 / n + 1.0 / self.n_ref))

    def _self_score(self, ref: FloatArray) -> float:
        """Highest score of any window-long stretch of the reference in its stored order, the
        stretches across its end and start included (a replay that loops)."""
        w, bins = self.window, len(self.ref_counts)
        if len(ref) <= w:
            return 0.0
        looped = np.concatenate([ref, ref[: w - 1]])
        onehot = np.zeros((len(looped) + 1, bins), dtype=np.int64)
        onehot[np.arange(1, len(looped) + 1), np.searchsorted(self.edges, looped, side="right")] = 1
        running = np.cumsum(onehot, axis=0)
        windows = running[w:] - running[:-w] + 0.5  # every stretch of w consecutive samples, as psi()
        ref = (self.ref_counts + 0.5) / (self.ref_counts.sum() + 0.5 * bins)
        cur = windows / windows.sum(axis=1, keepdims=True)
        raw = np.sum((cur - ref) * np.log(cur / ref), axis=1)
        return max(0.0, float(raw.max()) - (bins - 1) * (1.0 / w + 1.0 / self.n_ref))

    def compute(self) -> float:
        return self._score(self._histogram(self.values[: self.n]), self.n)

    def reference_value(self) -> float:
        return self.ref_mean


class _RateSignal(_Signal):
    """Share of units with a flag set, against the reference rate."""

    statistic: Literal["psi", "z"] = "z"

    def __init__(self, name: str, rate: float, n_ref: int, window: int, warning: float, alarm: float) -> None:
        super().__init__(name, window, warning, alarm)
        self.rate = rate
        self.n_ref = n_ref

    def compute(self) -> float:
        return two_proportion_z(self.rate, self.n_ref, int(self.values[: self.n].sum()), self.n)

    def reference_value(self) -> float:
        return self.rate


class DriftMonitor:
    """Per-unit drift bookkeeping for one model's reference; make a new one when the model changes."""

    def __init__(self, reference: ReferenceStats, cfg: MonitoringConfig, metrics: Metrics) -> None:
        if cfg.psi_alarm <= cfg.psi_warning or cfg.rate_z_alarm <= cfg.rate_z_warning:
            raise ConfigError(
                "monitoring: the alarm levels must exceed the warning levels; got "
                f"psi {cfg.psi_warning}/{cfg.psi_alarm}, rate z {cfg.rate_z_warning}/{cfg.rate_z_alarm}"
            )
        self.cfg = cfg
        self.metrics = metrics
        self.units = 0
        source = reference.source
        self.reference_origin = source.describe() if source else "origin not recorded in the model card"
        w = cfg.drift_window
        dist: dict[str, list[float]] = {
            "brightness": reference.brightness,
            "contrast": reference.contrast,
            "sharpness": reference.sharpness,
            "top_confidence": reference.top_confidence,
        }
        self._image: list[tuple[int, _DistributionSignal]] = []  # (index in IMAGE_SIGNALS, signal)
        self._confidence: _DistributionSignal | None = None
        for name, samples in dist.items():
            if sum(1 for v in samples if math.isfinite(v)) < MIN_REFERENCE_SAMPLES:
                continue
            sig = _DistributionSignal(name, samples, w, cfg.drift_bins, cfg.psi_warning, cfg.psi_alarm)
            if name == "top_confidence":
                self._confidence = sig
            else:
                self._image.append((IMAGE_SIGNALS.index(name), sig))
        n_ref = max(len(samples) for samples in dist.values())
        zw, za = cfg.rate_z_warning, cfg.rate_z_alarm
        self._classes = {
            cls: _RateSignal(f"class:{cls}", rate, n_ref, w, zw, za)
            for cls, rate in sorted(reference.class_rates.items())
        }
        self._fail = (
            None
            if reference.fail_rate is None
            else _RateSignal("fail_rate", reference.fail_rate, n_ref, w, zw, za)
        )
        self._no_decision = (
            None
            if reference.no_decision_rate is None
            else _RateSignal("no_decision_rate", reference.no_decision_rate, n_ref, w, zw, za)
        )
        self._all: list[_Signal] = [sig for _, sig in self._image]
        if self._confidence is not None:
            self._all.append(self._confidence)
        self._all.extend(self._classes.values())
        self._all.extend(s for s in (self._fail, self._no_decision) if s is not None)
        for each in self._all:
            metrics.drift_score.labels(signal=each.name).set(0.0)
            metrics.drift_alarm.labels(signal=each.name).set(0)

    @property
    def signals(self) -> list[str]:
        """Names of the monitored signals (those the reference has data for)."""
        return [s.name for s in self._all]

    @property
    def levels(self) -> dict[str, DriftLevel]:
        return {s.name: s.level for s in self._all}

    @property
    def scores(self) -> dict[str, float]:
        return {s.name: s.score for s in self._all}

    @property
    def raised_levels(self) -> dict[str, tuple[float, float]]:
        """Signals whose (warning, alarm) levels the reference's own stretches raised."""
        return {
            s.name: (s.warning, s.alarm)
            for s in self._all
            if isinstance(s, _DistributionSignal) and s.warning > self.cfg.psi_warning
        }

    @property
    def alarmed(self) -> list[str]:
        """Signals now in alarm (e.g. for the review sampler to raise its share)."""
        return [s.name for s in self._all if s.level == "alarm"]

    def observe(
        self,
        *,
        brightness: float,
        contrast: float,
        sharpness: float,
        top_confidence: float | None,
        classes: Sequence[str],
        verdict: str,
    ) -> list[DriftEvent]:
        """Record one unit; every ``drift_every`` units score the windows and return level changes.

        ``classes`` are the distinct class names the model reported for the unit (the verdict's
        defects); ``top_confidence`` is the highest detection confidence (0.0 when none), or
        ``None`` when no model ran (deadline, no model), which leaves the model signals untouched.
        """
        if verdict not in _VERDICTS:
            raise InputError(f"drift: unknown verdict {verdict!r}; expected one of {sorted(_VERDICTS)}")
        self.units += 1
        image = (brightness, contrast, sharpness)
        for i, sig in self._image:
            if math.isfinite(image[i]):
                sig.add(image[i])
        if top_confidence is not None:
            if self._confidence is not None and math.isfinite(top_confidence):
                self._confidence.add(top_confidence)
            for cls, rate_sig in self._classes.items():
                rate_sig.add(1.0 if cls in classes else 0.0)
        if self._fail is not None:
            self._fail.add(1.0 if verdict == "FAIL" else 0.0)
        if self._no_decision is not None:
            self._no_decision.add(1.0 if verdict == "NO_DECISION" else 0.0)
        if self.units % self.cfg.drift_every:
            return []
        return self.evaluate()

    def evaluate(self) -> list[DriftEvent]:
        """Score every full window now; ``observe`` calls this every ``drift_every`` units."""
        events: list[DriftEvent] = []
        for sig in self._all:
            if not sig.full:
                continue
            sig.score = sig.compute()
            self.metrics.drift_score.labels(signal=sig.name).set(sig.score)
            level = next_level(sig.level, sig.score, sig.warning, sig.alarm, self.cfg.drift_clear_ratio)
            if level != sig.level:
                events.append(self._event(sig, level))
                sig.level = level
                self.metrics.drift_alarm.labels(signal=sig.name).set(LEVEL_VALUES[level])
        return events

    def _event(self, sig: _Signal, level: DriftLevel) -> DriftEvent:
        ref, cur = sig.reference_value(), sig.current_value()
        stat = "PSI" if sig.statistic == "psi" else "|z|"
        what = "rate" if sig.statistic == "z" else "mean"
        head = f"drift {level} on {sig.name}" if level != "ok" else f"drift on {sig.name} cleared"
        message = (
            f"{head}: {stat} {sig.score:.3f} over the last {sig.n} units "
            f"({what} {cur:.4g} vs reference {ref:.4g}; levels {sig.warning:g}/{sig.alarm:g})"
        )
        return DriftEvent(
            signal=sig.name,
            level=level,
            previous=sig.level,
            statistic=sig.statistic,
            score=sig.score,
            window=sig.n,
            reference_value=ref,
            current_value=cur,
            unit=self.units,
            message=message,
            reference=self.reference_origin,
        )
