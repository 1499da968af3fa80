"""Percentiles: one definition for the dashboard, the example report and the benchmark."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The `fraction` (0 to 1, whole percents) percentile of values; None without values.

    `statistics.quantiles` with the inclusive method interpolates linearly between the
    closest ranks, as PostgreSQL's `percentile_cont` does.
    """
    if not values:
        return None
    if len(values) == 1 or fraction <= 0:
        return float(min(values))
    if fraction >= 1:
        return float(max(values))
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[round(fraction * 100) - 1]
