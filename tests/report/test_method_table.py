"""The method-comparison table: cost columns and the robustness-against-cost plot, checked by hand."""

from __future__ import annotations

import pandas as pd
from matplotlib.image import imread

from kdlab.report.tables import render


def _rows():
    rows = [{"ablation": "m", "kind": "methods", "cell": "teacher", "seed": 0, "clean_acc": 40.0, "pgd_acc": 20.0}]
    for seed, (pgd_a, pgd_b, seconds_b) in enumerate([(10.0, 14.0, 300.0), (12.0, 15.0, 330.0), (11.0, 19.0, 360.0)]):
        rows.append({"ablation": "m", "kind": "methods", "cell": "kd", "seed": seed, "clean_acc": 30.0,
                     "pgd_acc": pgd_a, "passes_per_image": 1, "teacher_forwards_per_image": 1,
                     "train_seconds": 100.0 + seed})
        rows.append({"ablation": "m", "kind": "methods", "cell": "ard", "seed": seed, "clean_acc": 25.0,
                     "pgd_acc": pgd_b, "passes_per_image": 5, "teacher_forwards_per_image": 1,
                     "train_seconds": seconds_b})
    return rows


def test_method_table_shows_cost_beside_accuracy_and_plots_it(tmp_path):
    csv = tmp_path / "m-methods.csv"
    pd.DataFrame(_rows()).to_csv(csv, index=False)
    markdown, _ = render(csv)
    lines = markdown.read_text().splitlines()
    header = next(line for line in lines if line.startswith("| cell"))
    assert header.split(" | ")[-3:] == ["passes/img", "teacher fwd/img", "train s |"]
    ard = next(line for line in lines if line.startswith("| ard"))
    # PGD 14, 15, 19: mean 16, sample std sqrt(((-2)^2 + (-1)^2 + 3^2) / 2) = sqrt(7) = 2.65; seconds 330 ± 30
    assert "16.00 ± 2.65" in ard and ard.endswith("| 5 | 1 | 330 ± 30 |")
    cost_plot = tmp_path / "m-methods-cost.png"
    assert cost_plot.is_file() and imread(cost_plot).shape[0] > 100


def test_other_ablations_keep_their_columns(tmp_path):
    rows = [{**row, "kind": "components"} for row in _rows()]
    csv = tmp_path / "c.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    markdown, _ = render(csv)
    assert "passes/img" not in markdown.read_text()
    assert not (tmp_path / "c-cost.png").exists()


def test_a_method_comparison_is_paired_against_mixacm_seed_by_seed(tmp_path):
    rows = _rows()
    for seed, pgd in enumerate([12.0, 12.5, 11.0]):
        rows.append({"ablation": "m", "kind": "methods", "cell": "mixacm", "seed": seed, "clean_acc": 30.0,
                     "pgd_acc": pgd, "passes_per_image": 1, "teacher_forwards_per_image": 1, "train_seconds": 90.0})
    csv = tmp_path / "m-methods.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    text = render(csv)[0].read_text()
    assert "Δ PGD vs mixacm (paired, 95 % CI)" in text
    # ard - mixacm per seed: 14-12, 15-12.5, 19-11 = 2, 2.5, 8: mean 4.17, sd 3.33, t(2) 4.303 -> ± 8.27: not separated
    ard = next(line for line in text.splitlines() if line.startswith("| ard"))
    assert "+4.17" in ard and "not separated" in ard


def test_autoattack_of_seed_zero_runs_joins_the_table_from_eval_rows(tmp_path):
    rows = _rows()
    for row in rows:
        row["run_dir"] = f"results/runs/m-{row['cell']}-s{row['seed']}-abc"
        row["git_commit"] = "0123456789"  # a digest that looks like a number: rewritten as written
    csv = tmp_path / "m-methods.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    evaluations = pd.DataFrame([
        # the first kd row is superseded by a re-evaluation of the same model and test set (the latest row counts)
        {"model": "kd", "checkpoint": "results/runs/m-kd-s0-abc/best.pt", "attack": "autoattack", "n": 500,
         "seed": 0, "accuracy": 3.0},
        {"model": "kd", "checkpoint": "results/runs/m-kd-s0-abc/best.pt", "attack": "autoattack", "n": 500,
         "seed": 0, "accuracy": 8.4},
        {"model": "ard", "checkpoint": "results/runs/m-ard-s0-abc/best.pt", "attack": "pgd", "n": 500,
         "seed": 0, "accuracy": 50.0},  # another attack: not copied
        {"model": "ard", "checkpoint": "results/runs/m-ard-s0-abc/best.pt", "attack": "autoattack", "n": 500,
         "seed": 0, "accuracy": 12.6},
    ])
    evaluations.to_csv(tmp_path / "eval.csv", index=False)
    from kdlab.report.tables import merge_eval_column

    assert merge_eval_column(csv, tmp_path / "eval.csv") == 2
    merged = pd.read_csv(csv)
    assert merged.set_index(["cell", "seed"])["autoattack_acc"].dropna().to_dict() == {("kd", 0): 8.4, ("ard", 0): 12.6}
    lines = csv.read_text().splitlines()  # n is a count beside the rows not evaluated: 500, not 500.0
    assert sum(",0123456789," in line and line.endswith(",8.4,500") for line in lines) == 1, lines[:3]
    text = render(csv)[0].read_text()
    assert "| AutoAttack |" in text.splitlines()[4] or "AutoAttack" in text.splitlines()[4]
    assert "AutoAttack: measured on 1 seed(s) per cell, n = 500 test images" in text


def test_with_eval_refuses_a_table_with_no_matching_run(tmp_path):
    import pytest

    from kdlab.errors import KdlabError
    from kdlab.report.tables import merge_eval_column

    rows = [{**row, "run_dir": "results/runs/elsewhere"} for row in _rows()]
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    pd.DataFrame([{"model": "x", "checkpoint": "results/runs/x/best.pt", "attack": "autoattack", "n": 500,
                   "accuracy": 1.0}]).to_csv(tmp_path / "eval.csv", index=False)
    with pytest.raises(KdlabError, match="no autoattack row"):
        merge_eval_column(tmp_path / "m.csv", tmp_path / "eval.csv")
