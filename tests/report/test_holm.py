"""Paired t-test p-values and the Holm–Bonferroni correction of a table's comparisons, against tabulated Student-t
values, closed forms and hand-worked examples (each derivation written beside its numbers).

Closed forms of the two-sided p-value: df = 1, p = 1 − (2/π)·atan|t|; df = 2, p = 1 − |t| / √(t² + 2).
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
from typer.testing import CliRunner

from kdlab.cli.main import app
from kdlab.report import stats  # its names looked up in each test: every test fails alone without them
from kdlab.report.stats import paired_difference
from kdlab.report.tables import markdown_table, render


@pytest.mark.parametrize(("t", "df", "p"), [
    (12.706, 1, 0.05), (4.303, 2, 0.05), (2.776, 4, 0.05), (2.021, 40, 0.05),  # t_{0.975, df}
    (4.604, 4, 0.01), (3.250, 9, 0.01), (-3.250, 9, 0.01),                      # t_{0.995, df}
])
def test_two_sided_p_of_tabulated_t_quantiles(t, df, p):
    # standard tables give t to 3 decimals, so p is known to about 1e-4 there
    assert stats.t_two_sided_p(t, df) == pytest.approx(p, abs=2e-4)


def test_paired_p_values_match_closed_forms_and_an_independent_t_test():
    # [1, 2, 2]: mean 5/3, sd √(1/3), t = (5/3) / (√(1/3)/√3) = 5, df 2: p = 1 − 5/√27 = 0.0377496
    assert paired_difference([1.0, 2.0, 2.0]).p == pytest.approx(1 - 5 / math.sqrt(27), rel=1e-9)
    # [2, 2.5, 3]: mean 2.5, sd 0.5, t = 2.5 / (0.5/√3) = √75, p = 1 − √(75/77) = 0.0130718
    assert paired_difference([2.0, 2.5, 3.0]).p == pytest.approx(0.0130718, abs=1e-6)
    # [1, 3]: mean 2, sd √2, t = 2 / (√2/√2) = 2, df 1: p = 1 − (2/π)·atan 2 = 0.2951672
    assert paired_difference([1.0, 3.0]).p == pytest.approx(1 - 2 / math.pi * math.atan(2), rel=1e-9)
    # an independent implementation on fixed numbers: scipy's paired t-test of a against b
    from scipy.stats import ttest_rel

    a, b = [71.2, 68.4, 70.9, 69.5, 72.0], [69.8, 68.9, 69.1, 67.7, 70.3]
    assert paired_difference([x - y for x, y in zip(a, b)]).p == pytest.approx(ttest_rel(a, b).pvalue, rel=1e-9)
    # identical differences: a zero-width interval, so p 0 (or 1 when they are all 0); one seed: no test
    assert paired_difference([1.5, 1.5, 1.5]).p == 0 and paired_difference([0.0, 0.0]).p == 1
    assert math.isnan(paired_difference([1.0]).p)


def test_holm_adjusted_values_match_hand_worked_examples():
    # p = [0.01, 0.04, 0.03, 0.005], m = 4. Ascending 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1:
    # 0.02, 0.03, 0.06, 0.04; running maximum 0.02, 0.03, 0.06, 0.06; in the given order:
    assert stats.holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # capped at 1: 0.5 · 2 = 1.0, then max(1.0, 0.6 · 1) = 1.0
    assert stats.holm_adjust([0.6, 0.5]) == pytest.approx([1.0, 1.0])
    # the running maximum keeps the order: 0.02 · 2 = 0.04, then max(0.04, 0.021) = 0.04 (not 0.021)
    assert stats.holm_adjust([0.021, 0.02]) == pytest.approx([0.04, 0.04])
    assert stats.holm_adjust([0.2]) == [0.2] and stats.holm_adjust([]) == []


def test_the_test_cell_reads_p_holm_and_the_verdict():
    assert stats.format_p(0.0377) == "0.038" and stats.format_p(0.3) == "0.30" and stats.format_p(1.0) == "1.0"
    assert stats.format_p(0.0499) == "0.0499" and stats.format_p(0.00003) == "<0.0001"  # never rounded across 0.05
    two = paired_difference([1.0, 2.0, 2.0])
    assert stats.render_holm(two, 0.11325) == "p 0.038, Holm 0.11: not separated (Holm)"
    assert stats.render_holm(two, 0.049) == "p 0.038, Holm 0.049: separated (Holm)"
    assert stats.render_holm(paired_difference([3.0]), math.nan) == "1 seed: no test"


# Per seed the baseline's PGD is 10, 12, 11; each cell adds its differences (all df = 2, closed form above):
# a +1, +2, +2:     mean 5/3, CI 5/3 ± 4.303·(1/√3)/√3 = [+0.23, +3.10] excludes 0; t = 5,     p = 0.03775
# b +3, −1, +2:     t² = 16/13, p = 1 − √(16/42) = 0.38279
# c +1, +2, +3:     CI 2 ± 2.484 = [−0.48, +4.48];              t² = 12,    p = 1 − √(12/14) = 0.07418
# d +10, +11, +12:  CI 11 ± 2.484 = [+8.52, +13.48];            t² = 363,   p = 1 − √(363/365) = 0.0027435
# e (seed 0 only):  one pair, no test, not in the family.
# Holm over m = 4: ascending d, a, c, b times 4, 3, 2, 1: 0.010974, 0.11325, 0.14836, 0.38279 (already rising).
DIFFERENCES = {"a": [1.0, 2.0, 2.0], "b": [3.0, -1.0, 2.0], "c": [1.0, 2.0, 3.0], "d": [10.0, 11.0, 12.0],
               "e": [4.0]}


def _frame() -> pd.DataFrame:
    base = [10.0, 12.0, 11.0]
    rows = [{"kind": "grid", "cell": "base", "seed": seed, "clean_acc": 30.0, "pgd_acc": pgd}
            for seed, pgd in enumerate(base)]
    for cell, differences in DIFFERENCES.items():
        rows += [{"kind": "grid", "cell": cell, "seed": seed, "clean_acc": 30.0, "pgd_acc": base[seed] + difference}
                 for seed, difference in enumerate(differences)]
    return pd.DataFrame(rows)


def _row(text: str, cell: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"| {cell} |"))


def test_a_table_shows_the_uncorrected_interval_and_the_holm_verdict_side_by_side(tmp_path):
    csv = tmp_path / "holm-grid.csv"
    _frame().to_csv(csv, index=False)
    result = CliRunner().invoke(app, ["table", str(csv), "--baseline", "base"])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "holm-grid.md").read_text()
    assert "| Δ PGD vs base (paired, 95 % CI) | Δ PGD vs base: t-test p, Holm |" in text
    # a: the uncorrected interval excludes 0, Holm over the 4 comparisons does not separate it
    assert _row(text, "a").endswith("| +1.67 [+0.23, +3.10] | p 0.038, Holm 0.11: not separated (Holm) |")
    assert _row(text, "b").endswith("not separated | p 0.38, Holm 0.38: not separated (Holm) |")
    assert _row(text, "c").endswith("| +2.00 [-0.48, +4.48] not separated | p 0.074, Holm 0.15: not separated (Holm) |")
    assert _row(text, "d").endswith("| +11.00 [+8.52, +13.48] | p 0.0027, Holm 0.011: separated (Holm) |")
    assert _row(text, "e").endswith("| +4.00 (1 seed: no interval) | 1 seed: no test |")
    assert _row(text, "base").endswith("| — | — |")
    assert "family of m = 4 comparisons on PGD" in text and "Holm–Bonferroni" in text

    # --correction none: the uncorrected intervals alone, as before
    result = CliRunner().invoke(app, ["table", str(csv), "--baseline", "base", "--correction", "none"])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "holm-grid.md").read_text()
    assert "Holm" not in text and _row(text, "a").endswith("| +1.67 [+0.23, +3.10] |")


def test_two_baselines_make_one_family_each_pair_of_cells_counted_once():
    # base against a, b, c, d and a against b, c, d (a against base is the same comparison): m = 7.
    # a − d per seed: −9, −9, −10: mean −28/3, sd √(1/3), t² = (28/3)²·3/(1/3) = 784, p = 1 − √(784/786)
    text = markdown_table(_frame(), baseline=["base", "a"])
    assert "| Δ PGD vs base (paired, 95 % CI) | Δ PGD vs base: t-test p, Holm | Δ PGD vs a (paired, 95 % CI) |" \
           in text
    assert "family of m = 7 comparisons on PGD" in text
    # the 7 p-values (df = 2 closed form): a−d 0.0012731 (t² 784), base−d 0.0027435, base−a 0.0377496,
    # base−c 0.0741799, base−b 0.382787, a−c 0.422650 (c − a = 0, 0, +1: t² = 1), a−b 0.839872 (b − a = +2, −3, 0:
    # t² = 1/19). Times 7, 6, 5, ...: 0.0089118, 0.016461, 0.18875, 0.29672, 1 (1.148 capped), then 1, 1.
    a_vs_base = "p 0.038, Holm 0.19: not separated (Holm)"  # the same comparison in both columns that make it
    assert a_vs_base in _row(text, "a") and a_vs_base in _row(text, "base")
    assert _row(text, "d").endswith("| p 0.0027, Holm 0.016: separated (Holm) | +9.33 [+7.90, +10.77] | "
                                    "p 0.0013, Holm 0.0089: separated (Holm) |")
    assert _row(text, "b").endswith("| p 0.84, Holm 1.0: not separated (Holm) |")


def test_an_unknown_correction_is_refused_before_any_work(tmp_path):
    csv = tmp_path / "holm-grid.csv"
    _frame().to_csv(csv, index=False)
    result = CliRunner().invoke(app, ["table", str(csv), "--correction", "bonferoni"])
    assert result.exit_code == 2
    assert "--correction bonferoni: choose holm or none" in result.output
    assert not (tmp_path / "holm-grid.md").exists()
    with pytest.raises(Exception, match="choose holm or none"):
        render(csv, correction="sidak")
    runs = tmp_path / "runs.csv"  # a runs table has no comparisons to correct
    pd.DataFrame([{"name": "quickstart", "run_dir": "results/runs/quickstart-1", "pgd_acc": 14.8}]).to_csv(runs)
    result = CliRunner().invoke(app, ["table", str(runs), "--correction", "none"])
    assert result.exit_code == 2 and "--correction apply to ablation tables" in result.output
