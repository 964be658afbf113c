"""A dirty tree's patch is stored content-addressed beside the results (results/diffs/<git_diff_sha256>.patch) by
runs and ablation rows, and restores the code that ran on a clean checkout of the row's commit."""

import hashlib
import subprocess

import pandas as pd
import pytest
import yaml

from kdlab.ablation.execute import run_ablation
from kdlab.ablation.grid import plan_ablation
from kdlab.errors import KdlabError
from kdlab.results import DIFF_LIMIT_BYTES, code_state, results_folder, store_diff


def _git(repo, *args):
    subprocess.run(["git", "-c", "user.email=a@b", "-c", "user.name=a", *args], cwd=repo, check=True,
                   capture_output=True)


@pytest.fixture()
def dirty_repo(tmp_path):
    """A git checkout of a tiny 'kdlab' with one tracked file changed and one untracked file added."""
    repo = tmp_path / "checkout"
    (repo / "kdlab").mkdir(parents=True)
    (repo / "kdlab" / "core.py").write_text("x = 1\n")
    (repo / "recipes").mkdir()
    (repo / "recipes" / "r.yaml").write_text("name: r\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "init")
    (repo / "kdlab" / "core.py").write_text("x = 2  # changed, not committed\n")
    (repo / "recipes" / "new.yaml").write_text("name: new\n")  # untracked source counts too
    return repo


def test_a_run_from_a_dirty_tree_stores_a_patch_that_restores_the_code(dirty_repo, tmp_path, monkeypatch):
    monkeypatch.setattr("kdlab.results.code_state", lambda: code_state(dirty_repo / "kdlab"))
    results = tmp_path / "results"
    recipe = tmp_path / "train.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "abl", "data": {"dataset": "embedded", "subset": 64, "test_subset": 20, "batch_size": 32},
        "model": {"arch": "resnet_small", "width": 4}, "train": {"epochs": 1}, "eval": {"n": 20, "steps": 1},
        "output": {"dir": str(tmp_path / "runs"), "table": str(results / "runs.csv")}}))
    plan = plan_ablation(str(recipe), components=False, blocks=None, cumulative=False, grid=["train.lr=0.1"],
                         seeds=[0], attacks=["pgd"], overrides=[], name=None)
    table = run_ablation(plan, results / "ablations", threads=1)

    run_row = pd.read_csv(results / "runs.csv", dtype={"git_diff_sha256": str}).iloc[0]  # digests: text
    ablation_row = pd.read_csv(table, dtype={"git_diff_sha256": str}).iloc[0]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=dirty_repo, capture_output=True, text=True,
                          check=True).stdout.strip()
    assert run_row["git_commit"] == ablation_row["git_commit"] == f"{head}-dirty"
    digest = run_row["git_diff_sha256"]
    assert ablation_row["git_diff_sha256"] == digest and len(digest) == 16
    patch = results / "diffs" / f"{digest}.patch"
    assert hashlib.sha256(patch.read_bytes()).hexdigest()[:16] == digest
    assert sorted(p.name for p in (results / "diffs").iterdir()) == [patch.name]  # no temporary left behind

    clean = tmp_path / "clean"
    subprocess.run(["git", "clone", "-q", str(dirty_repo), str(clean)], check=True)
    _git(clean, "checkout", "-q", head)
    _git(clean, "apply", str(patch))
    assert (clean / "kdlab" / "core.py").read_text() == "x = 2  # changed, not committed\n"
    assert (clean / "recipes" / "new.yaml").read_text() == "name: new\n"


def test_a_stored_patch_is_never_overwritten(tmp_path):
    first = store_diff("+a\n", tmp_path)
    assert first == tmp_path / "diffs" / (hashlib.sha256(b"+a\n").hexdigest()[:16] + ".patch")
    first.write_bytes(b"tampered")  # a second store of the same content leaves the file alone
    assert store_diff("+a\n", tmp_path) == first and first.read_bytes() == b"tampered"


def test_a_patch_over_the_limit_is_refused_naming_the_fix(tmp_path):
    with pytest.raises(KdlabError, match="commit your changes"):
        store_diff("+" + "x" * DIFF_LIMIT_BYTES + "\n", tmp_path)
    assert not (tmp_path / "diffs").exists() or not any((tmp_path / "diffs").iterdir())


def test_the_results_folder_of_a_table():
    assert results_folder("results/runs.csv").as_posix() == "results"
    assert results_folder("results/eval.csv").as_posix() == "results"
    assert results_folder("results/ablations/t.csv").as_posix() == "results"


def test_tables_read_digest_columns_as_text(tmp_path):
    """A plan fingerprint or digest that looks like a number (all digits, or digits e digits) stays the string
    kdlab wrote, so a study's rows still match its plan (pandas alone reads 1234e56789 as inf)."""
    from kdlab.results import read_table

    path = tmp_path / "t.csv"
    path.write_text("cell,seed,plan,study_sha256,teacher_sha256,pgd_acc\na,0,1234e56789,0123456789ab,7e12345678901234,"
                    "12.5\n")
    row = read_table(path).iloc[0]
    assert (row["plan"], row["study_sha256"], row["teacher_sha256"]) == ("1234e56789", "0123456789ab",
                                                                         "7e12345678901234")
    assert row["pgd_acc"] == 12.5 and row["seed"] == 0
