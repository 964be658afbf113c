"""Shipped recipes: run by name, listed, copied out; and the package working outside the repository."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kdlab.config import shipped
from kdlab.config.recipe import load_recipe
from tests.helpers.failfast import assert_one_line_error, invoke

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def fake_shipped(tmp_path, monkeypatch):
    """A shipped-recipes folder with a distillation recipe whose data.root and teacher are relative paths."""
    folder = tmp_path / "pkg" / "recipes"
    folder.mkdir(parents=True)
    (tmp_path / "pkg" / "data").mkdir()
    (folder / "teach.yaml").write_text("# a teacher\nmodel: {arch: resnet_small}\ndata: {dataset: embedded}\n")
    (folder / "stud.yaml").write_text(
        "# a student, one line\n# second line\nstudent: {arch: resnet_small}\n"
        "teacher: {recipe: teach.yaml}   # the teacher\n"
        "data:\n  dataset: imagefolder\n  root: ../data   # relative to this folder\n")
    (folder / "gone.yaml").write_text("model: {arch: resnet_small}\ndata: {dataset: imagefolder, root: ../nope}\n")
    monkeypatch.setattr(shipped, "shipped_dir", lambda: folder)
    return folder


def test_listing_names_kind_and_first_comment_line(fake_shipped):
    found = {r.name: r for r in shipped.shipped_recipes()}
    assert sorted(found) == ["gone", "stud", "teach"]
    assert (found["stud"].kind, found["stud"].summary) == ("distill", "a student, one line")
    assert (found["teach"].kind, found["gone"].summary) == ("train", "")
    result = invoke("recipes")
    assert result.exit_code == 0, result.output
    lines = [line.split() for line in result.output.splitlines()[1:]]
    assert [line[:2] for line in lines] == [["gone", "train"], ["stud", "distill"], ["teach", "train"]]


def test_a_file_wins_over_a_shipped_name_and_a_bare_name_finds_the_shipped_one(fake_shipped, tmp_path,
                                                                               monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert shipped.resolve_recipe("stud") == fake_shipped / "stud.yaml"
    assert shipped.resolve_recipe("stud.yaml") == fake_shipped / "stud.yaml"
    (tmp_path / "stud.yaml").write_text("model: {arch: resnet_small}\n")
    assert shipped.resolve_recipe("stud.yaml") == Path("stud.yaml")
    assert shipped.resolve_recipe("sub/stud.yaml") == Path("sub/stud.yaml")  # a path: left to the loader
    assert_one_line_error(invoke("train", "tech"), "recipe 'tech' is not a file here nor a shipped recipe",
                          "did you mean 'teach'", "kdlab recipes")


def test_copy_keeps_comments_brings_the_teacher_and_resolves_like_the_original(fake_shipped, tmp_path):
    original = load_recipe(fake_shipped / "stud.yaml")
    written, notes = shipped.copy_recipe("stud", tmp_path / "mine" / "my.yaml")
    assert written == [tmp_path / "mine" / "my.yaml", tmp_path / "mine" / "teach.yaml"] and notes == []
    text = written[0].read_text()
    assert text.startswith("# a student, one line\n# second line\n") and "# the teacher" in text
    assert f"root: {(tmp_path / 'pkg' / 'data').as_posix()}   # relative to this folder" in text
    copy = load_recipe(written[0])
    assert copy.data.root == original.data.root == os.path.abspath(tmp_path / "pkg" / "data")
    assert copy.teacher.recipe == str(tmp_path / "mine" / "teach.yaml")
    assert Path(copy.teacher.recipe).read_text() == (fake_shipped / "teach.yaml").read_text()
    assert_one_line_error(invoke("recipes", "copy", "stud", tmp_path / "mine" / "my.yaml"),
                          "already exists", "--force")
    result = invoke("recipes", "copy", "stud", tmp_path / "mine" / "my.yaml", "--force")
    assert result.exit_code == 0, result.output
    written, notes = shipped.copy_recipe("gone", tmp_path / "folder")
    assert written == [tmp_path / "folder" / "gone.yaml"]
    assert notes == [f"data.root '../nope' does not exist from {fake_shipped}: set it in the copy"]
    assert "root: ../nope" in written[0].read_text()


def test_every_shipped_recipe_loads_by_name():
    for recipe in shipped.shipped_recipes():
        assert shipped.resolve_recipe(recipe.name) == REPO / "recipes" / f"{recipe.name}.yaml"
        raw = yaml.safe_load(recipe.path.read_text())
        assert recipe.kind == ("distill" if "student" in raw else "train")


@pytest.mark.slow
def test_non_editable_install_runs_the_quickstart_by_name_outside_the_repository(tmp_path):
    site, work = tmp_path / "site", tmp_path / "work"
    work.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(REPO)], check=True, capture_output=True)
    shipped_copy = site / "kdlab" / "recipes"
    assert sorted(p.name for p in shipped_copy.glob("*.yaml")) == sorted(p.name for p in REPO.glob("recipes/*.yaml"))
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    kdlab = [sys.executable, "-c", "import sys; from kdlab.cli.main import app; sys.argv[0] = 'kdlab'; app()"]

    def run(*args):
        done = subprocess.run([*kdlab, *args], cwd=work, env=env, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    where = subprocess.run([sys.executable, "-c", "import kdlab; print(kdlab.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert Path(where.strip()).is_relative_to(site)
    assert f"shipped recipes in {shipped_copy}" in run("recipes")
    small = ["--threads", "1", "--set", "train.epochs=1", "--set", "train.max_batches_per_epoch=2",
             "--set", "eval.n=20", "--set", "data.subset=200", "--set", "data.val_size=20"]
    run("train", "quickstart_teacher", *small)
    (teacher,) = (work / "results" / "runs").glob("quickstart-teacher-*/best.pt")
    run("distill", "quickstart", "--set", "teacher.recipe=", "--set", f"teacher.checkpoint={teacher}", *small)
    with open(work / "results" / "runs.csv") as table:
        names = [row["name"] for row in csv.DictReader(table)]
    assert names == ["quickstart-teacher", "quickstart"]
    runs = sorted(p.parent.name.rsplit("-", 1)[0] for p in (work / "results" / "runs").glob("*/summary.json"))
    assert runs == ["quickstart", "quickstart-teacher"]
    run("recipes", "copy", "quickstart", "my.yaml")
    assert (work / "my.yaml").read_text() == (REPO / "recipes" / "quickstart.yaml").read_text()
    assert (work / "quickstart_teacher.yaml").is_file()
