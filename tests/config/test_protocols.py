"""The field's training protocol by default: model selection, optimizer, run keys, provenance, block weights."""

import hashlib
import subprocess

import pytest
import torch
from torch import nn

from kdlab.ablation.grid import acm_total_weight, block_cells, plan_ablation
from kdlab.config import recipe as recipe_module
from kdlab.config.recipe import apply_overrides, validate_recipe
from kdlab.config.sections import TrainSpec
from kdlab.errors import KdlabError
from kdlab.report.stats import paired_difference, t_quantile_975
from kdlab.results import code_state, provenance
from kdlab.train.engine import build_optimizer

TRAIN = {"model": {"arch": "resnet_small", "width": 4}, "data": {"val_size": 50}}
DISTILL = {"student": {"arch": "resnet_small", "width": 4}, "teacher": {"checkpoint": "t.pt"},
           "data": {"val_size": 50}}


# --------------------------------------------------------------------------- model selection
def test_selection_on_a_metric_needs_a_validation_split():
    with pytest.raises(KdlabError, match="train.select: pgd chooses the epoch on a validation split: set data.val_size"):
        validate_recipe({"model": {"arch": "resnet_small"}, "train": {"select": "pgd"}})
    with pytest.raises(KdlabError, match="train.select: pgd is for classification"):
        validate_recipe({**TRAIN, "task": "detection", "model": {"arch": "fasterrcnn"}, "train": {"select": "pgd"}})


# --------------------------------------------------------------------------- optimizer
def _one_step(spec: TrainSpec) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    with torch.no_grad():
        model[1].bias.fill_(0.5)
    optimizer = build_optimizer(model, spec)
    model[0].weight.grad = torch.zeros_like(model[0].weight)
    for parameter in [model[0].bias, model[1].weight, model[1].bias]:
        parameter.grad = torch.zeros_like(parameter)
    before = model[0].weight.detach().clone()
    optimizer.step()
    return before, model[0].weight.detach(), model[1].bias.detach()


def test_weight_decay_reaches_every_parameter_by_default():
    # SGD with zero gradient and weight decay wd: p <- p - lr * wd * p on the first step (momentum buffer = wd * p)
    spec = TrainSpec(lr=0.1, weight_decay=0.01)
    before, weight, bias = _one_step(spec)
    assert torch.allclose(weight, before * (1 - 0.1 * 0.01))
    assert torch.allclose(bias, torch.full_like(bias, 0.5 * (1 - 0.1 * 0.01)))
    # the old habit is an option: biases and norm parameters exempt
    _, weight, bias = _one_step(TrainSpec(lr=0.1, weight_decay=0.01, decay_scope="weights"))
    assert torch.allclose(bias, torch.full_like(bias, 0.5))
    assert torch.allclose(weight, before * (1 - 0.1 * 0.01))


def test_plain_momentum_by_default():
    # Two steps with constant gradient g = 1, lr 1, momentum 0.5, no decay: plain momentum moves p by
    # 1 + (0.5 + 1) = 2.5; Nesterov would move it by (1 + 0.5) + (1 + 0.5 * 1.5) = 3.25.
    def moved(spec):
        parameter = nn.Parameter(torch.zeros(1))
        holder = nn.Module()
        holder.p = parameter
        optimizer = build_optimizer(holder, spec)
        for _ in range(2):
            parameter.grad = torch.ones(1)
            optimizer.step()
        return -float(parameter.detach())

    assert moved(TrainSpec(lr=1.0, momentum=0.5, weight_decay=0.0)) == pytest.approx(2.5)
    assert moved(TrainSpec(lr=1.0, momentum=0.5, weight_decay=0.0, nesterov=True)) == pytest.approx(3.25)


# --------------------------------------------------------------------------- run keys
def test_changing_a_default_changes_the_key(monkeypatch):
    raw = {"model": {"arch": "resnet_small"}, "train": {"epochs": 5}}
    before = validate_recipe(raw).key()
    assert validate_recipe({**raw, "train": {"epochs": 5, "lr": 0.1}}).key() == before  # a default written out: same run
    field = recipe_module.TrainSpec.model_fields["lr"]
    monkeypatch.setattr(field, "default", 0.05)
    for model in (recipe_module.TrainSpec, recipe_module.Recipe):
        model.model_rebuild(force=True)
    try:
        changed = validate_recipe(raw)
        assert changed.train.lr == 0.05 and changed.key() != before
    finally:
        monkeypatch.undo()
        for model in (recipe_module.TrainSpec, recipe_module.Recipe):
            model.model_rebuild(force=True)
    assert validate_recipe(raw).key() == before


def test_the_schema_version_is_part_of_the_key(monkeypatch):
    recipe = validate_recipe({"model": {"arch": "resnet_small"}})
    before = recipe.key()
    monkeypatch.setattr(recipe_module, "SCHEMA_VERSION", recipe_module.SCHEMA_VERSION + 1)
    assert recipe.key() != before


# --------------------------------------------------------------------------- provenance
def _git(repo, *args):
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


@pytest.fixture()
def repo(tmp_path):
    (tmp_path / "kdlab").mkdir()
    (tmp_path / "kdlab" / "core.py").write_text("x = 1\n")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "runs.csv").write_text("a\n1\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "-c", "user.email=a@b", "-c", "user.name=a", "add", ".")
    _git(tmp_path, "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "init")
    return tmp_path


def test_result_files_do_not_make_the_code_dirty(repo):
    (repo / "results" / "runs.csv").write_text("a\n1\n2\n")
    commit, diff = code_state(repo / "kdlab")
    assert len(commit) == 40 and diff == ""


def test_a_dirty_tree_records_the_diff_that_restores_the_code(repo, tmp_path_factory):
    (repo / "kdlab" / "core.py").write_text("x = 2\n")
    (repo / "kdlab" / "new.py").write_text("y = 3\n")  # untracked code counts too
    _, diff = code_state(repo / "kdlab")
    assert "+x = 2" in diff and "+y = 3" in diff
    # the saved patch applied to a clean checkout of the commit gives back the code that ran
    clone = tmp_path_factory.mktemp("clone")
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    (clone / "patch.diff").write_text(diff)
    _git(clone, "apply", "patch.diff")
    assert (clone / "kdlab" / "core.py").read_text() == "x = 2\n"
    assert (clone / "kdlab" / "new.py").read_text() == "y = 3\n"


def test_provenance_hashes_and_saves_the_diff(monkeypatch, tmp_path):
    monkeypatch.setattr("kdlab.results.code_state", lambda: ("abc", "--- a\n+++ b\n+x\n"))
    info = provenance(diff_to=tmp_path / "code.diff")
    assert info["git_commit"] == "abc-dirty"
    assert info["git_diff_sha256"] == hashlib.sha256(b"--- a\n+++ b\n+x\n").hexdigest()[:16]
    assert (tmp_path / "code.diff").read_text() == "--- a\n+++ b\n+x\n"
    monkeypatch.setattr("kdlab.results.code_state", lambda: ("abc", ""))
    assert provenance(diff_to=tmp_path / "none.diff")["git_commit"] == "abc"
    assert not (tmp_path / "none.diff").exists()


# --------------------------------------------------------------------------- block ablation weights
def test_block_cells_share_the_total_acm_weight():
    cells = {cell.label: cell for cell in block_cells([2, 3, 4], cumulative=False, total=30.0, weight=10.0)}
    base = validate_recipe(DISTILL | {"method": {"acm": {"weight": 10.0}}})
    totals = {}
    for label, cell in cells.items():
        recipe = validate_recipe(apply_overrides(base.to_dict(), list(cell.overrides)))
        totals[label] = acm_total_weight(recipe)
    assert totals == pytest.approx({"block2": 30.0, "block3": 30.0, "block4": 30.0, "block2+3+4": 30.0})
    # the all-blocks cell is the base recipe itself (weights of one left unset), so it shares its run
    assert "method.acm.block_weights=null" in cells["block2+3+4"].overrides
    assert "method.acm.block_weights=[3.0]" in cells["block2"].overrides
    per_block = block_cells([2, 3, 4], cumulative=False)
    assert all("method.acm.block_weights=null" in cell.overrides for cell in per_block)


def test_block_ablation_table_names_the_weighting(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("student: {arch: resnet_small, width: 4}\nteacher: {checkpoint: t.pt}\n"
                      "method: {acm: {weight: 10}}\n")
    kwargs = {"components": False, "blocks": "2,3", "cumulative": False, "grid": [], "seeds": [0], "attacks": ["pgd"],
                  "overrides": [], "name": None}
    equal = plan_ablation(str(recipe), **kwargs)
    old = plan_ablation(str(recipe), **kwargs, per_block_weight=True)
    assert equal.title == "r-blocks" and old.title == "r-blocks-per-block-weight"
    # the recipe distils blocks 2, 3, 4 at weight 10: every cell keeps its total of 30
    assert acm_total_weight(equal.recipe_for(equal.cells[0], 0)) == pytest.approx(30.0)
    assert acm_total_weight(equal.recipe_for(equal.cells[-1], 0)) == pytest.approx(30.0)
    assert acm_total_weight(old.recipe_for(old.cells[0], 0)) == pytest.approx(10.0)
    with pytest.raises(KdlabError, match="method.acm.weight is 0"):
        plan_ablation(str(recipe), **{**kwargs, "overrides": ["method.acm.weight=0"]})


# --------------------------------------------------------------------------- paired intervals
def test_t_quantiles_match_published_values():
    # Student-t two-sided 95 % quantiles from standard tables (exact to 3 decimals)
    assert t_quantile_975(1) == pytest.approx(12.706, abs=1e-3)
    assert t_quantile_975(4) == pytest.approx(2.776, abs=1e-3)
    assert t_quantile_975(40) == pytest.approx(2.021, abs=1e-3)
    assert t_quantile_975(120) == pytest.approx(1.980, abs=1e-3)


def test_paired_interval_separates_only_a_consistent_difference():
    consistent = paired_difference([2.0, 2.5, 3.0])  # mean 2.5, sd 0.5: 2.5 ± 4.303 · 0.5 / √3 = ± 1.242
    assert (consistent.low, consistent.high) == pytest.approx((1.258, 3.742), abs=1e-3)
    assert consistent.separated and "not separated" not in consistent.render()
    noisy = paired_difference([3.0, -1.0, 2.0])
    assert not noisy.separated and noisy.render().endswith("not separated")


def test_options_a_run_does_not_use_are_refused_and_the_ones_it_uses_enter_its_key():
    classification = validate_recipe(DISTILL)
    # another method's settings used to be accepted and ignored; a method section holds only its own now
    with pytest.raises(KdlabError, match="'feature' is a setting of skd, not of mixacm"):
        validate_recipe({**DISTILL, "method": {"feature": {"kind": "l1"}}})
    assert validate_recipe({**DISTILL, "method": {"kd": {"weight": 2.0}}}).key() != classification.key()


def test_block_cells_keep_the_recipes_teacher_pairing(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("student: {arch: resnet_small, width: 4, stages: 4}\nteacher: {checkpoint: t.pt}\n"
                      "method: {acm: {weight: 10, blocks: [3, 4, 5], teacher_blocks: [2, 3, 4]}}\n")
    kwargs = {"components": False, "cumulative": False, "grid": [], "seeds": [0], "attacks": ["pgd"], "overrides": [], "name": None}
    plan = plan_ablation(str(recipe), blocks="3,5", **kwargs)
    pairs = {cell.label: plan.recipe_for(cell, 0).method.acm.block_pairs for cell in plan.cells}
    assert pairs == {"block3": [(3, 2)], "block5": [(5, 4)], "block3+5": [(3, 2), (5, 4)]}
    with pytest.raises(KdlabError, match="student block 2 has no teacher block"):
        plan_ablation(str(recipe), blocks="2,3", **kwargs)
