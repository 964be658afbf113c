"""The CLI: helpful --help, one-line errors with exit code 2, no traceback, nothing lost."""

import pytest
import torch

from tests.helpers.ctrl_c import advised_args, epochs_shown
from tests.helpers.failfast import assert_one_line_error, invoke

COMMANDS = ["distill", "train", "eval", "ablate", "table", "inspect", "check", "schema", "recipes", "report", "verify"]


def test_help_lists_every_command_and_each_command_documents_its_options():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.output
    for command in COMMANDS:
        help_text = invoke(command, "--help")
        assert help_text.exit_code == 0, command
        assert len(help_text.output) > 200


def test_recipe_typo_gives_one_line_error(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {arch: resnet_small}\ntrain: {epochz: 3}\n")
    assert_one_line_error(invoke("train", recipe), "unknown key 'epochz' in train", "did you mean 'epochs'")


def test_wrong_type_in_set_override_gives_one_line_error(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {arch: resnet_small}\n")
    assert_one_line_error(invoke("train", recipe, "--set", "train.lr=fast"), "train.lr")


def test_missing_recipe_and_wrong_command(tmp_path):
    assert_one_line_error(invoke("distill", tmp_path / "none.yaml"), "not found")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {arch: resnet_small}\n")
    assert_one_line_error(invoke("distill", recipe), "kdlab train")


def test_unknown_architecture_suggests_the_closest(tmp_path):
    assert_one_line_error(invoke("inspect", "resnet_smal"), "resnet_small")


def test_corrupt_teacher_checkpoint_gives_one_line_error(tmp_path):
    checkpoint = tmp_path / "teacher.pt"
    checkpoint.write_bytes(b"not a checkpoint")
    recipe = tmp_path / "d.yaml"
    recipe.write_text(
        f"data: {{dataset: embedded, subset: 50, test_subset: 20, batch_size: 25}}\n"
        f"student: {{arch: resnet_small, width: 4}}\n"
        f"teacher: {{checkpoint: {checkpoint}}}\noutput: {{dir: {tmp_path}/runs, table: {tmp_path}/runs.csv}}\n"
    )
    assert_one_line_error(invoke("distill", recipe), "teacher.pt' is corrupt")


def test_teacher_with_wrong_class_count_gives_one_line_error(tmp_path):
    from kdlab.models.files import save_model
    from kdlab.models.registry import build_classifier

    checkpoint = tmp_path / "teacher100.pt"
    save_model(checkpoint, build_classifier("resnet_small", 100, width=4), task="classification",
               arch="resnet_small", options={"width": 4}, num_classes=100)
    recipe = tmp_path / "d.yaml"
    recipe.write_text(
        f"data: {{dataset: embedded, subset: 50, test_subset: 20, batch_size: 25}}\n"
        f"student: {{arch: resnet_small, width: 4}}\n"
        f"teacher: {{checkpoint: {checkpoint}}}\noutput: {{dir: {tmp_path}/runs, table: {tmp_path}/runs.csv}}\n"
    )
    assert_one_line_error(invoke("distill", recipe), "100 classes", "10")


@pytest.mark.parametrize("arch", ["resnet_small", "preact_resnet18", "wrn-16-4", "wrn-34-10"])
def test_inspect_every_model(arch):
    result = invoke("inspect", arch)
    assert result.exit_code == 0, result.output
    assert "stem" in result.output and "block" in result.output
    assert torch.__version__  # inspect builds on CPU without downloads


# ------------------------------------------------------------------------------------- Ctrl-C advice
CTRL_C_DATA = ("data: {dataset: embedded, subset: 50, test_subset: 20, batch_size: 25}\ntrain: {epochs: 3}\n"
               "eval: {attacks: [clean]}\n")


def test_an_interrupted_train_says_what_is_kept_and_the_advised_command_continues(tmp_path, monkeypatch):
    from tests.helpers.failfast import write_recipe

    recipe = write_recipe(tmp_path, "name: m\nmodel: {arch: resnet_small, width: 4}\n" + CTRL_C_DATA)
    epochs_shown(monkeypatch, stop=("m", 1))
    first = invoke("train", recipe)
    assert first.exit_code == 130, first.output
    assert "the model's epoch 1 of 3 is kept in" in first.output
    assert "rerun the same command with --resume to continue from epoch 2" in first.output, first.output
    shown = epochs_shown(monkeypatch)
    again = invoke(*advised_args(first.output, ["train", recipe]))
    assert again.exit_code == 0, again.output
    assert shown == [("m", 2), ("m", 3)]  # continued: epoch 1 was not trained again


def test_an_interrupted_distill_teacher_continues_on_a_plain_rerun(tmp_path, monkeypatch):
    from tests.helpers.failfast import write_recipe

    write_recipe(tmp_path, "name: t\nmodel: {arch: resnet_small, width: 4}\n" + CTRL_C_DATA, name="teacher.yaml")
    student = write_recipe(tmp_path, "name: s\nstudent: {arch: resnet_small, width: 4}\nteacher: {recipe: "
                                     "teacher.yaml}\n" + CTRL_C_DATA.replace("epochs: 3", "epochs: 2"))
    epochs_shown(monkeypatch, stop=("t", 2))
    first = invoke("distill", student)
    assert first.exit_code == 130, first.output
    advice = next(line for line in first.output.splitlines() if line.startswith("interrupted"))
    assert "the teacher's epochs 1-2 of 3 are kept in" in advice, advice
    assert advice.endswith("rerun the same command to continue from epoch 3") and "--resume" not in advice
    shown = epochs_shown(monkeypatch, stop=("s", 1))
    second = invoke(*advised_args(first.output, ["distill", student]))
    assert shown == [("t", 3), ("s", 1)]  # the teacher went on from epoch 3
    assert second.exit_code == 130
    assert "the student's epoch 1 of 2 is kept in" in second.output
    assert "rerun the same command with --resume to continue from epoch 2" in second.output
    shown = epochs_shown(monkeypatch)
    third = invoke(*advised_args(second.output, ["distill", student]))
    assert third.exit_code == 0, third.output
    assert shown == [("s", 2)]
