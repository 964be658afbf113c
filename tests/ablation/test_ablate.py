"""Ablations: exact cell expansion, resumable runs, parallel == serial, correct mean ± std."""

import math
import re

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from kdlab.ablation.ablate import (
    block_cells,
    grid_cells,
    parse_blocks,
    plan_ablation,
    remaining_seconds,
    run_ablation,
)
from kdlab.cli import app
from kdlab.errors import KdlabError
from kdlab.report.paper import PAPER_NUMBERS
from kdlab.report.tables import default_baseline, default_paper, markdown_table, paired_differences, summarise

DATA = {"dataset": "embedded", "subset": 128, "test_subset": 40, "batch_size": 32}


@pytest.fixture()
def train_recipe(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({
        "name": "abl", "data": DATA, "model": {"arch": "resnet_small", "width": 4}, "train": {"epochs": 1},
        "eval": {"n": 30, "steps": 2},
        "output": {"dir": str(tmp_path / "runs"), "table": str(tmp_path / "runs.csv")},
    }))
    return path


def test_block_presets_expand_to_the_intended_cells():
    cells = block_cells([2, 3, 4], cumulative=False)
    assert [c.label for c in cells] == ["block2", "block3", "block4", "block2+3+4"]
    assert cells[3].overrides == ("method.acm.blocks=[2, 3, 4]", "method.acm.block_weights=null")
    assert [c.label for c in block_cells([2, 3, 4], cumulative=True)] == ["block2", "block2+3", "block2+3+4"]


def test_grid_is_the_cartesian_product_and_keeps_list_values():
    cells = grid_cells(["train.lr=0.1,0.2", "method.acm.blocks=[2,3],[4]"])
    assert [c.overrides for c in cells] == [
        ("train.lr=0.1", "method.acm.blocks=[2,3]"), ("train.lr=0.1", "method.acm.blocks=[4]"),
        ("train.lr=0.2", "method.acm.blocks=[2,3]"), ("train.lr=0.2", "method.acm.blocks=[4]"),
    ]


def test_malformed_blocks_give_one_line_error_listing_the_models_blocks(tmp_path):
    with pytest.raises(KdlabError, match=r"'x' is not a block index; resnet_small has blocks 1, 2, 3, 4"):
        parse_blocks("2,x", [1, 2, 3, 4], "resnet_small")
    with pytest.raises(KdlabError, match="block 7 does not exist; resnet_small has blocks 1, 2, 3, 4"):
        parse_blocks("2,7", [1, 2, 3, 4], "resnet_small")
    recipe = tmp_path / "d.yaml"
    recipe.write_text("student: {arch: resnet_small, width: 4}\nteacher: {checkpoint: t.pt}\n")
    result = CliRunner().invoke(app, ["ablate", str(recipe), "--blocks", "2,9"])
    assert result.exit_code == 2 and "has blocks 1, 2, 3, 4" in result.output
    assert "Traceback" not in result.output


def test_bad_grid_value_fails_before_any_training(train_recipe):
    with pytest.raises(KdlabError, match="train.epochs"):
        plan_ablation(str(train_recipe), components=False, blocks=None, cumulative=False,
                      grid=["train.epochs=1,lots"], seeds=[0], attacks=["pgd"], overrides=[], name=None)


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


def test_mean_and_sample_std_over_seeds():
    frame = pd.DataFrame({"cell": ["a", "a", "a", "b"], "seed": [0, 1, 2, 0],
                          "clean_acc": [50.0, 52.0, 57.0, 40.0], "pgd_acc": [10.0, 10.0, 13.0, 5.0]})
    summary = summarise(frame).set_index("cell")
    assert summary.loc["a", "clean_acc_mean"] == pytest.approx(53.0)
    assert summary.loc["a", "clean_acc_std"] == pytest.approx(math.sqrt(((3**2) + 1 + 4**2) / 2))
    assert summary.loc["a", "pgd_acc_std"] == pytest.approx(math.sqrt((1 + 1 + 4) / 2))
    assert math.isnan(summary.loc["b", "clean_acc_std"]) and summary.loc["b", "seeds"] == 1
    text = markdown_table(frame)
    assert "| a | 3 | 53.00 ± 3.61 | 11.00 ± 1.73 |" in text and "| b | 1 | 40.00 | 5.00 |" in text


def test_paper_numbers_sit_beside_kdlabs():
    frame = pd.DataFrame({"cell": ["mixacm", "kd-only"], "seed": [0, 0], "clean_acc": [60.0, 61.0],
                          "pgd_acc": [20.0, 2.0]})
    text = markdown_table(frame, paper="mixacm-components")
    assert "| mixacm | 1 | 60.00 | 20.00 | 56.65 |" in text and "| kd-only | 1 | 61.00 | 2.00 | — |" in text
    # the supplement does not name its attack: the column must not claim PGD; first author Awais
    assert "| cell | seeds | clean | PGD | paper (robust, attack unstated) |" in text
    assert "Paper column: Awais et al., MixACM" in text and "Muhammad" not in text
    # every reference column was read from its paper: none is marked unverified
    assert all("unverified" not in entry["label"].lower() + entry["source"].lower()
               for entry in PAPER_NUMBERS.values())


def test_two_grids_over_one_recipe_write_two_tables(train_recipe, tmp_path):
    def grid_plan(grid):
        return plan_ablation(str(train_recipe), components=False, blocks=None, cumulative=False, grid=grid,
                             seeds=[0], attacks=["pgd"], overrides=[], name=None)

    lr, epochs = grid_plan(["train.lr=0.1,0.2"]), grid_plan(["train.epochs=1,2", "train.lr=0.1"])
    assert lr.table_path(tmp_path).name == "abl-grid-train.lr.csv"
    assert epochs.table_path(tmp_path).name == "abl-grid-train.epochs-train.lr.csv"


def test_paper_column_is_chosen_by_the_tables_contents():
    components = pd.DataFrame({"kind": ["components"], "cell": ["mixacm"], "seed": [0], "pgd_acc": [1.0]})
    feature_losses = pd.DataFrame({"kind": ["grid"] * 2, "cell": ["kind=l1", "kind=ssim"], "seed": [0, 0],
                                   "AP": [1.0, 2.0]})
    ssim_parts = pd.DataFrame({"kind": ["grid"], "cell": ["components=cs"], "seed": [0], "AP": [1.0]})
    assert default_paper(components) == "mixacm-components"
    assert default_paper(feature_losses) is None  # the SSIM paper's tables could not be read here
    assert default_paper(ssim_parts) is None


def test_eta_is_the_mean_cell_time_per_remaining_round():
    assert remaining_seconds([], remaining=4, jobs=2) is None
    assert remaining_seconds([100.0, 140.0], remaining=3, jobs=2) == pytest.approx(120.0 * 2)
    assert remaining_seconds([100.0], remaining=3, jobs=1) == pytest.approx(300.0)


def test_kdlab_ablate_reports_each_cell_with_an_eta_and_writes_the_table(train_recipe, tmp_path):
    out = tmp_path / "tables"
    result = CliRunner().invoke(app, ["ablate", str(train_recipe), "--grid", "train.lr=0.1,0.2", "--out", str(out),
                                      "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "[1/2] lr=0.1 seed 0" in result.output and re.search(r"1 left, eta \d+:\d\d:\d\d", result.output)
    assert "[2/2] lr=0.2 seed 0" in result.output
    table = pd.read_csv(out / "abl-grid-train.lr.csv")
    assert list(table["cell"]) == ["lr=0.1", "lr=0.2"] and (out / "abl-grid-train.lr.md").is_file()


def test_paired_differences_subtract_the_baseline_seed_by_seed():
    frame = pd.DataFrame({"kind": ["grid"] * 6, "cell": ["kind=none"] * 3 + ["kind=ssim"] * 3,
                          "seed": [0, 1, 2, 0, 1, 2], "AP": [40.0, 50.0, 45.0, 42.0, 51.0, 45.0]})
    deltas = paired_differences(frame, "kind=none", "AP")
    assert deltas["kind=ssim"].mean == pytest.approx(1.0)  # (2 + 1 + 0) / 3
    # sample std 1, n = 3: half-width t_{0.975,2} · 1 / sqrt(3) = 4.303 / 1.732 = 2.484
    assert deltas["kind=ssim"].low == pytest.approx(1.0 - 2.484, abs=1e-3)
    assert deltas["kind=ssim"].high == pytest.approx(1.0 + 2.484, abs=1e-3)
    assert deltas["kind=ssim"].pairs == 3 and not deltas["kind=ssim"].separated
    text = markdown_table(frame, baseline=default_baseline(frame))
    assert "Δ AP vs kind=none (paired, 95 % CI)" in text and "| +1.00 [-1.48, +3.48] not separated |" in text
    assert "± 5.00 | — |" in text  # the baseline's own row: 45 ± 5, no difference with itself
    with pytest.raises(KdlabError, match="baseline cell 'kind=l9' is not in the table: choose one of kind=none"):
        paired_differences(frame, "kind=l9", "AP")

    # two baselines (no feature loss and the best rival): one paired column each, same seeds paired
    rival = pd.concat([frame, pd.DataFrame({"kind": ["grid"] * 3, "cell": ["kind=pkd"] * 3, "seed": [0, 1, 2],
                                            "AP": [41.0, 52.0, 46.0], "wall_seconds": [60.0, 90.0, 120.0]})])
    text = markdown_table(rival, baseline=["kind=none", "kind=pkd"])
    assert "| Δ AP vs kind=none (paired, 95 % CI) | Δ AP vs kind=pkd (paired, 95 % CI) |" in text
    # ssim − pkd by seed: +1, −1, −1: mean −1/3, std 2/sqrt(3), half-width 4.303 · (2/sqrt(3)) / sqrt(3) = 2.869;
    # pkd − none: +1, +2, +1: mean 4/3, std 1/sqrt(3), half-width 1.434; wall 90 ± 30 s (pkd alone records it)
    assert "| kind=ssim | 3 | 46.00 ± 4.58 | — | +1.00 [-1.48, +3.48] not separated | -0.33 [-3.20, +2.54] not " \
           "separated |" in text
    assert "| kind=pkd | 3 | 46.33 ± 5.51 | 90 ± 30 | +1.33 [-0.10, +2.77] not separated | — |" in text
    assert "| cell | seeds | AP | wall s |" in text

    components = pd.DataFrame({"kind": ["components"] * 3, "cell": ["teacher", "student-ce", "acm"],
                               "seed": [0, 0, 0], "clean_acc": [40.0, 48.0, 40.0], "pgd_acc": [23.0, 0.0, 11.0]})
    text = markdown_table(components, baseline=default_baseline(components))
    assert "| teacher | 1 | 40.00 | 23.00 | — |" in text  # the shared teacher is not a paired run
    assert "| acm | 1 | 40.00 | 11.00 | +11.00 (1 seed: no interval) |" in text
    with pytest.raises(KdlabError, match="choose a student cell as --baseline"):
        paired_differences(components, "teacher", "pgd_acc")


def test_a_tuned_value_at_the_edge_of_its_grid_is_marked(tmp_path):
    from kdlab.report.tables import render, tuning_edges

    (tmp_path / "t-val.csv").write_text(
        'cell,seed,AP\n"kind=ssim,weight=0.2",0,1\n"kind=ssim,weight=2",0,2\n"kind=ssim,weight=20",0,3\n'
        '"kind=l2,weight=0.2",0,2\n"kind=l2,weight=2",0,3\n"kind=l2,weight=20",0,1\n'
        '"kind=mgd,weight=2e-6",0,3\n"kind=mgd,weight=2e-5",0,2\n"kind=mgd,weight=2e-4",0,1\n')
    frame = pd.DataFrame({"kind": ["grid"] * 3, "cell": ["kind=ssim", "kind=l2", "kind=mgd"], "seed": [0] * 3,
                          "AP": [50.0, 49.0, 48.0], "tuned": ["weight=20", "weight=2", "weight=2e-6"],
                          "tuned_on": ["t-val.csv"] * 3})
    assert tuning_edges(frame, tmp_path) == {"kind=ssim": "largest", "kind=mgd": "smallest"}
    frame.to_csv(tmp_path / "t-tuned.csv", index=False)
    markdown, _ = render(tmp_path / "t-tuned.csv")
    text = markdown.read_text()
    assert "| kind=ssim | 1 | weight=20 (largest tried) |" in text and "| kind=l2 | 1 | weight=2 |" in text
    assert "| kind=mgd | 1 | weight=2e-6 (smallest tried) |" in text and "a wider grid might" in text
    assert tuning_edges(frame.assign(tuned_on="missing.csv"), tmp_path) == {}  # no tuning table: nothing marked


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
