"""Discoverable recipes: `kdlab schema`, did-you-mean for every name, paths read from the recipe's folder."""

import shutil
from pathlib import Path

import pytest
import yaml

from kdlab.config.methods import SETTINGS
from kdlab.config.recipe import load_recipe, validate_recipe
from kdlab.errors import KdlabError
from tests.helpers.failfast import assert_one_line_error, files_under, invoke, write_recipe

REPO = Path(__file__).resolve().parents[2]


def leaf_keys(mapping: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            keys |= leaf_keys(value, f"{prefix}{key}.")
        elif value is not None or key not in ("model", "student", "teacher"):  # absent sections
            keys.add(f"{prefix}{key}")
    return keys


# ----------------------------------------------------------------------------------------------- schema
def test_schema_lists_every_key_a_recipe_has_with_defaults_and_choices():
    result = invoke("schema")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()[1:]
    listed = {line.split()[0] for line in lines}
    training = validate_recipe({"model": {"arch": "resnet_small"}}).model_dump()
    expected = leaf_keys(training)
    for method in SETTINGS:  # every method's own settings, as a recipe naming it has them
        task = "detection" if "classification" not in SETTINGS[method].tasks else "classification"
        distill = validate_recipe({"task": task, "student": {"arch": "a"}, "teacher": {"recipe": "t.yaml"},
                                   "method": {"name": method}}).model_dump()
        expected |= leaf_keys(distill)
    for kind in ("pkd", "cwd", "mgd", "fgd"):  # skd's per-kind sections exist (with defaults) when the kind is chosen
        expected |= leaf_keys(validate_recipe({"task": "detection", "student": {"arch": "a"}, "teacher": {
            "recipe": "t.yaml"}, "method": {"name": "skd", "feature": {"kind": kind}}}).model_dump())
    # null for the other kinds
    expected -= {"method.feature.pkd", "method.feature.cwd", "method.feature.mgd", "method.feature.fgd"}
    assert listed == expected
    by_key = {line.split()[0]: line for line in lines}
    assert "8/255" in by_key["train.adversarial.eps"] and "fraction" in by_key["train.adversarial.eps"]
    assert "cifar100" in by_key["data.dataset"] and "embedded" in by_key["data.dataset"]
    assert "128" in by_key["data.batch_size"] and "> 0" in by_key["data.batch_size"]
    assert "required" in by_key["model.arch"]


def test_schema_of_one_section_and_an_unknown_section():
    result = invoke("schema", "train.adversarial")
    assert result.exit_code == 0
    keys = [line.split()[0] for line in result.output.splitlines()[1:]]
    assert keys == ["train.adversarial.method", "train.adversarial.eps", "train.adversarial.alpha",
                    "train.adversarial.steps", "train.adversarial.trades_beta"]
    assert_one_line_error(invoke("schema", "trian"), "unknown recipe section 'trian'", "did you mean 'train'")


# ----------------------------------------------------------------------------------------------- names
def error_of(raw: dict) -> str:
    with pytest.raises(KdlabError) as error:
        validate_recipe(raw)
    return str(error.value)


def test_a_weak_guess_for_an_unknown_key_also_lists_the_valid_keys():
    message = error_of({"model": {"arch": "resnet_small"}, "data": {"name": "cifar10"}})
    assert "unknown key 'name' in data" in message and "valid keys:" in message and "dataset" in message
    strong = error_of({"model": {"arch": "resnet_small"}, "train": {"lrr": 0.1}})
    assert "did you mean 'lr'?" in strong and "valid keys" not in strong


@pytest.mark.parametrize("section, key, value, expected", [
    ("data", "dataset", "cifar-100", "did you mean 'cifar100'"),
    ("train", "schedule", "cosin", "did you mean 'cosine'"),
])
def test_unknown_values_get_a_did_you_mean(tmp_path, section, key, value, expected):
    recipe = write_recipe(tmp_path, f"model: {{arch: resnet_small}}\n{section}: {{{key}: {value}}}")
    assert_one_line_error(invoke("train", recipe), f"{section}.{key}", f"unknown value '{value}'", expected)
    assert files_under(tmp_path / "out") == []


def test_unknown_detector_architecture_gets_a_did_you_mean():
    from kdlab.models.detection import build_detector

    with pytest.raises(KdlabError, match="did you mean 'retinanet'"):
        build_detector("retinanett", num_classes=3, backbone="resnet18", min_size=64, max_size=64)
    with pytest.raises(KdlabError, match="did you mean 'resnet50'"):
        build_detector("fasterrcnn", num_classes=3, backbone="resnet5O", min_size=64, max_size=64)


def test_tabs_in_yaml_say_to_use_spaces(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model:\n\tarch: resnet_small\n")
    assert_one_line_error(invoke("train", recipe), "line 2", "tab", "spaces")


# ----------------------------------------------------------------------------------------------- paths
def make_pair(folder: Path, teacher_path: str = "teacher.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "teacher.yaml").write_text("model: {arch: resnet_small}\ndata: {dataset: embedded}\n")
    student = folder / "student.yaml"
    student.write_text(f"student: {{arch: resnet_small}}\nteacher: {{recipe: {teacher_path}}}\n"
                       "data: {dataset: imagefolder, root: images}\n")
    return student


def test_relative_paths_are_read_from_the_recipe_folder_not_the_current_directory(tmp_path, monkeypatch):
    student = make_pair(tmp_path / "a")
    elsewhere = tmp_path / "b"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    recipe = load_recipe(student)
    assert recipe.teacher.recipe == str(tmp_path / "a" / "teacher.yaml")
    assert recipe.data.root == str(tmp_path / "a" / "images")
    # --set paths are command-line paths: read from the current directory
    assert load_recipe(student, ["data.root=imgs"]).data.root == str(elsewhere / "imgs")


def test_a_missing_relative_teacher_recipe_names_the_key_and_the_folder(tmp_path, monkeypatch):
    student = make_pair(tmp_path / "a", teacher_path="teachr.yaml")
    monkeypatch.chdir(tmp_path)
    result = invoke("distill", student)
    assert_one_line_error(result, "teacher.recipe", "teachr.yaml' not found", str(tmp_path / "a"))
    assert [p.name for p in files_under(tmp_path)] == ["a", "student.yaml", "teacher.yaml"]


def test_the_run_key_does_not_depend_on_where_the_files_live(tmp_path):
    first = make_pair(tmp_path / "here")
    second = tmp_path / "there" / "deeper"
    shutil.copytree(tmp_path / "here", second)
    key_here, key_there = load_recipe(first).key("teacher-key"), load_recipe(second / "student.yaml").key("teacher-key")
    assert key_here == key_there
    assert load_recipe(first).key("another-teacher") != key_here
    assert load_recipe(first, ["data.root=other-images"]).key("teacher-key") != key_here


def test_committed_recipes_load_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for path in sorted((REPO / "recipes").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        recipe = load_recipe(path)
        if recipe.teacher is not None:
            assert Path(recipe.teacher.recipe).is_file(), path
        root = (raw.get("data") or {}).get("root")
        if root is not None and not Path(root).is_absolute():
            assert Path(recipe.data.root).resolve() == (path.parent / root).resolve(), path
    bccd = load_recipe(REPO / "recipes" / "skd_bccd_cpu_teacher.yaml")
    assert Path(bccd.data.root).is_absolute() and bccd.data.root.endswith("/shared/data/bccd")
