"""End to end on the embedded real CIFAR-10 subset: teacher cache, run directory, results row, resume."""

import csv
import json
from pathlib import Path

import pytest
import yaml

from kdlab.config.recipe import load_recipe
from kdlab.errors import KdlabError
from kdlab.runs.run import run_recipe
from tests.helpers.resume import best_weights_equal, interrupted_then_resumed

DATA = {"dataset": "embedded", "subset": 200, "val_size": 40, "test_subset": 60, "batch_size": 32}
EVAL = {"n": 40, "steps": 3}


def write(path: Path, payload: dict) -> Path:
    path.write_text(yaml.safe_dump(payload))
    return path


@pytest.fixture()
def recipes(tmp_path):
    output = {"dir": str(tmp_path / "runs"), "table": str(tmp_path / "runs.csv")}
    teacher = write(tmp_path / "teacher.yaml", {
        "name": "tiny-teacher", "data": DATA, "model": {"arch": "resnet_small", "width": 4},
        "train": {"epochs": 2, "adversarial": {"method": "fgsm-rs"}}, "eval": EVAL, "output": output,
    })
    student = write(tmp_path / "student.yaml", {
        "name": "tiny-student", "data": DATA, "teacher": {"recipe": str(teacher)},
        "student": {"arch": "resnet_small", "width": 4}, "train": {"epochs": 2}, "eval": EVAL, "output": output,
    })
    return tmp_path, teacher, student


def test_distill_trains_teacher_once_and_records_everything(recipes):
    tmp_path, _, student = recipes
    outcome = run_recipe(load_recipe(student))
    run_dir = outcome.run_dir
    for name in ("recipe.yaml", "run.json", "metrics.csv", "best.pt", "last.pt", "summary.json"):
        assert (run_dir / name).is_file(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert 0 <= summary["pgd_acc"] <= summary["clean_acc"] <= 100
    assert summary["teacher_clean_acc"] is not None and summary["versions"]["torch"].startswith("2.14.1")
    assert summary["git_commit"] and summary["seed"] == 0
    # a distilled student is chosen on validation PGD accuracy; the epoch and value are recorded
    assert summary["select"] == "pgd" and 1 <= summary["best_epoch"] <= 2
    with open(run_dir / "metrics.csv", newline="") as stream:
        history = list(csv.DictReader(stream))
    assert float(history[summary["best_epoch"] - 1]["val_pgd"]) == summary["val_score"]
    assert max(float(row["val_pgd"]) for row in history) == summary["val_score"]
    saved = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    assert saved["method"]["acm"]["blocks"] == [2, 3, 4] and saved["train"]["epochs"] == 2

    with open(tmp_path / "runs.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [row["kind"] for row in rows] == ["train", "distill"]
    assert all(row["clean_acc"] and row["pgd_acc"] for row in rows)

    again = run_recipe(load_recipe(student))  # finished: reused, teacher not retrained, no new row
    assert again.reused and again.run_dir == run_dir
    with open(tmp_path / "runs.csv", newline="") as stream:
        assert len(list(csv.DictReader(stream))) == 2


def test_same_recipe_under_another_name_reuses_the_finished_run(recipes):
    tmp_path, teacher, _ = recipes
    first = run_recipe(load_recipe(teacher))
    renamed = run_recipe(load_recipe(teacher, ["name=also-the-teacher"]))
    assert renamed.reused and renamed.run_dir == first.run_dir
    assert not list((tmp_path / "runs").glob("also-the-teacher-*/"))
    changed = run_recipe(load_recipe(teacher, ["name=also-the-teacher", "train.epochs=1"]))
    assert not changed.reused and changed.run_dir.name.startswith("also-the-teacher-")


def test_changed_teacher_recipe_means_a_new_teacher(recipes):
    _tmp_path, teacher, _student = recipes
    first = run_recipe(load_recipe(teacher))
    changed = run_recipe(load_recipe(teacher, ["train.epochs=1"]))
    assert first.run_dir != changed.run_dir


def test_unfinished_run_needs_resume_or_force(recipes):
    _tmp_path, teacher, _ = recipes
    recipe = load_recipe(teacher)
    outcome = run_recipe(recipe)
    (outcome.run_dir / "summary.json").unlink()
    with pytest.raises(KdlabError, match="--resume"):
        run_recipe(recipe)
    resumed = run_recipe(recipe, resume=True)  # every epoch is done: resumes straight to evaluation
    assert resumed.summary["clean_acc"] == outcome.summary["clean_acc"]
    assert resumed.summary["pgd_acc"] == outcome.summary["pgd_acc"]


def test_resumed_run_equals_uninterrupted_run(recipes):
    tmp_path, teacher, _ = recipes
    straight = run_recipe(load_recipe(teacher, ["train.epochs=3"]))
    other = load_recipe(teacher, ["train.epochs=3", f"output.dir={tmp_path}/runs2", f"output.table={tmp_path}/t2.csv"])
    resumed = interrupted_then_resumed(other, stop_epoch=2)
    assert best_weights_equal(straight, resumed)
    assert resumed.summary["clean_acc"] == straight.summary["clean_acc"]
    assert resumed.summary["pgd_acc"] == straight.summary["pgd_acc"]


REAL_CIFAR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cifar10-jpeg"


@pytest.mark.skipif(not REAL_CIFAR.is_dir(), reason="real CIFAR-10 copy not present at ../shared/data")
def test_training_on_real_cifar10_subset_learns(tmp_path):
    recipe = write(tmp_path / "real.yaml", {
        "name": "real", "data": {"dataset": "imagefolder", "root": str(REAL_CIFAR), "subset": 2000,
                                 "test_subset": 500, "batch_size": 64},
        "model": {"arch": "resnet_small", "width": 8}, "train": {"epochs": 4, "lr": 0.05},
        "eval": {"n": 500, "attacks": ["clean"]},
        "output": {"dir": str(tmp_path / "runs"), "table": str(tmp_path / "runs.csv")},
    })
    summary = run_recipe(load_recipe(recipe)).summary
    assert summary["clean_acc"] > 30.0  # chance is 10%


def test_kdlab_eval_on_a_run_directory_defaults_to_clean_and_pgd(recipes):
    from typer.testing import CliRunner

    from kdlab.cli.main import app

    tmp_path, teacher, _ = recipes
    outcome = run_recipe(load_recipe(teacher))
    out = tmp_path / "eval.csv"
    result = CliRunner().invoke(app, ["eval", str(outcome.run_dir), "--n", "40", "--steps", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    with open(out, newline="") as stream:
        rows = {row["attack"]: row for row in csv.DictReader(stream)}
    assert set(rows) == {"clean", "pgd"}
    assert float(rows["clean"]["accuracy"]) == pytest.approx(outcome.summary["clean_acc"])
    assert float(rows["pgd"]["accuracy"]) == pytest.approx(outcome.summary["pgd_acc"])  # same images, seed, steps
    assert float(rows["pgd"]["accuracy"]) <= float(rows["clean"]["accuracy"])
