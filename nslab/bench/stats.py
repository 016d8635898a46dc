"""Figures the benchmarks share."""

from __future__ import annotations


def percentile(values, p: float) -> float | None:
    """The p-quantile (0 ≤ p ≤ 1) with linear interpolation between the closest ranks;
    None for no values."""
    if not 0 <= p <= 1:
        raise ValueError("p must be between 0 and 1")
    values = sorted(values)
    if not values:
        return None
    k = (len(values) - 1) * p
    lo = int(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)
