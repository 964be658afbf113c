"""Recipe schema: typed validation, friendly one-line errors, overrides checked like the file."""

import pytest

from kdlab.config.recipe import apply_overrides, load_recipe, validate_recipe
from kdlab.errors import KdlabError

BASE = {"model": {"arch": "resnet_small"}}


def error_of(raw) -> str:
    with pytest.raises(KdlabError) as caught:
        validate_recipe(raw, "r.yaml")
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_defaults_fill_a_minimal_recipe():
    recipe = validate_recipe(BASE)
    assert recipe.train.epochs == 30 and recipe.eval.attacks == ["clean", "pgd"]
    assert recipe.method.acm.blocks == [2, 3, 4] and not recipe.is_distillation


def test_unknown_key_names_key_section_and_closest_valid_key():
    message = error_of({**BASE, "train": {"lrr": 0.1}})
    assert "unknown key 'lrr' in train" in message and "did you mean 'lr'" in message
    assert "'blocks'" in error_of({**BASE, "method": {"acm": {"blcks": [2]}}})


def test_wrong_type_and_value_name_the_path_and_what_is_allowed():
    assert "train.epochs" in error_of({**BASE, "train": {"epochs": "many"}})
    message = error_of({**BASE, "train": {"schedule": "cos"}})
    assert "train.schedule" in message and "'cosine'" in message and "'cos'" in message
    assert "train.lr" in error_of({**BASE, "train": {"lr": -1}})


def test_fractions_are_accepted_for_eps():
    recipe = validate_recipe({**BASE, "train": {"adversarial": {"method": "pgd", "eps": "8/255"}}})
    assert recipe.train.adversarial.eps == pytest.approx(8 / 255)
    assert "eps" in error_of({**BASE, "eval": {"eps": "8/x"}})


def test_recipe_kind_rules():
    assert "teacher" in error_of({"student": {"arch": "resnet_small"}})
    assert "exactly one" in error_of({"student": {"arch": "a"}, "teacher": {"checkpoint": "a", "recipe": "b"}})
    assert "either model" in error_of({"data": {}})


def test_reading_images_on_use_is_offered_only_for_image_files():
    assert "dataset 'embedded' is always held in memory" in error_of({**BASE, "data": {"in_memory": False}})
    lazy = validate_recipe({**BASE, "task": "detection", "data": {"dataset": "coco", "in_memory": False}})
    assert not lazy.data.in_memory
    eager = validate_recipe({**BASE, "task": "detection", "data": {"dataset": "coco"}})
    assert lazy.key() == eager.key()  # the same numbers: the same run


def test_overrides_are_type_checked_like_the_file():
    raw = apply_overrides(BASE, ["train.epochs=5", "method.acm.blocks=[2,3]", "train.adversarial.eps=4/255"])
    recipe = validate_recipe(raw)
    assert recipe.train.epochs == 5 and recipe.method.acm.blocks == [2, 3]
    assert recipe.train.adversarial.eps == pytest.approx(4 / 255)
    assert "train.epochs" in error_of(apply_overrides(BASE, ["train.epochs=abc"]))
    assert "did you mean 'epochs'" in error_of(apply_overrides(BASE, ["train.epoch=3"]))
    with pytest.raises(KdlabError, match="KEY=VALUE"):
        apply_overrides(BASE, ["train.epochs"])


def test_key_ignores_name_and_output_but_not_settings():
    a = validate_recipe({**BASE, "name": "a"})
    b = validate_recipe({**BASE, "name": "b", "output": {"dir": "elsewhere"}})
    c = validate_recipe({**BASE, "train": {"epochs": 3}})
    assert a.key() == b.key() != c.key()
    explicit_default = validate_recipe({**BASE, "name": "a", "train": {"epochs": 30}, "device": "cpu"})
    assert explicit_default.key() == a.key()  # defaults never enter the hash: new options keep old caches
    assert a.key("teacher-1") != a.key("teacher-2")


def test_load_recipe_reports_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(KdlabError, match="not found"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(KdlabError, match="not valid YAML"):
        load_recipe(bad)
    good = tmp_path / "good.yaml"
    good.write_text("model: {arch: resnet_small}\n")
    assert load_recipe(good, ["seed=3"]).name == "good"


def test_every_shipped_recipe_validates():
    from pathlib import Path

    recipes = sorted(Path(__file__).resolve().parents[2].joinpath("recipes").glob("*.yaml"))
    assert recipes
    for path in recipes:
        load_recipe(path)


@pytest.mark.parametrize("method", ["kd", "ard", "rrm"])
def test_a_resolved_distill_recipe_of_any_method_reloads_from_its_yaml(method, tmp_path):
    # Ablation workers and run directories reload recipe.to_yaml(), which writes every key, `model: null` included:
    # a non-default method must not read that null as "a training recipe".
    import yaml

    teacher = tmp_path / "teacher.yaml"
    teacher.write_text("model: {arch: resnet_small}\ndata: {dataset: embedded}\n")
    recipe = validate_recipe({"student": {"arch": "resnet_small"}, "teacher": {"recipe": str(teacher)},
                              "data": {"dataset": "embedded"}, "method": {"name": method}})
    dumped = yaml.safe_load(recipe.to_yaml())
    assert dumped["model"] is None
    assert validate_recipe(dumped).method.name == method
