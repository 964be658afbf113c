"""The gap to a one-run teacher (kdlab.report.tables.teacher_gap_markdown): teacher − cell per seed, its mean and
one-sample 95 % t-interval over the cell's seeds, checked against hand-computed values."""

import pandas as pd

from kdlab.report.tables import markdown_table


def _frame(teacher_rows=1):
    rows = [{"cell": "teacher", "seed": 0, "clean_acc": 60.0, "pgd_acc": 30.0}] * teacher_rows
    rows += [{"cell": "pgd-at", "seed": seed, "clean_acc": 30.0, "pgd_acc": value}
             for seed, value in enumerate([22.0, 23.0, 24.0])]
    rows += [{"cell": "kd", "seed": 0, "clean_acc": 40.0, "pgd_acc": 10.0}]
    return pd.DataFrame(rows)


def _gap_rows(table):
    lines = table.splitlines()
    start = lines.index("| cell | Δ PGD |")
    return lines[start + 2:]


def test_the_gap_to_the_teacher_is_a_one_sample_interval_over_the_cells_seeds():
    """Gaps 8, 7, 6: mean 7, sd 1, half-width t(0.975, 2) · 1 / √3 = 4.303 / 1.732 = 2.484 -> [4.52, 9.48]; one
    seed has no interval."""
    table = markdown_table(_frame())
    assert "Gap to the teacher (teacher − cell; the teacher is one run" in table
    assert _gap_rows(table) == ["| pgd-at | +7.00 [+4.52, +9.48] |", "| kd | +20.00 (1 seed: no interval) |"]


def test_no_gap_without_exactly_one_teacher_row():
    assert "Gap to the teacher" not in markdown_table(_frame(teacher_rows=0))
    assert "Gap to the teacher" not in markdown_table(_frame(teacher_rows=2))
