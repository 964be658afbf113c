"""kdlab verify on a tiny committed-results folder built here (not the real results/): it holds, then each planted
defect makes it exit 1 with a line naming the problem; archived tables are listed, not checked; declared studies
are checked against a fake Study (the real one lives in kdlab.ablation.study, another branch's work)."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml

from kdlab.report.html import build_report
from kdlab.report.tables import render
from kdlab.verify.checks import Table, check_study, committed_tables
from tests.helpers.failfast import assert_one_line_error, invoke

REPO = Path(__file__).resolve().parents[2]
PATCH = "diff --git a/kdlab/core.py b/kdlab/core.py\n--- a/kdlab/core.py\n+++ b/kdlab/core.py\n@@ -1 +1 @@\n-x = 1\n+x = 2\n"
DIGEST = hashlib.sha256(PATCH.encode()).hexdigest()[:16]
COMMAND = "kdlab ablate recipes/demo.yaml --grid train.lr=0.05,0.1 --seeds 0,1"
TABLE = "ablations/demo-grid-train.lr.csv"


@pytest.fixture()
def results(tmp_path) -> Path:
    """A checkout-like folder: recipes/demo.yaml and results/ with a 2-cell x 2-seed grid table whose rows record
    their command and its Markdown, runs.csv rows for its runs (one from a dirty tree, its patch in diffs/),
    eval.csv, the report and a README naming every file."""
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "demo.yaml").write_text(yaml.safe_dump({
        "name": "demo", "data": {"dataset": "embedded", "subset": 64, "test_subset": 20, "batch_size": 32},
        "model": {"arch": "resnet_small", "width": 4}, "train": {"epochs": 1}, "eval": {"n": 20, "steps": 1}}))
    results = tmp_path / "results"
    (results / "ablations").mkdir(parents=True)
    rows, runs = [], []
    for cell, lr in (("lr=0.05", "0.05"), ("lr=0.1", "0.1")):
        for seed in (0, 1):
            run_dir = f"results/runs/demo-lr_{lr}-s{seed}-k{seed}{lr[-1]}"
            dirty = (cell, seed) == ("lr=0.1", 1)
            commit, digest = ("abc1234-dirty", DIGEST) if dirty else ("abc1234", "")
            rows.append({"ablation": "demo", "kind": "grid", "cell": cell, "setting": f"train.lr={lr}", "seed": seed,
                         "clean_acc": 30.0 + seed + float(lr) * 10, "pgd_acc": 10.0 + seed, "run_dir": run_dir,
                         "git_commit": commit, "git_diff_sha256": digest, "command": COMMAND})
            runs.append({"name": f"demo-lr_{lr}-s{seed}", "run_dir": run_dir, "seed": seed, "git_commit": commit,
                         "git_diff_sha256": digest})
    pd.DataFrame(rows).to_csv(results / TABLE, index=False)
    pd.DataFrame(runs).to_csv(results / "runs.csv", index=False)
    pd.DataFrame([{"model": "demo", "attack": "pgd", "accuracy": 10.0, "git_commit": "abc1234"}]).to_csv(
        results / "eval.csv", index=False)
    (results / "diffs").mkdir()
    (results / "diffs" / f"{DIGEST}.patch").write_bytes(PATCH.encode())
    (results / "README.md").write_text("runs.csv, eval.csv, report.html and demo-grid-train.lr (csv, md, png)\n")
    render(results / TABLE)
    build_report(results)
    return results


def verify(results: Path, *flags):
    return invoke("verify", results, *flags)


def problems(result) -> list[str]:
    return [line for line in result.stdout.splitlines() if not line.startswith(("checked ", "archived, "))]


def test_a_sound_folder_verifies(results):
    result = verify(results)
    assert result.exit_code == 0, result.output
    assert "checked 3 tables (9 rows)" in result.stdout and "verified: every check holds" in result.stdout


def test_a_row_with_no_commit_fails(results):
    runs = pd.read_csv(results / "runs.csv", dtype=str, keep_default_na=False)
    runs.loc[2, "git_commit"] = ""
    runs.to_csv(results / "runs.csv", index=False)
    result = verify(results, "--no-report")
    assert result.exit_code == 1
    assert problems(result) == [("provenance: results/runs.csv row 3 (run demo-lr_0.1-s0-k01): names no commit "
                                "(git_commit empty)")]


def test_a_diverged_tuning_row_needs_its_own_commit_but_no_run(results):
    table = pd.read_csv(results / TABLE, dtype=str, keep_default_na=False)
    table.loc[0, ["run_dir", "clean_acc", "pgd_acc", "flag"]] = ["", "", "", "diverged"]
    table.to_csv(results / TABLE, index=False)
    render(results / TABLE)  # kdlab table, as after any change of a CSV
    assert verify(results, "--no-report").exit_code == 0  # no run, so no runs.csv row: fine
    table.loc[0, "git_commit"] = ""
    table.to_csv(results / TABLE, index=False)
    result = verify(results, "--no-report")
    assert result.exit_code == 1
    assert problems(result) == [(f"provenance: results/{TABLE} row 1 (cell lr=0.05 seed 0): names no commit "
                                "(git_commit empty)")]


def test_a_dirty_row_whose_patch_is_missing_or_altered_fails(results):
    patch = results / "diffs" / f"{DIGEST}.patch"
    patch.write_bytes(PATCH.encode() + b"+y = 3\n")
    altered = problems(verify(results, "--no-report"))
    actual = hashlib.sha256(PATCH.encode() + b"+y = 3\n").hexdigest()[:16]
    assert altered == [(f"provenance: results/{TABLE} row 4 (cell lr=0.1 seed 1): results/diffs/{DIGEST}.patch "
                       f"hashes to {actual}, not its git_diff_sha256 {DIGEST}"),
                       (f"provenance: results/runs.csv row 4 (run demo-lr_0.1-s1-k11): results/diffs/{DIGEST}.patch "
                       f"hashes to {actual}, not its git_diff_sha256 {DIGEST}")]
    patch.unlink()
    result = verify(results, "--no-report")
    assert result.exit_code == 1
    assert f"provenance: results/{TABLE} row 4 (cell lr=0.1 seed 1): abc1234-dirty: its patch " \
           f"results/diffs/{DIGEST}.patch is missing" in problems(result)


def test_a_run_with_no_runs_row_fails(results):
    runs = pd.read_csv(results / "runs.csv")
    runs.drop(index=0).to_csv(results / "runs.csv", index=False)
    result = verify(results, "--no-report")
    assert result.exit_code == 1
    assert problems(result) == [(f"runs: results/{TABLE} row 1 (cell lr=0.05 seed 0): its run demo-lr_0.05-s0-k05 "
                                "has no row in results/runs.csv")]


def test_a_table_whose_command_makes_other_cells_fails(results):
    table = pd.read_csv(results / TABLE)
    table["command"] = COMMAND.replace("--seeds 0,1", "--seeds 0,1,2")  # the command would run a third seed
    table.to_csv(results / TABLE, index=False)
    result = verify(results, "--no-report")
    assert result.exit_code == 1
    assert problems(result) == [(f"command: results/{TABLE}: its regenerate commands make 6 (cell, seed) pairs "
                                "against the table's 4; not in the table: lr=0.05 s2, lr=0.1 s2")]
    table["command"] = "kdlab ablate recipes/demo.yaml --grid train.lr=0.05,0.2 --seeds 0,1"
    table.to_csv(results / TABLE, index=False)
    assert problems(verify(results, "--no-report")) == [
        (f"command: results/{TABLE}: its regenerate commands make 4 (cell, seed) pairs against the table's 4; not "
        "in the table: lr=0.2 s0, lr=0.2 s1; in the table only: lr=0.1 s0, lr=0.1 s1")]


def test_a_table_with_no_command_or_another_tables_command_fails(results):
    table = pd.read_csv(results / TABLE)
    table["command"] = "kdlab ablate recipes/demo.yaml --grid train.epochs=1,2 --seeds 0,1"
    table.to_csv(results / TABLE, index=False)
    assert problems(verify(results, "--no-report")) == [
        (f"command: results/{TABLE}: recorded command '{table['command'][0]}': it writes "
        "demo-grid-train.epochs.csv in results/ablations, not this table")]
    table.drop(columns="command").to_csv(results / TABLE, index=False)  # no command, no README, no plan hash
    (results.parent / "recipes" / "demo.yaml").unlink()
    [line] = problems(verify(results, "--no-report"))
    assert line.startswith(f"command: results/{TABLE}: no command regenerates it: ") and "no recipe named demo" in line


def test_a_stale_report_fails(results):
    table = pd.read_csv(results / TABLE)
    table.loc[0, "pgd_acc"] = 55.0  # a number changed after the page was written
    table.to_csv(results / TABLE, index=False)
    render(results / TABLE)  # kdlab table: its Markdown is current again
    result = verify(results)
    assert result.exit_code == 1
    [line] = problems(result)
    assert line.startswith("report: results/report.html: stale: kdlab report results now writes another page")
    build_report(results)
    assert verify(results).exit_code == 0


def test_a_table_whose_markdown_is_stale_or_missing_fails(results):
    """The .md is what a reader reads: a CSV changed after it (or code that renders it otherwise) fails, naming the
    first line that differs (the means' row of lr=0.05: line 4 of the Markdown) and the command that fixes it."""
    table = pd.read_csv(results / TABLE)
    table.loc[0, "pgd_acc"] = 55.0
    table.to_csv(results / TABLE, index=False)
    markdown = (results / TABLE).with_suffix(".md")
    old = markdown.read_text().splitlines()
    line = next(i for i, text in enumerate(old, start=1) if text.startswith("| lr=0.05 |"))
    assert problems(verify(results, "--no-report"))[0] == (
        f"markdown: results/{TABLE[:-4]}.md: stale: kdlab table results/{TABLE} now writes another table (first "
        f"difference on line {line}); rerun it and commit the .md and .png")
    render(results / TABLE)  # kdlab table: both current
    markdown.unlink()
    assert problems(verify(results, "--no-report")) == [
        f"markdown: results/{TABLE[:-4]}.md: missing: run kdlab table results/{TABLE} and commit it"]
    render(results / TABLE)
    assert verify(results, "--no-report").exit_code == 0


def test_a_plot_that_no_longer_shows_its_csv_or_records_nothing_fails(results):
    """The .png is what a reader looks at: it records a digest of what it draws (the cells' means, stds, labels
    and marks), which verify computes again from the CSV. A number changed after it was drawn (here with the
    Markdown rewritten alone) fails, as does a plot with no record or none at all; a column the plot does not
    draw (the rows' command) may change."""
    from matplotlib.figure import Figure

    from kdlab.report.plots import png_source

    png = (results / TABLE).with_suffix(".png")
    drawn = png_source(png).split()[-1]
    table = pd.read_csv(results / TABLE)
    table["command"] = COMMAND + " --jobs 2"  # not drawn: the plot still shows this CSV
    table.to_csv(results / TABLE, index=False)
    assert verify(results, "--no-report").exit_code == 0
    table.loc[0, "pgd_acc"] = 55.0  # drawn
    table.to_csv(results / TABLE, index=False)
    render(results / TABLE, plot=False)  # the Markdown alone: current again
    [line] = problems(verify(results, "--no-report"))
    assert line.startswith(f"plot: results/{TABLE[:-4]}.png: stale: it shows other numbers than its CSV now gives "
                           f"({drawn[:12]}, now ") and line.endswith(f"rerun kdlab table results/{TABLE} and commit the .png")
    Figure().savefig(png, format="png")  # a picture that says nothing of its source
    assert problems(verify(results, "--no-report")) == [
        (f"plot: results/{TABLE[:-4]}.png: stale: it records no source (drawn before plots recorded one); rerun "
         f"kdlab table results/{TABLE} and commit the .png")]
    png.unlink()
    assert problems(verify(results, "--no-report")) == [
        f"plot: results/{TABLE[:-4]}.png: missing: run kdlab table results/{TABLE} and commit it"]
    render(results / TABLE)
    assert verify(results, "--no-report").exit_code == 0


def test_an_unindexed_file_fails(results):
    (results / "extra.csv").write_text("a\n1\n")
    assert problems(verify(results, "--no-report")) == ["index: results/README.md: does not name results/extra.csv"]


def test_archived_tables_are_listed_not_verified(results):
    (results / "archive").mkdir()
    pd.DataFrame([{"ablation": "old", "cell": "x", "seed": 0, "git_commit": ""}]).to_csv(
        results / "archive" / "old.csv", index=False)
    (results / "README.md").write_text((results / "README.md").read_text() + "archive/old.csv\n")
    result = verify(results)
    assert result.exit_code == 0, result.output
    assert "archived, not verified: results/archive/old.csv" in result.stdout


def test_a_missing_folder_is_a_usage_error(tmp_path):
    assert_one_line_error(verify(tmp_path / "nowhere"), "results folder", "not found")


# --------------------------------------------------------------------------- declared studies (fake Study)
@dataclass
class FakeStudy:
    name: str
    digest: str
    declared: set

    def cells(self) -> set:
        return self.declared

    def fingerprint(self, table: str = "") -> None:
        return None  # the stand-in declares no plan fingerprint: its rows are checked for digest and cells only


def test_a_declared_study_must_match_its_table(results):
    frame = pd.read_csv(results / TABLE, dtype=str, keep_default_na=False)
    frame["study"], frame["study_sha256"] = "demo", "d1"
    frame.to_csv(results / TABLE, index=False)
    [table] = [t for t in committed_tables(results)[0] if t.kind == "ablation"]
    cells = {("lr=0.05", 0), ("lr=0.05", 1), ("lr=0.1", 0), ("lr=0.1", 1)}
    assert [p.line() for p in check_study(table, results, lambda path: FakeStudy("demo", "d1", cells))] == [
        ("study: results/ablations/demo-grid-train.lr.csv: records study demo but recipes/studies/demo.yaml is "
        "missing")]
    (results.parent / "recipes" / "studies").mkdir()
    (results.parent / "recipes" / "studies" / "demo.yaml").write_text("name: demo\n")
    seen = []
    assert check_study(table, results, lambda path: seen.append(path) or FakeStudy("demo", "d1", cells)) == []
    assert seen == [results.parent / "recipes" / "studies" / "demo.yaml"]
    lines = [p.line() for p in check_study(table, results, lambda path: FakeStudy("demo", "d2", cells - {
        ("lr=0.1", 1)} | {("lr=0.2", 0)}))]
    assert lines == [
        (f"study: results/{TABLE}: records study_sha256 d1 but recipes/studies/demo.yaml has d2 (the study changed "
        "after the table was written: declare a new study)"),
        (f"study: results/{TABLE}: study demo declares 4 (cell, seed) pairs against the table's 4; not in the "
        "table: lr=0.2 s0; in the table only: lr=0.1 s1")]


def test_a_study_table_is_not_checked_against_a_command(results):
    frame = pd.read_csv(results / TABLE)
    frame["study"], frame["study_sha256"], frame["command"] = "demo", "d1", "not a command"
    frame.to_csv(results / TABLE, index=False)
    table = Table(results / TABLE, "ablation", pd.read_csv(results / TABLE, dtype=str, keep_default_na=False))
    from kdlab.verify.checks import check_command

    assert check_command(table, results, parse=lambda arguments: pytest.fail("planned a study's table")) == []


# --------------------------------------------------------------------------- the real committed tree
@pytest.mark.slow  # rebuilds the report of every committed table (tens of seconds)
def test_the_committed_results_verify():
    result = invoke("verify", REPO / "results")
    assert result.exit_code == 0, result.output


def test_a_real_declared_study_is_checked_through_kdlab_ablation_study(results):
    """The shipped study file read by kdlab.ablation.study: a table holding exactly its declared (cell, seed) set
    and digest verifies; one seed short is a study in progress (said, with what is left); a row it does not
    declare does not verify."""
    from kdlab.ablation.study import load_study
    from kdlab.verify.checks import load_declared_study

    source = REPO / "recipes" / "studies" / "mixacm_cpu_blocks.yaml"
    study = load_study(source)
    rows = [{"ablation": study.name, "kind": "blocks", "cell": cell, "seed": seed, "study": study.name,
             "study_sha256": study.digest} for cell, seed in sorted(study.cells())]
    path = results / "ablations" / f"{study.name}.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    table = Table(path, "ablation", pd.read_csv(path, dtype=str, keep_default_na=False))
    studies = results.parent / "recipes" / "studies"
    studies.mkdir()
    shutil.copy(source, studies / source.name)
    shutil.copytree(REPO / "recipes", results.parent / "recipes", dirs_exist_ok=True)  # the recipe it names
    assert check_study(table, results, load_declared_study) == []
    pd.DataFrame(rows[1:]).to_csv(path, index=False)
    table = Table(path, "ablation", pd.read_csv(path, dtype=str, keep_default_na=False))
    notes = []
    assert check_study(table, results, load_declared_study, notes) == []
    first_cell, first_seed = min(study.cells())
    assert notes == [
        (f"in progress: results/ablations/{study.name}.csv holds {len(rows) - 1} of the {len(rows)} runs study "
        f"{study.name} declares (left: {first_cell} s{first_seed})")]
    pd.DataFrame(rows + [{**rows[0], "seed": 99}]).to_csv(path, index=False)
    table = Table(path, "ablation", pd.read_csv(path, dtype=str, keep_default_na=False))
    [problem] = check_study(table, results, load_declared_study)
    assert "in the table only: " in problem.what and f"{first_cell} s99" in problem.what


def test_a_tune_command_plans_its_tuning_grid_and_its_tuned_table(results):
    from kdlab.cli.verify import ablate_flags
    from kdlab.verify.commands import planned_cells

    command = ("kdlab ablate recipes/demo.yaml --grid train.lr=0.05,0.1 --tune train.weight_decay=0,0.1 "
               "--tune-val-size 16 --seeds 3,4")
    val = results / "ablations" / "demo-grid-train.lr-train.weight_decay-val.csv"
    assert planned_cells(command, val, results, ablate_flags) == {
        ("lr=0.05,weight_decay=0", 3), ("lr=0.05,weight_decay=0.1", 3), ("lr=0.1,weight_decay=0", 3),
        ("lr=0.1,weight_decay=0.1", 3)}  # every cell x every value, on the first seed
    tuned = results / "ablations" / "demo-grid-train.lr-tuned.csv"
    assert planned_cells(command, tuned, results, ablate_flags) == {("lr=0.05", 3), ("lr=0.05", 4), ("lr=0.1", 3),
                                                                     ("lr=0.1", 4)}


def test_study_rows_under_another_plan_fingerprint_fail(results):
    """Rows whose ``plan`` is not the fingerprint kdlab ablate computes for the study here would be trained again
    (before the fingerprint ignored where the checkout lives, every table committed from another folder was in
    this state): a problem naming both fingerprints."""
    from kdlab.ablation.study import load_study
    from kdlab.verify.checks import load_declared_study

    source = REPO / "recipes" / "studies" / "mixacm_cpu_blocks.yaml"
    # the study and the recipes it names, in another folder
    shutil.copytree(REPO / "recipes", results.parent / "recipes", dirs_exist_ok=True)
    study = load_study(results.parent / "recipes" / "studies" / source.name)
    expected = study.fingerprint()
    assert expected == load_study(source).fingerprint()  # the same study in another folder: the same fingerprint
    rows = [{"ablation": study.name, "kind": "blocks", "cell": cell, "seed": seed, "study": study.name,
             "study_sha256": study.digest, "plan": expected} for cell, seed in sorted(study.cells())]
    path = results / "ablations" / f"{study.name}.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    table = Table(path, "ablation", pd.read_csv(path, dtype=str, keep_default_na=False))
    assert check_study(table, results, load_declared_study) == []
    rows[0]["plan"] = "0123456789"
    pd.DataFrame(rows).to_csv(path, index=False)
    table = Table(path, "ablation", pd.read_csv(path, dtype=str, keep_default_na=False))
    [problem] = check_study(table, results, load_declared_study)
    assert problem.what.startswith(f"records plan 0123456789 but study {study.name} plans {expected} here: "
                                   "kdlab ablate would not recognise those rows")
