"""Min / median / max over seeds: how every training figure is published.

One training run is one sample; the same recipe lands several mAP points apart from seed to seed
on a few hundred images, so a figure quoted from one run says more than it knows. Writers of
training results (the flywheel test, the NEU-DET benchmark) publish this spread with each run's
own row beside it.
"""

from __future__ import annotations

import statistics

__all__ = ["min_median_max"]


def min_median_max(values: list[float]) -> dict[str, float | None]:
    """The spread of ``values``; every entry None when there are none (e.g. a phase no run reached)."""
    if not values:
        return {"min": None, "median": None, "max": None}
    return {"min": min(values), "median": float(statistics.median(values)), "max": max(values)}
