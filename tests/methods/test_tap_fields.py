"""A tap field is declared by its type, not by its name: a toy method whose taps are called ``layers`` gets the
same run key for block indices and the module paths they name, and the plan check refuses a key no model has."""

from typing import Annotated, Literal

import pytest
import torch
import torch.nn.functional as F
import yaml
from pydantic import Field

from kdlab.check.models import block_key_problems
from kdlab.config.methods.base import MethodSettings
from kdlab.config.recipe import load_recipe
from kdlab.config.schema import BlockKey, TapField, Taps, tap_fields
from kdlab.methods.base import DistillationMethod
from kdlab.methods.registry import register_method, unregister_method
from kdlab.models.files import save_model
from kdlab.models.registry import build_classifier
from kdlab.models.taps import FeatureTaps
from kdlab.runs.run import canonical_blocks, run_directory
from kdlab.train.engine import StepResult
from tests.helpers.failfast import assert_one_line_error, files_under, invoke


class LayersSettings(MethodSettings):
    name: Literal["layers-toy"] = "layers-toy"
    weight: float = Field(1.0, ge=0)
    layers: Annotated[list[BlockKey], Taps(teacher="teacher_layers")] = Field(default_factory=lambda: [3, 4])
    teacher_layers: list[BlockKey] | None = None


class LayersMethod(DistillationMethod):
    """CE + weight * squared difference of the channel-mean maps of each tapped pair of blocks."""

    settings_class = LayersSettings

    def forward(self, batch, generator):
        images, labels = batch
        settings: LayersSettings = self.settings  # type: ignore[assignment]
        teacher_layers = settings.layers if settings.teacher_layers is None else settings.teacher_layers
        _, teacher_taps = self.teacher_outputs(images, teacher_layers)
        with FeatureTaps(self.student, settings.layers) as student_taps:
            logits = self.student(images)
        match = sum((student_taps[s].mean(1) - teacher_taps[t].mean(1)).pow(2).mean()
                    for s, t in zip(settings.layers, teacher_layers))
        terms = {"ce": F.cross_entropy(logits, labels), "match": settings.weight * match}
        return StepResult(loss=sum(terms.values()), terms=terms, correct=0, count=len(labels))


@pytest.fixture
def layers_toy():
    register_method(LayersMethod)
    yield
    unregister_method("layers-toy")


def write(tmp_path, method: dict, student_stages: int = 3):
    """A recipe distilling a 3-stage width-8 teacher checkpoint into a width-4 student (blocks 1 net.stem,
    2 net.stage1, 3 net.stage2, 4 net.stage3, 5 net.stage4 with 4 stages)."""
    teacher = build_classifier("resnet_small", 10, width=8, stages=3)
    save_model(tmp_path / "teacher.pt", teacher, task="classification", arch="resnet_small",
               options={"width": 8, "stages": 3}, num_classes=10)
    path = tmp_path / "layers.yaml"
    path.write_text(yaml.safe_dump({
        "name": "layers", "device": "cpu",
        "data": {"dataset": "embedded", "subset": 100, "test_subset": 20, "batch_size": 50},
        "student": {"arch": "resnet_small", "width": 4, "stages": student_stages},
        "teacher": {"checkpoint": str(tmp_path / "teacher.pt")},
        "method": {"name": "layers-toy", **method},
        "train": {"epochs": 1}, "eval": {"n": 20},
        "output": {"dir": str(tmp_path / "out" / "runs"), "table": str(tmp_path / "out" / "runs.csv")},
    }))
    return path


def test_the_declaration_names_the_fields(layers_toy):
    assert tap_fields(LayersSettings) == [TapField((), "layers", "teacher_layers")]


def test_index_and_module_path_spellings_of_a_tap_field_named_layers_give_one_run_key(layers_toy, tmp_path):
    teacher = build_classifier("resnet_small", 10, width=8, stages=3)

    def key(method: dict) -> str:
        recipe = load_recipe(write(tmp_path, method))
        return run_directory(canonical_blocks(recipe, 10, teacher), "teacher-id").name

    by_index = key({"layers": [3, 4]})
    assert key({"layers": ["net.stage2", "net.stage3"]}) == by_index
    assert key({"layers": [3, "net.stage3"], "teacher_layers": ["net.stage2", 4]}) == by_index
    assert key({"layers": [2, 4]}) != by_index
    canonical = canonical_blocks(load_recipe(write(tmp_path, {"layers": ["net.stage2", "net.stage3"]})), 10, teacher)
    assert canonical.method.layers == [3, 4] and canonical.method.teacher_layers is None


def test_a_bad_key_in_a_tap_field_named_layers_is_refused_by_the_plan_check(layers_toy, tmp_path):
    # the 4-stage student has block 5, the 3-stage teacher (blocks 1-4) has not
    recipe = write(tmp_path, {"layers": [2, 5]}, student_stages=4)
    assert_one_line_error(invoke("distill", recipe), "method.layers (for the teacher)", "5",
                          "is not a block of the teacher", "method.teacher_layers")
    assert files_under(tmp_path / "out") == []


def test_the_plan_check_passes_good_keys_and_the_step_taps_them(layers_toy, tmp_path):
    recipe = load_recipe(write(tmp_path, {"layers": ["net.stage2", 4]}))
    student = build_classifier("resnet_small", 10, width=4)
    teacher = build_classifier("resnet_small", 10, width=8)

    assert block_key_problems(recipe, student, teacher) == []
    method = LayersMethod(student, teacher, recipe.method)
    result = method((torch.rand(2, 3, 32, 32), torch.tensor([0, 1])), torch.Generator().manual_seed(0))
    assert torch.isfinite(result.terms["match"])


def test_a_declaration_naming_a_missing_teacher_field_is_refused_at_registration():
    class Broken(MethodSettings):
        name: Literal["broken"] = "broken"
        layers: Annotated[list[BlockKey], Taps(teacher="teacher_layer")] = Field(default_factory=lambda: [3])

    class BrokenMethod(DistillationMethod):
        settings_class = Broken

    with pytest.raises(TypeError, match="teacher_layer"):
        register_method(BrokenMethod)
    unregister_method("broken")


def test_kdlab_inspect_pairs_the_blocks_of_a_tap_field_named_layers(layers_toy, tmp_path):
    result = invoke("inspect", write(tmp_path, {"layers": ["net.stage2", 4], "teacher_layers": [2, 3]}))
    assert result.exit_code == 0, result.output
    assert "LAYERS-TOY pairs (student → teacher): 3 → 2, 4 → 3" in " ".join(result.output.split())
