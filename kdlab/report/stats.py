"""Paired comparisons over seeds: the mean difference and its 95 % confidence interval.

When kdlab says one setting beats another it means: over the same seeds (same data order and
initialisation), the mean of (cell − baseline) has a two-sided 95 % Student-t interval that
excludes 0. An interval that includes 0 is reported as "not separated".

A table makes many such comparisons (every cell against every baseline), so beside each interval it gives the
two-sided paired t-test p-value (the same t = mean / (sd / √n), df = n − 1) and its Holm–Bonferroni adjusted
value over the table's family of comparisons (Holm 1979): "separated (Holm)" when the adjusted p < 0.05. The
interval uses the tabulated quantiles below and the p-value scipy's t distribution; the two agree on which side of
0.05 a comparison falls except within 1e-3 of the quantile (the table's precision).
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
    p: float = math.nan  # two-sided paired t-test p-value; NaN with fewer than two pairs

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
    return PairedDifference(mean, mean - half, mean + half, n, paired_t_p(mean, std, n))


def t_two_sided_p(t: float, df: int) -> float:
    """P(|T| ≥ |t|) for Student's t with ``df`` degrees of freedom (scipy's t distribution)."""
    # imported here: scipy takes a moment to load, and only tables need it
    from scipy.stats import t as student_t

    if df < 1:
        raise ValueError("a t-test needs at least two paired values (df >= 1)")
    return float(min(1.0, 2.0 * student_t.sf(abs(t), df)))


def paired_t_p(mean: float, std: float, n: int) -> float:
    """The two-sided p-value of t = mean / (std / √n), df = n − 1. Identical differences on every seed (std 0)
    give p 0 when their mean is not 0 (the interval has no width and excludes 0), else p 1."""
    if std == 0:
        return 0.0 if mean != 0 else 1.0
    return t_two_sided_p(mean / (std / math.sqrt(n)), n - 1)


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the order given: sorted ascending, the j-th smallest of m becomes
    max over i ≤ j of min(1, (m − i + 1) · p_(i)). Rejecting where the adjusted value is under α keeps the chance
    of any false separation in the family at most α (Holm 1979)."""
    m = len(p_values)
    adjusted = [math.nan] * m
    running = 0.0
    for rank, index in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def format_p(p: float) -> str:
    """A p-value in two significant digits (``0.041``, ``0.30``, ``1.0``), ``<0.0001`` below that, with more digits
    where two would round it across 0.05 (``0.0499``, not ``0.05``)."""
    if p == 0:
        return "0"
    if p < 1e-4:
        return "<0.0001"
    for digits in range(2, 7):
        shown = f"{p:#.{digits}g}"
        if (float(shown) < 0.05) == (p < 0.05):
            return shown
    return shown


def render_holm(difference: PairedDifference, adjusted: float) -> str:
    """``p 0.041, Holm 0.29: not separated (Holm)``: the comparison's paired t-test p-value, its Holm-adjusted
    value in the table's family and the verdict at 0.05; ``1 seed: no test`` and ``—`` where there is none."""
    if difference.pairs == 0:
        return "—"
    if difference.pairs == 1:
        return "1 seed: no test"
    verdict = "separated (Holm)" if adjusted < 0.05 else "not separated (Holm)"
    return f"p {format_p(difference.p)}, Holm {format_p(adjusted)}: {verdict}"
