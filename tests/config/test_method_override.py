"""``--set method.name=X`` on a recipe of another method, and recipe errors listed in full."""

from pathlib import Path

import pytest

from kdlab.config.recipe import apply_overrides, read_recipe_file, validate_recipe
from kdlab.errors import KdlabError
from tests.helpers.failfast import invoke, write_recipe

QUICKSTART = Path(__file__).resolve().parents[2] / "recipes" / "quickstart.yaml"  # method: mixacm


def test_a_new_method_name_drops_the_old_methods_settings_and_says_which():
    raw = read_recipe_file(QUICKSTART)
    assert {"mixup", "kd", "acm"} <= set(raw["method"])
    notes: list[str] = []
    recipe = validate_recipe(apply_overrides(raw, ["method.name=kd", "method.temperature=2"], notes))
    assert notes == ["method.name=kd: dropped method.mixup, method.kd, method.acm (mixacm settings kd does not take)"]
    assert recipe.method.name == "kd" and recipe.method.temperature == 2
    assert raw["method"]["name"] == "mixacm" and "mixup" in raw["method"]  # the file's mapping is left as it was


def test_a_setting_given_explicitly_for_the_new_method_is_kept_and_checked():
    raw = read_recipe_file(QUICKSTART)
    notes: list[str] = []
    updated = apply_overrides(raw, ["method.name=kd", "method.mixup.alpha=1"], notes)
    assert "mixup" in updated["method"] and notes == [
        "method.name=kd: dropped method.kd, method.acm (mixacm settings kd does not take)"]
    with pytest.raises(KdlabError, match="'mixup' is a setting of mixacm, not of kd"):
        validate_recipe(updated)


def test_the_same_method_name_drops_nothing():
    raw = read_recipe_file(QUICKSTART)
    notes: list[str] = []
    assert apply_overrides(raw, ["method.name=mixacm"], notes)["method"] == raw["method"] and notes == []


def test_recipe_validation_lists_every_problem():
    raw = {"model": {"arch": "resnet_small"}, "train": {"epochz": 3, "lr": "fast"}, "eval": {"nn": 5}}
    with pytest.raises(KdlabError) as caught:
        validate_recipe(raw, source="r.yaml")
    lines = str(caught.value).splitlines()
    assert len(lines) == 3, lines
    assert "more problem" not in str(caught.value)
    assert any("'epochz'" in line for line in lines) and any("train.lr" in line for line in lines)
    assert any("'nn'" in line for line in lines) and all(line.startswith("r.yaml: ") for line in lines)


def test_the_check_prints_the_dropped_settings_and_passes(tmp_path):
    data = "data: {dataset: embedded, subset: 50, test_subset: 20, batch_size: 25}\ntrain: {epochs: 1}\n"
    write_recipe(tmp_path, "model: {arch: resnet_small, width: 4}\n" + data, name="teacher.yaml")
    student = write_recipe(tmp_path, "student: {arch: resnet_small, width: 4}\nteacher: {recipe: teacher.yaml}\n"
                           "method: {name: mixacm, mixup: {alpha: 1.0}}\n" + data, name="student.yaml")
    result = invoke("check", student, "--set", "method.name=kd", "--no-timing")
    assert result.exit_code == 0, result.output
    assert "method.name=kd: dropped method.mixup (mixacm settings kd does not take)" in result.output
