"""Paired comparisons over seeds: the mean difference and its 95 % confidence interval.

When kdlab says one setting beats another it means: over the same seeds (same data order and
initialisation), the mean of (cell − baseline) has a two-sided 95 % Student-t interval that
excludes 0. An interval that includes 0 is reported as "not separated".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# Two-sided 95 % quantiles t_{0.975, df} of Student's t for df = 1..30 (standard tables).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)
_Z975 = 1.959964


def t_quantile_975(df: int) -> float:
    """t_{0.975, df}: the table for df ≤ 30, else the Cornish–Fisher expansion around the normal quantile
    (Abramowitz & Stegun 26.7.5; within 1e-3 of the exact value for df > 30)."""
    if df < 1:
        raise ValueError("a confidence interval needs at least two paired values (df >= 1)")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass(frozen=True)
class PairedDifference:
    mean: float
    low: float  # 95 % CI; NaN with fewer than two pairs
    high: float
    pairs: int

    @property
    def separated(self) -> bool:
        """True when the 95 % interval excludes 0."""
        return self.pairs >= 2 and (self.low > 0 or self.high < 0)

    def render(self) -> str:
        """``+3.10 [+0.74, +5.46]``, with "not separated" when the interval includes 0."""
        if self.pairs == 0:
            return "—"
        if self.pairs == 1:
            return f"{self.mean:+.2f} (1 seed: no interval)"
        shown = f"{self.mean:+.2f} [{self.low:+.2f}, {self.high:+.2f}]"
        return shown if self.separated else shown + " not separated"


def paired_difference(differences: Sequence[float]) -> PairedDifference:
    """Mean and 95 % t-interval of per-seed differences (cell − baseline on the same seed); NaNs dropped."""
    values = [float(value) for value in differences if not math.isnan(float(value))]
    n = len(values)
    if n == 0:
        return PairedDifference(math.nan, math.nan, math.nan, 0)
    mean = sum(values) / n
    if n == 1:
        return PairedDifference(mean, math.nan, math.nan, 1)
    std = math.sqrt(sum((value - mean) ** 2 for value in values) / (n - 1))
    half = t_quantile_975(n - 1) * std / math.sqrt(n)
    return PairedDifference(mean, mean - half, mean + half, n)
