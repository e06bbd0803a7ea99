"""Confidence intervals for rates measured on a few dozen probes.

The Wilson score interval (Wilson 1927; Brown, Cai and DasGupta 2001 recommend it over the normal
approximation for small n and rates near 0 or 1), as ``scipy.stats.binomtest(...).proportion_ci``
computes it with ``method="wilson"``.
"""

from __future__ import annotations

import math

__all__ = ["wilson_interval"]

#: The standard normal quantile of a two-sided 95% interval.
Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of ``successes / n`` (95% by default); ``None`` when ``n`` is 0."""
    if n <= 0:
        return None
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be between 0 and n={n}, not {successes}")
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
