"""The grid of an ablation (kdlab.ablation.grid): exact cell expansion, one-line errors up front, table names."""

import pytest
from typer.testing import CliRunner

from kdlab.ablation.grid import block_cells, grid_cells, parse_blocks, plan_ablation
from kdlab.cli.main import app
from kdlab.errors import KdlabError


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


def test_two_grids_over_one_recipe_write_two_tables(train_recipe, tmp_path):
    def grid_plan(grid):
        return plan_ablation(str(train_recipe), components=False, blocks=None, cumulative=False, grid=grid,
                             seeds=[0], attacks=["pgd"], overrides=[], name=None)

    lr, epochs = grid_plan(["train.lr=0.1,0.2"]), grid_plan(["train.epochs=1,2", "train.lr=0.1"])
    assert lr.table_path(tmp_path).name == "abl-grid-train.lr.csv"
    assert epochs.table_path(tmp_path).name == "abl-grid-train.epochs-train.lr.csv"
