"""Results that stay put: no table overwritten by another ablation, rows that tell runs apart, one row per run."""

from pathlib import Path

import pandas as pd
import pytest
import yaml

import kdlab.ablate
from kdlab.ablate import grid_cells, plan_ablation, run_ablation

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def distill_recipe(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"name": "R", "student": {"arch": "resnet_small", "width": 4},
                                    "teacher": {"checkpoint": str(tmp_path / "t.pt")},
                                    "output": {"dir": str(tmp_path / "runs")}}))
    return path


def grid_plan(recipe, grid, overrides=()):
    return plan_ablation(str(recipe), components=False, blocks=None, cumulative=False, grid=list(grid), seeds=[0],
                         attacks=["pgd"], overrides=list(overrides), name=None)


@pytest.fixture()
def fake_cells(monkeypatch):
    """Cells 'run' instantly: the PGD accuracy of a cell is read off its overrides, so tables can be told apart."""
    def run_cell(recipe_yaml, threads):
        recipe = yaml.safe_load(recipe_yaml)
        method = recipe["method"]
        pgd = 10 * method.get("kd", {}).get("weight", 1.0) + method.get("acm", {}).get("weight", 10.0)
        return {"clean_acc": 50.0, "pgd_acc": pgd, "wall_seconds": 1.0, "run_dir": recipe["name"]}

    monkeypatch.setattr(kdlab.ablate, "_run_cell", run_cell)
    monkeypatch.setattr(kdlab.ablate, "_teacher_row", lambda *a, **k: None)


def test_two_grids_with_keys_ending_alike_keep_two_tables(distill_recipe, tmp_path, fake_cells):
    out = tmp_path / "tables"
    kd = run_ablation(grid_plan(distill_recipe, ["method.kd.weight=0.5,2"]), out)
    acm = run_ablation(grid_plan(distill_recipe, ["method.acm.weight=1,10"]), out)
    assert kd.name == "R-grid-method.kd.weight.csv" and acm.name == "R-grid-method.acm.weight.csv"
    assert pd.read_csv(kd)["setting"].tolist() == ["method.kd.weight=0.5", "method.kd.weight=2"]
    assert pd.read_csv(acm)["pgd_acc"].tolist() == [11.0, 20.0]  # kd 1 (default): 10 + acm weight
    assert pd.read_csv(kd)["pgd_acc"].tolist() == [15.0, 30.0]  # still the first grid's numbers
    assert {p.name for p in out.iterdir()} >= {"R-grid-method.kd.weight.md", "R-grid-method.acm.weight.md",
                                               "R-grid-method.kd.weight.png", "R-grid-method.acm.weight.png"}


def test_same_keys_other_values_or_overrides_get_a_new_version_not_an_overwrite(distill_recipe, tmp_path,
                                                                                 fake_cells):
    out = tmp_path / "tables"
    first = run_ablation(grid_plan(distill_recipe, ["method.kd.weight=0.5,2"]), out)
    again = run_ablation(grid_plan(distill_recipe, ["method.kd.weight=0.5,2"]), out)
    other = run_ablation(grid_plan(distill_recipe, ["method.kd.weight=4,8"]), out)
    with_set = run_ablation(grid_plan(distill_recipe, ["method.kd.weight=0.5,2"], ["method.acm.weight=0"]), out)
    assert again == first  # the same command continues (rewrites) its own table
    assert (other.name, with_set.name) == ("R-grid-method.kd.weight-v2.csv", "R-grid-method.kd.weight-v3.csv")
    assert pd.read_csv(first)["pgd_acc"].tolist() == [15.0, 30.0]
    assert pd.read_csv(other)["pgd_acc"].tolist() == [50.0, 90.0]
    assert pd.read_csv(with_set)["pgd_acc"].tolist() == [5.0, 20.0]


def test_cells_name_the_full_key_when_two_keys_share_a_last_segment():
    cells = grid_cells(["method.kd.weight=1", "method.acm.weight=2,3", "train.lr=0.1"])
    assert [c.label for c in cells] == ["method.kd.weight=1,method.acm.weight=2,lr=0.1",
                                        "method.kd.weight=1,method.acm.weight=3,lr=0.1"]


@pytest.mark.parametrize("recipe, grid, name, table", [
    ("recipes/skd_bccd_cpu.yaml", "method.feature.kind=none,l1,l2,ssim", None, "skd-bccd-cpu-grid-method.feature.kind"),
    ("recipes/skd_bccd_cpu.yaml", "method.feature.components=lcs,cs,s", None,
     "skd-bccd-cpu-grid-method.feature.components"),
    ("recipes/skd_quickstart.yaml", "method.feature.kind=none,l1,l2,ssim", None,
     "skd-quickstart-grid-method.feature.kind"),
    ("recipes/mixacm_cifar10_cpu.yaml", "method.acm.weight=1,10,100", "mixacm_cpu_tune",
     "mixacm_cpu_tune-grid-method.acm.weight"),
])
def test_committed_grid_tables_are_named_as_their_commands_write_them(recipe, grid, name, table):
    plan = plan_ablation(str(ROOT / recipe), components=False, blocks=None, cumulative=False, grid=[grid],
                         seeds=[0, 1, 2], attacks=["pgd"], overrides=[], name=name)
    path = plan.table_path(ROOT / "results" / "ablations")
    assert path.name == f"{table}.csv" and path.is_file()
    assert f"# {table}\n" in path.with_suffix(".md").read_text()
