"""Commands that agree: kdlab table reads every CSV kdlab writes, Ctrl-C advice fits the command, help
reads well."""

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import kdlab.ablation.command
from kdlab.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
# the tables committed before the declared-study protocol (issue #24), kept as fixtures of real kdlab output
ARCHIVE = ROOT / "results" / "archive" / "2026-11"
WIDE = {"COLUMNS": "200"}


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], env=WIDE)


def test_kdlab_table_renders_the_committed_eval_csv():
    result = invoke("table", ARCHIVE / "eval.csv")
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if line.startswith("| model |"))
    assert {"attack", "dataset", "accuracy", "n"} <= {cell.strip() for cell in header.split("|")}
    assert "| quickstart-902054afee | resnet_small | embedded | pgd | 8.00 | 20 | 500 |" in result.output


def test_kdlab_table_renders_the_committed_runs_csv():
    result = invoke("table", ARCHIVE / "runs.csv")
    assert result.exit_code == 0, result.output
    assert result.output.count("\n| quickstart-teacher | quickstart-teacher-") >= 1
    assert "| name | key | kind | arch |" in result.output


def test_kdlab_table_still_renders_an_ablation_csv(tmp_path):
    csv = tmp_path / "skd-quickstart-grid-method.feature.kind.csv"
    shutil.copy(ARCHIVE / "ablations" / csv.name, csv)
    result = invoke("table", csv)
    assert result.exit_code == 0, result.output
    assert "kind=ssim" in result.output
    assert csv.with_suffix(".md").is_file() and csv.with_suffix(".png").is_file()


def test_kdlab_table_on_a_foreign_csv_says_in_one_line_which_csvs_it_accepts(tmp_path):
    foreign = tmp_path / "other.csv"
    foreign.write_text("a,b\n1,2\n")
    result = invoke("table", foreign)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "results/eval.csv" in result.output and "results/runs.csv" in result.output
    assert "ablation" in result.output


def test_eval_table_shows_the_latest_row_per_test_set(tmp_path):
    csv = tmp_path / "eval.csv"
    csv.write_text("model,dataset,data_root,attack,eps,n,seed,accuracy\n"
                   "m,imagefolder,/a,pgd,0.03,10,0,11.0\n"
                   "m,imagefolder,/b,pgd,0.03,10,0,22.0\n"
                   "m,imagefolder,/a,pgd,0.03,10,0,33.0\n")
    result = invoke("table", csv)
    assert result.exit_code == 0, result.output
    assert "33.00" in result.output and "22.00" in result.output and "11.00" not in result.output


def test_an_interrupted_ablation_says_to_rerun_the_same_command(tmp_path, monkeypatch):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {arch: resnet_small, width: 4}\n")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(kdlab.ablation.command, "run_ablation", interrupted)
    result = invoke("ablate", recipe, "--grid", "train.lr=0.1,0.2", "--out", tmp_path)
    assert result.exit_code == 130
    assert "rerun the same command to continue" in result.output and "--resume" not in result.output


@pytest.mark.parametrize("command", ["train", "distill"])
def test_help_shows_flags_as_flags_and_the_recipe_argument_in_capitals(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0
    usage = next(line for line in result.output.splitlines() if "Usage:" in line)
    assert usage.rstrip().endswith("[OPTIONS] RECIPE") and "{" not in result.output
    for flag in ("--resume", "--force"):
        line = next(line for line in result.output.splitlines() if flag in line)
        assert "<bool>" not in line, line
    assert "<int" in next(line for line in result.output.splitlines() if "--threads" in line)
