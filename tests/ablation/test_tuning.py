"""The tuning protocol (kdlab.ablation.tuning): the round-by-round grid search on hand-made validation scores, and one
tiny study whose tuning averages two seeds, selects like its final runs and bisects towards a diverged value."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from kdlab.ablation.grid import Cell
from kdlab.ablation.tuning import (
    Axis,
    TuneSpec,
    advance,
    choose,
    format_value,
    group_scores,
    next_values,
    start_searches,
)
from kdlab.cli.main import app
from kdlab.errors import KdlabError


def test_best_at_the_upper_edge_extends_up_by_the_grids_own_step():
    assert next_values({0.2: 50.0, 2.0: 60.0, 20.0: 70.0}) == ([(pytest.approx(200.0), "extend up")], None)
    assert next_values({0.5: 1.0, 0.7: 2.0}, scale="linear") == ([(pytest.approx(0.9), "extend up")], None)


def test_best_at_the_lower_edge_extends_down():
    assert next_values({0.2: 70.0, 2.0: 60.0, 20.0: 50.0}) == ([(pytest.approx(0.02), "extend down")], None)


def test_an_interior_best_stops():
    assert next_values({0.2: 50.0, 2.0: 70.0, 20.0: 60.0}) == ([], "interior")
    # ties go to the value tried first: 20 (tried first) is interior between 2 and 200
    assert next_values({20.0: 70.0, 2.0: 60.0, 200.0: 70.0}) == ([], "interior")


def test_a_declared_bound_clips_the_step_then_stops():
    assert next_values({0.5: 1.0, 0.9: 2.0}, scale="linear", bounds=(0.0, 1.0)) == \
        ([(pytest.approx(1.0), "extend up")], None)  # 1.3 clipped to the bound
    assert next_values({0.5: 1.0, 0.9: 2.0, 1.0: 3.0}, scale="linear", bounds=(0.0, 1.0)) == ([], "bound")


def test_a_diverged_neighbour_of_the_best_is_bisected_then_bracketed():
    # log: the geometric midpoint sqrt(2 * 20) = 6.3246; linear: (2 + 20) / 2 = 11
    assert next_values({0.2: 50.0, 2.0: 60.0, 20.0: None}) == ([(pytest.approx(math.sqrt(40)), "bisect")], None)
    assert next_values({0.2: 50.0, 2.0: 60.0, 20.0: math.nan}, scale="linear") == ([(pytest.approx(11.0), "bisect")],
                                                                                     None)
    scores = {0.2: 50.0, 2.0: 60.0, 20.0: None, 6.32: None}
    assert next_values(scores, bisections_done=1, max_bisections=1) == ([], "bracketed divergence")
    # best at an open lower edge with a diverged upper neighbour: both sides move in one round
    assert next_values({2.0: 60.0, 20.0: None}) == ([(pytest.approx(0.2), "extend down"),
                                                     (pytest.approx(math.sqrt(40)), "bisect")], None)


def test_max_rounds_stops_an_open_edge():
    assert next_values({0.2: 50.0, 2.0: 60.0, 20.0: 70.0}, rounds_done=4, max_rounds=4) == ([], "max rounds")
    assert next_values({0.2: 50.0, 2.0: 60.0, 20.0: 70.0}, rounds_done=3, max_rounds=4)[1] is None


def test_nothing_to_search():
    assert next_values({1.0: 50.0}) == ([], "one value")
    assert next_values({1.0: None, 2.0: math.nan}) == ([], "every value diverged")


def test_added_values_are_written_short():
    assert [format_value(v) for v in (200.0, math.sqrt(40), 2e-7 * math.sqrt(10), 0.5)] == \
        ["200", "6.32", "6.32e-07", "0.5"]


def collapse_rows() -> list[dict]:
    """Two seeds of weight 1, 10, 100: 100 has the best mean PGD (15.0) but one of its models collapsed (it predicts
    one class; its robust accuracy, 20, is meaningless); the best value among the others is 10 (mean 11.5)."""
    scores = {"1": (8.0, 9.0), "10": (11.0, 12.0), "100": (10.0, 20.0)}
    return [{"cell": f"m,weight={value}", "seed": seed, "pgd_acc": score,
             "flag": "collapsed: robust accuracy meaningless (predicts class 2 for 100% of 500 images)"
             if (value, seed) == ("100", 1) else ""}
            for value, pair in scores.items() for seed, score in enumerate(pair)]


@pytest.mark.parametrize("rule,chosen,added", [("keep", "100", "1000 (extend up)"),
                                               ("exclude", "10", "31.6 (bisect)")])
def test_a_value_with_a_collapsed_seed_is_chosen_only_when_collapse_is_kept(rule, chosen, added):
    """keep (the default): 100 wins on its mean and the grid extends past it (100 * 100 / 10); exclude: 100 counts
    as diverged, 10 is chosen and the next round bisects between them (sqrt(10 * 100) = 31.6)."""
    plan = SimpleNamespace(cells=[Cell("m", ())])
    spec = TuneSpec(Axis("method.weight", ("1", "10", "100")), collapsed=rule)
    assert choose(plan, spec, collapse_rows(), "pgd_acc") == {"m": chosen}
    searches = start_searches(plan, spec)
    assert advance(searches, group_scores(plan, spec, collapse_rows(), "pgd_acc", searches), spec, 1)
    assert [f"{t.text} ({t.added})" for t in searches["m"].trials if t.round == 2] == [added]


def test_the_tuning_grid_marks_collapsed_seeds_and_bolds_the_choice_of_the_declared_rule():
    from kdlab.report.tables import tuning_grid_markdown

    frame = pd.DataFrame(collapse_rows()).assign(tune_round=1, tune_added="grid", tune_stop="interior")
    kept = "\n".join(tuning_grid_markdown(frame, "pgd_acc"))
    assert "**weight=100: 15.00 ⚠ collapsed on 1 of 2 seeds (round 1, grid)**" in kept
    declared = json.dumps({"tune": {"collapsed": "exclude"}})
    excluded = "\n".join(tuning_grid_markdown(frame.assign(study_declaration=declared), "pgd_acc"))
    assert "; weight=100: 15.00 ⚠ collapsed on 1 of 2 seeds, excluded (round 1, grid)." in excluded
    assert "**weight=10: 11.50 (round 1, grid)**" in excluded


def test_equal_means_go_to_the_value_tried_first_in_the_choice_and_in_the_grid():
    """10 (tried first) and 1 (tried second) both average 11.0; 100 diverged on a seed (no score). The choice and
    the grid's bold must name 10, and no value when every one diverged."""
    from kdlab.report.tables import tuning_grid_markdown

    scores = {"10": (10.0, 12.0), "1": (11.0, 11.0), "100": (30.0, math.nan)}
    rows = [{"cell": f"m,weight={value}", "seed": seed, "pgd_acc": score}
            for value, pair in scores.items() for seed, score in enumerate(pair)]
    plan = SimpleNamespace(cells=[Cell("m", ())])
    spec = TuneSpec(Axis("method.weight", ("10", "1", "100")))
    assert choose(plan, spec, rows, "pgd_acc") == {"m": "10"}
    grid = "\n".join(tuning_grid_markdown(pd.DataFrame(rows), "pgd_acc"))
    assert "weight=1: 11.00; **weight=10: 11.00**; weight=100: diverged." in grid
    with pytest.raises(KdlabError, match="every value diverged"):
        choose(plan, spec, [{**row, "pgd_acc": math.nan} for row in rows], "pgd_acc")


def run_tuned_study(tmp_path: Path) -> tuple[Path, Path]:
    """A tiny tuned study, run to the end: lr 1e30 diverges; 0.05 sits on the declared lower bound, so round 2
    tries only the geometric midpoint sqrt(0.05 * 1e30) = 2.24e14 (diverges too) and the search stops, bracketed;
    the final runs use 0.05. Returns the study file and the tables' folder (run directories: tmp_path/runs)."""
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "tiny", "data": {"dataset": "embedded", "subset": 64, "val_size": 16, "test_subset": 20,
                                 "batch_size": 32},
        "model": {"arch": "resnet_small", "width": 4}, "train": {"epochs": 1}, "eval": {"n": 10, "steps": 1},
        "output": {"dir": str(tmp_path / "runs"), "table": str(tmp_path / "runs.csv")}}))
    study = tmp_path / "tuned.yaml"
    study.write_text(yaml.safe_dump({
        "study": "tuned", "question": "q?", "recipe": "tiny.yaml", "cells": {"grid": {"train.epochs": [1]}},
        "seeds": [0, 1], "metric": "clean_acc", "comparisons": {"baseline": "epochs=1"},
        "tune": {"key": "train.lr", "values": ["0.05", "1e30"], "seeds": [0, 1], "bounds": [0.05, None],
                 "max_rounds": 3}}))
    out = tmp_path / "tables"
    result = CliRunner().invoke(app, ["ablate", str(study), "--threads", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return study, out


@pytest.mark.slow
def test_a_tuned_study_averages_two_seeds_selects_like_its_final_runs_and_bisects_a_divergence(tmp_path):
    """The study of :func:`run_tuned_study`: its tuning table, its choice and its final table."""
    _, out = run_tuned_study(tmp_path)
    val = pd.read_csv(out / "tuned-val.csv")
    assert set(zip(val["cell"], val["seed"])) == {(f"epochs=1,lr={v}", s) for v in ("0.05", "1e30", "2.24e+14")
                                                  for s in (0, 1)}
    by_value = val.groupby("cell").first()
    assert by_value.loc["epochs=1,lr=2.24e+14", ["tune_round", "tune_added"]].tolist() == [2, "bisect"]
    assert by_value.loc["epochs=1,lr=1e30", ["tune_round", "tune_added"]].tolist() == [1, "grid"]
    assert set(val["tune_stop"]) == {"bracketed divergence"} and set(val["tune_seeds"]) == {2}
    assert set(val.loc[val["cell"] != "epochs=1,lr=0.05", "flag"]) == {"diverged"}
    # a diverged row is a result with provenance like the others: the code and the machine that found it
    diverged = val[val["flag"] == "diverged"]
    assert diverged["git_commit"].notna().all() and diverged["torch"].notna().all()
    assert set(diverged["git_commit"]) == set(val.loc[val["flag"] != "diverged", "git_commit"])
    scored = val["flag"].astype(str) != "diverged"  # (a 1-epoch model may be flagged collapsed: still scored)
    assert set(val.loc[scored, "cell"]) == {"epochs=1,lr=0.05"} and set(val.loc[scored, "eval_split"]) == {"val"}
    markdown = (out / "tuned-val.md").read_text()
    assert "- epochs=1 (2 seeds): **lr=0.05: " in markdown and "Stopped: bracketed divergence." in markdown

    final = pd.read_csv(out / "tuned.csv")
    assert set(final["tuned"]) == {"lr=0.05"} and set(final["tuned_on"]) == {"tuned-val.csv"}
    assert "lr=0.05 (search stopped: bracketed divergence" in (out / "tuned.md").read_text()  # (; ⚠ collapsed ...)
    # the same selection rule: best.pt chosen on the validation split (auto -> clean for standard training) in both
    assert set(val.loc[scored, "select"]) == set(final["select"]) == {"clean"}


@pytest.mark.slow
def test_check_shows_the_tuning_round_ablate_runs_next_then_the_tuned_final_runs(tmp_path):
    """kdlab check STUDY.yaml on a fresh checkout (the committed tables, no run directory): while the tuning is
    open, the round kdlab ablate runs next (its committed rows from the table, the rest to train); once it is over,
    the final runs with the chosen value, from the table."""
    import shutil

    study, out = run_tuned_study(tmp_path)
    shutil.rmtree(tmp_path / "runs")

    def check():
        result = CliRunner().invoke(app, ["check", str(study), "--no-timing", "--threads", "1", "--out", str(out)],
                                    env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        return result.output

    over = check()
    assert "plan tuned-val" not in over
    assert "tuning over: epochs=1: lr=0.05 (chosen in tuned-val.csv)" in over
    assert "2 runs: 0 finished (reused), 2 from the committed table, 0 to train" in over

    val = pd.read_csv(out / "tuned-val.csv")
    val[val["tune_round"] == 1].to_csv(out / "tuned-val.csv", index=False)  # round 2 not committed yet
    open_ = check()
    tuning = open_.split("plan tuned:")[0]
    status = {}
    for line in tuning.splitlines():
        if ", seed " in line:
            cell, rest = line.strip().split(", seed ")
            status[cell, int(rest.split()[0])] = "from the table" if "from the table" in rest else rest.split()[1]
    assert status == {**{(f"epochs=1,lr={value}", seed): "from the table" for value in ("0.05", "1e30")
                         for seed in (0, 1)},
                      ("epochs=1,lr=2.24e+14", 0): "to", ("epochs=1,lr=2.24e+14", 1): "to"}  # "to train"
    assert "6 runs: 0 finished (reused), 4 from the committed table, 2 to train" in tuning
    assert "tuning round 2 of at most 3: later rounds depend on its scores" in tuning
    final = open_.split("plan tuned:")[1]
    assert "tuning over" not in final and "2 runs: 0 finished (reused), 2 to train" in final
