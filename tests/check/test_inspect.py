"""kdlab inspect RECIPE: a distillation recipe shows student and teacher blocks side by side with the pairs."""

from typer.testing import CliRunner

from kdlab.cli.main import app
from kdlab.models.files import save_model
from kdlab.models.registry import build_classifier

runner = CliRunner()


def table_rows(output: str) -> dict[str, list[str]]:
    """Body rows of the printed table, keyed by their block index: the cells, stripped."""
    rows = {}
    for line in output.splitlines():
        if line.startswith("│"):
            cells = [cell.strip() for cell in line.strip("│").split("│")]
            rows[cells[0]] = cells
    return rows


def write_distill_recipe(tmp_path, acm: str):
    checkpoint = tmp_path / "teacher.pt"
    teacher = build_classifier("resnet_small", 10, width=8, stages=3)
    save_model(checkpoint, teacher, task="classification", arch="resnet_small",
               options={"width": 8, "stages": 3}, num_classes=10)
    recipe = tmp_path / "distill.yaml"
    recipe.write_text(
        "student: {arch: resnet_small, width: 4, stages: 4}\n"
        f"teacher: {{checkpoint: {checkpoint}}}\n"
        f"method: {{acm: {acm}}}\n"
    )
    return recipe


def test_distillation_recipe_shows_both_models_and_the_pairs(tmp_path):
    recipe = write_distill_recipe(tmp_path, "{blocks: [3, 4, 5], teacher_blocks: [2, 3, 4]}")
    result = runner.invoke(app, ["inspect", str(recipe)])
    assert result.exit_code == 0, result.output
    rows = table_rows(result.output)
    # block: student path, CxHxW, channels, paired teacher block, teacher path, CxHxW, channels
    # (hand values: student widths 4, 4, 8, 16, 32 with stride 2 from stage 2; teacher widths 8, 8, 16, 32)
    assert rows["1"] == ["1", "net.stem", "4×32×32", "4", "", "net.stem", "8×32×32", "8"]
    assert rows["2"] == ["2", "net.stage1", "4×32×32", "4", "", "net.stage1", "8×32×32", "8"]
    assert rows["3"] == ["3", "net.stage2", "8×16×16", "8", "2", "net.stage2", "16×16×16", "16"]
    assert rows["4"] == ["4", "net.stage3", "16×8×8", "16", "3", "net.stage3", "32×8×8", "32"]
    assert rows["5"] == ["5", "net.stage4", "32×4×4", "32", "4", "-", "-", "-"]
    assert "student" in result.output and "teacher" in result.output


def test_without_teacher_blocks_each_student_block_pairs_with_the_same_index(tmp_path):
    recipe = write_distill_recipe(tmp_path, "{blocks: [2, 4]}")
    rows = table_rows(runner.invoke(app, ["inspect", str(recipe)]).output)
    assert [rows[i][4] for i in "12345"] == ["", "2", "", "4", ""]


def test_a_teacher_block_the_teacher_lacks_is_one_line(tmp_path):
    recipe = write_distill_recipe(tmp_path, "{blocks: [3, 4, 5], teacher_blocks: [3, 4, 5]}")
    result = runner.invoke(app, ["inspect", str(recipe)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "unknown block 5" in result.output and result.output.strip().count("\n") == 0


def test_training_recipe_lists_its_one_model(tmp_path):
    recipe = tmp_path / "train.yaml"
    recipe.write_text("model: {arch: resnet_small, width: 4}\n")
    result = runner.invoke(app, ["inspect", str(recipe)])
    assert result.exit_code == 0, result.output
    rows = table_rows(result.output)
    assert rows["4"] == ["4", "net.stage3", "16×8×8", "16"] and "5" not in rows


def test_detection_recipe_lists_fpn_levels():
    # the level shapes are checked in tests/losses/test_detection_losses.py
    result = runner.invoke(app, ["inspect", "recipes/skd_quickstart.yaml"])
    assert result.exit_code == 0 and "FPN levels" in result.output
