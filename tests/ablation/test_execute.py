"""Executing an ablation (kdlab.ablation.execute, kdlab.ablation.command): resumable cells, parallel == serial,
progress lines with an ETA, a diverging tuning value recorded in every executor."""

import math
import re

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from kdlab.ablation.execute import run_ablation
from kdlab.ablation.grid import plan_ablation
from kdlab.cli.main import app


def plan(recipe, seeds=(0,)):
    return plan_ablation(str(recipe), components=False, blocks=None, cumulative=False,
                         grid=["train.lr=0.05,0.1"], seeds=list(seeds), attacks=["pgd"], overrides=[], name=None)


def accuracy_rows(table):
    frame = pd.read_csv(table)
    return frame[["cell", "seed", "clean_acc", "pgd_acc"]].to_dict("records")


def test_killed_ablation_reruns_only_missing_cells_and_gives_the_same_table(train_recipe, tmp_path, monkeypatch):
    import kdlab.runs.run

    calls = []
    real_fit = kdlab.runs.run.fit
    monkeypatch.setattr(kdlab.runs.run, "fit", lambda *a, **k: calls.append(1) or real_fit(*a, **k))

    def die_after_first(label, seed, summary):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_ablation(plan(train_recipe, seeds=(0, 1)), tmp_path / "abl", threads=1, on_cell=die_after_first)
    assert len(calls) == 1
    table = run_ablation(plan(train_recipe, seeds=(0, 1)), tmp_path / "abl", threads=1)
    assert len(calls) == 4  # the finished cell was reused, the three missing ones ran
    fresh = run_ablation(plan(train_recipe, seeds=(0, 1)), tmp_path / "again", threads=1)
    assert len(calls) == 4  # everything cached now
    assert accuracy_rows(table) == accuracy_rows(fresh)
    assert len(accuracy_rows(table)) == 4
    assert table.with_suffix(".md").is_file() and table.with_suffix(".png").stat().st_size > 0


def test_parallel_jobs_give_the_same_rows_as_serial(train_recipe, tmp_path):
    serial = run_ablation(plan(train_recipe), tmp_path / "serial", jobs=1, threads=1)
    raw = yaml.safe_load(train_recipe.read_text())
    raw["output"]["dir"] = str(tmp_path / "runs-parallel")  # fresh run directories: really retrain
    parallel_recipe = tmp_path / "train.yaml"
    parallel_recipe.write_text(yaml.safe_dump(raw))
    parallel = run_ablation(plan(parallel_recipe), tmp_path / "parallel", jobs=2, threads=1)
    assert accuracy_rows(serial) == accuracy_rows(parallel)


def test_kdlab_ablate_reports_each_cell_with_an_eta_and_writes_the_table(train_recipe, tmp_path):
    out = tmp_path / "tables"
    result = CliRunner().invoke(app, ["ablate", str(train_recipe), "--grid", "train.lr=0.1,0.2", "--out", str(out),
                                      "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "[1/2] lr=0.1 seed 0" in result.output and re.search(r"1 left, eta \d+:\d\d:\d\d", result.output)
    assert "[2/2] lr=0.2 seed 0" in result.output
    table = pd.read_csv(out / "abl-grid-train.lr.csv")
    assert list(table["cell"]) == ["lr=0.1", "lr=0.2"] and (out / "abl-grid-train.lr.md").is_file()


@pytest.mark.parametrize("executor", [("--jobs", "1"), ("--jobs", "2"), ("--executor", "submitit-local")])
def test_a_diverging_tuning_value_is_a_flagged_row_and_the_grid_goes_on(tmp_path, executor):
    """λ (here the learning rate) that makes the loss non-finite is a tuning result, not the end of the grid, in
    every executor; the same divergence in the seeds' table still stops it."""
    from kdlab.report.tables import markdown_table

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "tiny", "data": {"dataset": "embedded", "subset": 64, "test_subset": 20, "batch_size": 32},
        "model": {"arch": "resnet_small", "width": 4}, "train": {"epochs": 1}, "eval": {"n": 10, "steps": 1},
        "output": {"dir": str(tmp_path / "runs"), "table": str(tmp_path / "runs.csv")}}))
    out = tmp_path / "tables"
    command = ["ablate", str(recipe), "--grid", "train.epochs=1", "--tune-val-size", "16", "--seeds", "0",
               "--threads", "1", "--out", str(out), *executor]
    result = CliRunner().invoke(app, command + ["--tune", "train.lr=1e30,0.05"])
    assert result.exit_code == 0, result.output
    val = pd.read_csv(out / "tiny-grid-train.epochs-train.lr-val.csv")
    diverged = val[val["cell"] == "epochs=1,lr=1e30"].iloc[0]
    assert diverged["flag"] == "diverged" and math.isnan(diverged["pgd_acc"])
    assert "epochs=1,lr=1e30 ⚠ diverged" in markdown_table(val)
    tuned = pd.read_csv(out / "tiny-grid-train.epochs-tuned.csv")
    assert tuned["tuned"].tolist() == ["lr=0.05"]

    result = CliRunner().invoke(app, ["ablate", str(recipe), "--grid", "train.epochs=1", "--seeds", "0", "--threads",
                                      "1", "--set", "train.lr=1e30", "--out", str(tmp_path / "t2")])
    assert result.exit_code == 2 and "loss became" in result.output  # outside tuning it still stops


def test_final_evaluation_rows_go_to_the_results_folder_that_holds_the_diffs(tmp_path):
    """A study's final-evaluation rows and its dirty rows' patches belong to one results folder: the one above an
    ``ablations`` folder, else the --out folder itself (before: always the folder above --out)."""
    from kdlab.ablation.execute import final_eval_rows
    from kdlab.results import results_folder

    for out, folder in ((tmp_path / "results" / "ablations", tmp_path / "results"),
                        (tmp_path / "mine" / "tables", tmp_path / "mine" / "tables")):
        assert final_eval_rows(out / "study.csv") == folder / "eval.csv"
        assert results_folder(out / "study.csv") == folder  # where its diffs/ go


def test_a_rerun_over_fewer_cells_or_seeds_keeps_the_tables_other_rows(train_recipe, tmp_path):
    """Recording a run rewrites the table; the rows of cells or seeds the rerun does not cover stay as they were.
    Before, they were dropped: replaying a tuning's round 1 (a plan of round 1's cells) emptied its later rounds
    from the table, and on a checkout without their run directories the next round retrained them."""
    from dataclasses import replace

    from kdlab.ablation.table import AblationTable

    out = tmp_path / "abl"
    full = plan(train_recipe, seeds=(0, 1))
    table = run_ablation(full, out, threads=1)
    before = pd.read_csv(table)
    assert len(before) == 4
    # round 1 of a tuning: fewer cells under the grid's fingerprint (kdlab.ablation.tuning), and fewer seeds
    first = replace(full, seeds=[0], cells=full.cells[:1], fixed_fingerprint=full.fingerprint)
    rerun = AblationTable(first, out)
    assert rerun.path == table
    row = before[(before["cell"] == full.cells[0].label) & (before["seed"] == 0)].iloc[0]
    rerun.record(full.cells[0], 0, {"clean_acc": row["clean_acc"], "pgd_acc": row["pgd_acc"],
                                    "run_dir": row["run_dir"]})
    after = pd.read_csv(table)
    assert sorted(zip(after["cell"], after["seed"])) == sorted(zip(before["cell"], before["seed"]))
    accuracy = ["cell", "seed"]
    assert after.set_index(accuracy)["pgd_acc"].to_dict() == before.set_index(accuracy)["pgd_acc"].to_dict()


def test_recording_a_reused_run_whose_row_the_table_holds_writes_nothing(train_recipe, tmp_path, monkeypatch):
    """A rerun over finished runs (a tuning's rounds replayed on restart: 182 rows re-rendered, about 20 CPU-minutes
    for methods_cpu) leaves the table untouched; a changed row is written."""
    import kdlab.report.tables

    out = tmp_path / "abl"
    table = run_ablation(plan(train_recipe, seeds=(0, 1)), out, threads=1)
    before = table.read_bytes()
    writes = []
    real = kdlab.report.tables.write_ablation_outputs
    monkeypatch.setattr(kdlab.report.tables, "write_ablation_outputs",
                        lambda *a, **k: writes.append(1) or real(*a, **k))
    run_ablation(plan(train_recipe, seeds=(0, 1)), out, threads=1)
    assert writes == [] and table.read_bytes() == before
    frame = pd.read_csv(table)
    frame.loc[0, "pgd_acc"] = 99.0  # the table says something else than the run: the run's row is written again
    frame.to_csv(table, index=False)
    run_ablation(plan(train_recipe, seeds=(0, 1)), out, threads=1)
    assert writes and pd.read_csv(table).loc[0, "pgd_acc"] != 99.0


def test_a_diverged_row_leaves_the_other_rows_text_as_written(train_recipe, tmp_path):
    """Rewriting the table after a diverged run (no best epoch, no n) kept every other row's counts as integers
    and its versions and digests as text: before, pandas read a count column with a blank as floats, so every
    committed row changed (``5`` -> ``5.0``, ``1000`` -> ``1000.0``) and a CUDA ``12.10`` became ``12.1``."""
    import csv

    from kdlab.ablation.table import AblationTable

    out = tmp_path / "abl"
    grid = plan(train_recipe, seeds=(0, 1))
    finished = {"clean_acc": 41.5, "pgd_acc": 20.25, "best_epoch": 5, "eval_n": 1000, "eval_steps": 20,
                "torch_threads": 1, "cuda": "12.10", "git_commit": "0123456789", "run_dir": "runs/a"}
    AblationTable(grid, out).record(grid.cells[0], 0, finished)
    AblationTable(grid, out).record(grid.cells[1], 0, {"flag": "diverged at step 3", "run_dir": "runs/b"})
    AblationTable(grid, out).record(grid.cells[0], 1, {**finished, "run_dir": "runs/c"})  # read back, rewritten
    with grid.table_path(out).open(newline="") as stream:
        rows = {(row["cell"], row["seed"]): row for row in csv.DictReader(stream)}
    for seed in ("0", "1"):
        row = rows[(grid.cells[0].label, seed)]
        assert (row["best_epoch"], row["eval_n"], row["eval_steps"], row["torch_threads"]) == ("5", "1000", "20", "1")
        assert (row["cuda"], row["git_commit"], row["clean_acc"]) == ("12.10", "0123456789", "41.5")
    diverged = rows[(grid.cells[1].label, "0")]
    assert (diverged["best_epoch"], diverged["eval_n"], diverged["cuda"]) == ("", "", "")
