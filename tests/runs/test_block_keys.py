"""Identical experiments share one run: block keys by index or by the module path they name: one run key."""

import pytest
import torch
import yaml

from kdlab.config.methods.mixacm import MixACMSettings
from kdlab.config.recipe import load_recipe
from kdlab.methods.mixacm import MixACM
from kdlab.models.registry import build_classifier
from kdlab.runs.run import canonical_blocks, run_directory


@pytest.fixture()
def recipe_file(tmp_path):
    def write(acm):
        path = tmp_path / "d.yaml"
        (tmp_path / "t.pt").touch()  # load_recipe checks that the teacher file exists; the key never reads it
        path.write_text(yaml.safe_dump({
            "name": "d", "student": {"arch": "resnet_small", "width": 4},
            "teacher": {"checkpoint": str(tmp_path / "t.pt")}, "method": {"acm": acm},
            "output": {"dir": str(tmp_path / "runs")}}))
        return load_recipe(path)
    return write


def key_of(recipe, teacher):
    return run_directory(canonical_blocks(recipe, 10, teacher), "teacher-id").name


def test_index_and_module_path_block_keys_give_one_run_key(recipe_file):
    teacher = build_classifier("resnet_small", 10, width=8)  # blocks 1 net.stem, 2 net.stage1, 3 net.stage2
    by_index = recipe_file({"blocks": [3, 4]})
    by_path = recipe_file({"blocks": ["net.stage2", "net.stage3"]})
    mixed = recipe_file({"blocks": [3, "net.stage3"], "teacher_blocks": ["net.stage2", 4]})
    assert by_index.key() != by_path.key()  # the torch-free hash alone cannot know what a path names...
    assert key_of(by_index, teacher) == key_of(by_path, teacher) == key_of(mixed, teacher)  # ...the run can
    assert key_of(recipe_file({"blocks": [2, 4]}), teacher) != key_of(by_index, teacher)
    # the canonical recipe taps the same blocks, by index
    assert canonical_blocks(by_path, 10, teacher).method.acm.blocks == [3, 4]


def test_a_path_that_names_no_block_stays_a_path_and_pairs_keep_their_teacher_side(recipe_file):
    teacher = build_classifier("resnet_small", 10, width=8, stages=4)  # one stage more: net.stage4 is block 5
    recipe = recipe_file({"blocks": ["net.stage2.0", "net.stage3"],
                          "teacher_blocks": ["net.stage2.0", "net.stage4"]})
    acm = canonical_blocks(recipe, 10, teacher).method.acm
    assert acm.blocks == ["net.stage2.0", 4] and acm.teacher_blocks == ["net.stage2.0", 5]


def test_acm_loss_terms_are_named_by_block_index_when_a_path_names_a_block():
    torch.manual_seed(0)
    student = build_classifier("resnet_small", 10, width=4)
    teacher = build_classifier("resnet_small", 10, width=8)
    settings = MixACMSettings.model_validate({"acm": {"blocks": ["net.stage2", 4]},
                                              "mixup": {"enabled": False}})
    method = MixACM(student, teacher, settings)
    batch = (torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
    terms = method.training_step(batch, torch.Generator().manual_seed(0)).terms
    assert {"acm3", "acm4"} <= set(terms)
